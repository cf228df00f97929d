"""authorized_keys are reported key by key (type, fingerprint as ssh-keygen -l prints it, a short printable
comment), never with the file's contents; every line is hostile input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.probes import ConfigProbe
from contract import ssh_keys
from contract.events import Kind


def _openssh(private: object) -> str:
    return private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()  # type: ignore[attr-defined]


KEYS = [_openssh(ed25519.Ed25519PrivateKey.generate()), _openssh(rsa.generate_private_key(65537, 2048)),
        _openssh(ec.generate_private_key(ec.SECP256R1()))]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_fingerprints_are_those_ssh_keygen_prints(tmp_path: Path) -> None:
    for i, key in enumerate(KEYS):
        path = tmp_path / f"k{i}.pub"
        path.write_text(f"{key} someone@somewhere\n")
        printed = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
        parsed = ssh_keys.parse_line(path.read_text())
        assert parsed is not None and parsed.fingerprint == printed and parsed.comment == "someone@somewhere"
        assert parsed.type == key.split()[0]


def test_options_quotes_comments_and_junk() -> None:
    ed = KEYS[0]
    line = f'command="/usr/bin/backup --to \\"x y\\"",from="10.0.0.0/8",no-pty {ed} backup key  2024'
    k = ssh_keys.parse_line(line)
    assert k is not None and k.options and k.type == "ssh-ed25519" and k.comment == "backup key 2024"
    assert ssh_keys.parse_line(ed) is not None and ssh_keys.parse_line(ed).comment == ""  # type: ignore[union-attr]
    for junk in ("", "# a comment", "ssh-ed25519", "ssh-ed25519 AAAA alice@laptop", "ssh-rsa !!!! x",
                 f"ssh-rsa {ed.split()[1]} claims the wrong type", "no-pty", 'command="unterminated ' + ed):
        assert ssh_keys.parse_line(junk) is None, junk
    k = ssh_keys.parse_line(f"{ed} evil\x1b[31m\u202eexe.txt {'x' * 200}")
    assert k is not None and "\x1b" not in k.comment and "\u202e" not in k.comment
    assert "\\x1b" in k.comment and len(k.comment) <= ssh_keys.MAX_COMMENT_CHARS


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.builds(lambda opt, c: f"{opt}{KEYS[0]} {c}", st.text(max_size=40), st.text(max_size=80))))
def test_hostile_lines_never_raise_and_comments_stay_printable(line: str) -> None:
    k = ssh_keys.parse_line(line)
    if k is not None:
        assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", k.fingerprint)
        assert len(k.comment) <= ssh_keys.MAX_COMMENT_CHARS
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", k.comment)
        key, value = ssh_keys.entry("root", k)
        assert ssh_keys.parse_entry(key, value) is not None
        assert len(value) <= 80  # a feature keeps the whole value


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=4000))
def test_hostile_files_never_raise(data: bytes) -> None:
    assert len(ssh_keys.parse_file(data)) <= ssh_keys.MAX_KEYS_PER_USER


def test_probe_reports_each_key_but_never_the_file(fake_root: Path) -> None:
    blob_ed, blob_rsa = KEYS[0].split()[1], KEYS[1].split()[1]
    (fake_root / "home/alice/.ssh/authorized_keys").write_text(
        f"{KEYS[0]} alice@laptop\n"
        f"from=\"10.0.0.0/8\" {KEYS[1]} deploy password=hunter2\n"
        "ssh-ed25519 AAAA broken\n")
    items = next(p for k, p in ConfigProbe(root=fake_root).collect(full=True) if k == Kind.CONFIG_INVENTORY)["items"]
    entries = {k: v for k, v in items.items() if k.startswith(ssh_keys.ENTRY_PREFIX)}
    fp_ed = ssh_keys.parse_line(KEYS[0]).fingerprint  # type: ignore[union-attr]
    fp_rsa = ssh_keys.parse_line(KEYS[1]).fingerprint  # type: ignore[union-attr]
    assert entries == {f"authorized_keys.key:alice:{fp_ed}": "ssh-ed25519 alice@laptop",
                       f"authorized_keys.key:alice:{fp_rsa}": "ssh-rsa deploy password=***"}
    assert re.fullmatch("[0-9a-f]{64}", items["authorized_keys:alice"])
    for value in items.values():
        assert blob_ed not in (value or "") and blob_rsa[:40] not in (value or "") and "hunter2" not in (value or "")
