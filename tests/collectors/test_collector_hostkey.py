"""The agent's host key (collectors/hostkey.py): created 0600 at first start, never overwritten, the same after
a restart (so a re-sent spool record carries the same signature), refused with what to do when damaged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from collectors.hostkey import load_or_create, main
from collectors.publisher import Publisher
from contract.settings import KafkaSettings
from contract.signing import Status, verify


def test_the_key_is_created_private_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "host.key"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    content = path.read_bytes()
    again = load_or_create(path)  # a restart
    assert again.public == first.public and path.read_bytes() == content
    assert again.headers(b"h", b"[]") == first.headers(b"h", b"[]")  # a re-sent record is identical
    assert verify(first.headers(b"h", b"[1]"), b"h", b"[1]").status is Status.SIGNED
    assert [p.name for p in path.parent.iterdir()] == ["host.key"]  # no temp file left


def test_an_existing_key_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "host.key"
    winner = load_or_create(tmp_path / "other.key")
    real_link = os.link

    def race(src: str, dst: str) -> None:  # another agent finishes its key between our check and our link
        os.replace(tmp_path / "other.key", dst)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", race)
    got = load_or_create(path)
    assert got.public == winner.public


def test_a_damaged_or_planted_key_stops_the_agent_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "host.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    with pytest.raises(RuntimeError, match=r"damaged.*re-pin"):
        load_or_create(path)
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="cannot read the host key"):
        load_or_create(link)
    assert not (tmp_path / "elsewhere").exists()  # nothing written through the link


def test_the_fingerprint_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SHA256:") and out.strip().endswith(str(tmp_path / "host.key"))
    assert out.split()[0] == load_or_create(tmp_path / "host.key").fingerprint


def test_a_publisher_signs_by_its_signer_or_not_at_all() -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1")
    with pytest.raises(TypeError):
        Publisher(kafka)  # type: ignore[call-arg]  # every publisher says how it signs: no derivable default
    assert Publisher(kafka, signer=None).signer is None
