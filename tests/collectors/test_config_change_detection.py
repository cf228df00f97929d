"""The config probe re-reads only what changed: a change it could miss is a blind spot an attacker can aim
for (a file rewritten at the same size with its mtime put back), and re-reading everything every 5 s is
most of its idle cost. What it keeps (signatures, directory listings, the homes parsed from /etc/passwd,
the last values) must never hide a change: after any sequence of changes the probe that keeps things
reports exactly what a fresh probe reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.probes import file_sigs
from collectors.probes.config import ConfigProbe
from collectors.probes.file_sigs import Listings
from contract.events import Kind


def _proc(tmp: Path) -> Path:
    proc = tmp / "proc"
    (proc / "sys/net/ipv4").mkdir(parents=True, exist_ok=True)
    (proc / "sys/net/ipv4/ip_forward").write_text("0\n")
    return proc


def _changes(emits: list) -> dict[str, tuple[str | None, str | None]]:
    return {p["key"]: (p["before"], p["after"]) for k, p in emits if k == Kind.CONFIG_CHANGE}


def _inventory(probe: ConfigProbe) -> dict[str, str]:
    return next(p["items"] for k, p in probe.collect(full=True) if k == Kind.CONFIG_INVENTORY)


def test_rewrite_with_same_size_and_old_mtime_is_reported(fake_root: Path, tmp_path: Path) -> None:
    """Same size, mtime put back (touch -r): only the ctime moved. A signature without it missed this."""
    sshd = fake_root / "etc/ssh/sshd_config"
    probe = ConfigProbe(root=fake_root, proc=_proc(tmp_path))
    probe.collect(full=True)
    before = os.stat(sshd)
    text = sshd.read_text()
    assert "PermitRootLogin no" in text
    sshd.write_text(text.replace("PermitRootLogin no", "PermitRootLogin ye"))  # same length
    os.utime(sshd, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(sshd)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    got = _changes(probe.collect(full=False))
    assert got["sshd.permitrootlogin"] == ("no", "ye")
    assert "file.sha256:/etc/ssh/sshd_config" in got


def test_racy_signature_is_read_again(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writes in one clock tick can leave even the ctime equal: a signature taken within RACY_NS of its
    ctime is not trusted. Simulated by a stat that hides every change (as one tick would)."""
    sudoers = fake_root / "etc/sudoers"
    probe = ConfigProbe(root=fake_root, proc=_proc(tmp_path))
    probe.collect(full=True)
    frozen = file_sigs.stat_sig(str(sudoers))
    real = file_sigs.stat_sig

    def same_tick(path: str | os.PathLike[str]) -> file_sigs.Sig | None:
        return frozen if os.fspath(path) == str(sudoers) else real(path)

    monkeypatch.setattr("collectors.probes.config.stat_sig", same_tick)
    sudoers.write_text("root ALL=(ALL) NOPASSWD: ALL\n")
    assert "file.sha256:/etc/sudoers" in _changes(probe.collect(full=False))


def test_unchanged_run_reads_nothing_again(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the files are older than a clock tick, a run with nothing changed re-reads no source and sends
    nothing; a change is still read, and only its source."""
    monkeypatch.setattr(file_sigs, "RACY_NS", 0)
    probe = ConfigProbe(root=fake_root, proc=_proc(tmp_path))
    probe.collect(full=True)
    first = probe.rereads
    assert probe.collect(full=False) == []
    assert probe.rereads == first
    (fake_root / "etc/group").write_text("root:x:0:\nsudo:x:27:alice,bob\n")
    assert _changes(probe.collect(full=False))["group.sudo"] == ("27:alice", "27:alice,bob")
    assert probe.rereads == first + 1
    (tmp_path / "proc/sys/net/ipv4/ip_forward").write_text("1\n")  # read every run, never kept
    assert _changes(probe.collect(full=False)) == {"sysctl.net.ipv4.ip_forward": ("0", "1")}


def test_listing_kept_until_the_directory_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_sigs, "RACY_NS", 0)
    d = tmp_path / "cron.d"
    d.mkdir()
    (d / "a").write_text("x")
    listings = Listings()
    assert listings.names(str(d)) == ["a"]
    assert listings.names(str(d)) == ["a"] and listings.listed == 1
    before = os.stat(d)
    (d / "b").write_text("y")
    os.utime(d, ns=(before.st_atime_ns, before.st_mtime_ns))  # the directory's mtime put back: ctime moved
    assert sorted(listings.names(str(d))) == ["a", "b"] and listings.listed == 2
    (d / "a").unlink()
    assert listings.names(str(d)) == ["b"]
    d.rename(tmp_path / "gone")
    assert listings.names(str(d)) == []
    (tmp_path / "gone").mkdir(exist_ok=True)
    os.symlink(tmp_path / "gone", d)  # a link to a directory is listed, as os.listdir does
    assert listings.names(str(d)) == ["b"]


def test_racy_listing_is_not_kept(tmp_path: Path) -> None:
    d = tmp_path / "sudoers.d"
    d.mkdir()
    listings = Listings()
    listings.names(str(d))
    listings.names(str(d))
    assert listings.listed == 2  # made just now: within RACY_NS of its ctime


def test_renamed_user_home_and_new_keys_are_seen(fake_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The homes parsed from /etc/passwd are kept while passwd is unchanged: a user whose home moves (passwd
    rewritten, same size) is looked up at the new home."""
    monkeypatch.setattr(file_sigs, "RACY_NS", 0)
    probe = ConfigProbe(root=fake_root, proc=_proc(tmp_path))
    first = _inventory(probe)
    assert "authorized_keys:alice" in first
    passwd = fake_root / "etc/passwd"
    before = os.stat(passwd)
    newhome = fake_root / "home/alicx/.ssh"
    newhome.mkdir(parents=True)
    (newhome / "authorized_keys").write_text(_KEY.format("new"))
    passwd.write_text(passwd.read_text().replace("/home/alice", "/home/alicx"))
    os.utime(passwd, ns=(before.st_atime_ns, before.st_mtime_ns))
    now = _inventory(probe)
    assert now["authorized_keys:alice"] != first["authorized_keys:alice"]
    assert now == _inventory(ConfigProbe(root=fake_root, proc=tmp_path / "proc"))


_FILES = ("etc/ssh/sshd_config", "etc/sudoers", "etc/group", "etc/crontab", "etc/cron.d/job",
          "etc/sudoers.d/extra", "home/alice/.ssh/authorized_keys")
_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k{}\n"
_step = st.tuples(st.sampled_from(("write", "write_keep_times", "remove", "chmod")),
                  st.sampled_from(_FILES), st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, min_size=1, max_size=8))
def test_kept_state_never_hides_a_change(fake_root: Path, tmp_path: Path, steps: list[tuple[str, str, int]]) -> None:
    """Any sequence of writes (times kept or not), removals and mode changes: after each step the probe that
    keeps signatures, listings and homes holds exactly what a fresh probe reads, and its change events
    take it from its last values to those."""
    proc = _proc(tmp_path)
    probe = ConfigProbe(root=fake_root, proc=proc)
    values = dict(_inventory(probe))
    for op, rel, n in steps:
        path = fake_root / rel
        if op == "remove":
            path.unlink(missing_ok=True)
        elif op == "chmod":
            if path.exists():
                path.chmod(0o600 + n)
        else:
            keep = os.stat(path) if op == "write_keep_times" and path.exists() else None
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_KEY.format(n) if "authorized_keys" in rel else f"line {n}\n")
            if keep is not None:
                os.utime(path, ns=(keep.st_atime_ns, keep.st_mtime_ns))
                os.utime(path.parent, ns=(os.stat(path.parent).st_atime_ns, os.stat(path.parent).st_mtime_ns))
        for key, (old, new) in _changes(probe.collect(full=False)).items():
            assert values.get(key) == old
            if new is None:
                values.pop(key, None)
            else:
                values[key] = new
        fresh = _inventory(ConfigProbe(root=fake_root, proc=proc))
        assert values == fresh
        assert probe.values == fresh
