"""A process's real uid, parent and cgroup through a pidfd (collectors/probes/pidfd_info.py): the same values
the files /proc/<pid>/status and /proc/<pid>/cgroup give, for every process on this machine, a zombie and a
process moved to another cgroup; a reaped process gives nothing; a kernel without the ioctl reads the files."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.probes import exec_events, pidfd_info
from collectors.probes.exec_events import _status_fields, read_execs, read_one
from collectors.probes.pidfd_info import PidInfo, cgroup_line

UNIFIED = next((Path(p) for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                if (Path(p) / "cgroup.procs").exists() and (Path(p) / "cgroup.subtree_control").exists()), None)


def files_say(pid: int) -> tuple[int | None, int | None, str | None] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_bytes()
        cgroup = Path(f"/proc/{pid}/cgroup").read_bytes()
    except OSError:
        return None
    return (*_status_fields(status), cgroup_line(cgroup))


@pytest.fixture
def info() -> PidInfo:
    got = PidInfo()
    if got.read(os.getpid()) is None or not got.enabled:
        pytest.skip("this kernel has no PIDFD_GET_INFO (Linux >= 6.13): the files are read, as tested elsewhere")
    return got


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "30"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_every_process_here_reads_as_its_files_say(info: PidInfo) -> None:
    compared = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        want = files_say(pid)
        got = info.read(pid)
        if want is None or got is None or files_say(pid) != want:  # gone, or changed meanwhile
            continue
        assert got == want, pid
        compared += 1
    assert compared >= 3


def test_a_zombie_still_has_its_identity_and_a_reaped_process_has_none(info: PidInfo) -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert info.read(child.pid) == files_say(child.pid) == (os.getuid(), os.getpid(), files_say(os.getpid())[2])
    child.wait()
    assert info.read(child.pid) == (None, None, None)


def test_a_kernel_without_the_ioctl_reads_the_files(monkeypatch: pytest.MonkeyPatch,
                                                    sleeper: subprocess.Popen[bytes]) -> None:
    def refused(*_a: object) -> None:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    monkeypatch.setattr(pidfd_info.fcntl, "ioctl", refused)
    off = PidInfo()
    assert off.read(sleeper.pid) is None and not off.enabled
    exe = os.readlink(f"/proc/{sleeper.pid}/exe")
    files = read_one(sleeper.pid, exe, "/proc/", 1.0, {}, None)
    assert read_one(sleeper.pid, exe, "/proc/", 1.0, {}, off) == files
    assert files.missing == [] and files.ppid == os.getpid()


def test_the_pidfd_path_gives_the_records_the_files_give(info: PidInfo, sleeper: subprocess.Popen[bytes]) -> None:
    exe = os.readlink(f"/proc/{sleeper.pid}/exe")
    for cache in ({}, {os.getpid(): "/usr/bin/make"}):
        files = read_one(sleeper.pid, exe, "/proc/", 1.0, dict(cache), None)
        assert read_one(sleeper.pid, exe, "/proc/", 1.0, dict(cache), info) == files
        assert read_execs([sleeper.pid], when=1.0, exes=dict(cache), info=info) == \
               read_execs([sleeper.pid], when=1.0, exes=dict(cache))
    assert exec_events.ExecSource()._info is not None  # the real /proc: pidfds
    assert exec_events.ExecSource(proc=Path("/tmp"))._info is None  # a fake one: its files


@pytest.mark.skipif(os.geteuid() != 0 or UNIFIED is None, reason="needs root and a cgroup v2 hierarchy")
def test_a_process_moved_to_another_cgroup_is_read_in_it(info: PidInfo, sleeper: subprocess.Popen[bytes]) -> None:
    assert UNIFIED is not None
    first = UNIFIED / f"herdwatch-test-{uuid.uuid4().hex[:8]}"
    renamed = first.with_name(first.name + "-renamed")
    home = files_say(os.getpid())
    assert home is not None and home[2] is not None and home[2].startswith("0::")
    first.mkdir()
    try:
        assert info.read(sleeper.pid) == files_say(sleeper.pid)  # its parent's cgroup, learnt
        (first / "cgroup.procs").write_text(str(sleeper.pid))
        moved = info.read(sleeper.pid)
        assert moved == files_say(sleeper.pid) and moved is not None and moved[2] == f"0::/{first.name}"
        with pytest.raises(OSError):  # cgroup v2 never renames: a line kept for an id stays true
            first.rename(renamed)
        assert info.read(sleeper.pid) == moved and len(info.cgroups) >= 2
    finally:
        back = (UNIFIED / "cgroup.procs") if home[2] == "0::/" else (UNIFIED / home[2][4:] / "cgroup.procs")
        if sleeper.poll() is None:
            back.write_text(str(sleeper.pid))
        for d in (first, renamed):
            if d.exists():
                d.rmdir()
