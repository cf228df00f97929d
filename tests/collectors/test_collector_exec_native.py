"""The C exec reader (collectors/probes/_execread.c) on its own: datagrams sent through a socket pair, so
no root and no kernel connector are needed. It decodes what Python's decoder decodes, whatever the bytes;
it reads real processes as /proc shows them; and its bounds (budget, batch size, close()'s wake-up) hold."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.probes import exec_events as ee
from collectors.probes.pidfd_info import cgroup_line

native = ee._execread
pytestmark = pytest.mark.skipif(native is None, reason="the C exec reader is not built")

SLEEP = os.path.realpath("/bin/sleep")


def exec_datagram(pid: int, tgid: int | None = None, what: int = ee.PROC_EVENT_EXEC, ts: int = 1) -> bytes:
    """One event as the kernel sends it: nlmsghdr, cn_msg, proc_event (exec: pid, tgid; padded as the union)."""
    body = ee._EVENT_HEAD.pack(what, 0, ts) + ee._U32X2.pack(pid, pid if tgid is None else tgid) + bytes(16)
    cn = ee._CN_MSG.pack(ee.CN_IDX_PROC, ee.CN_VAL_PROC, 0, 0, len(body), 0) + body
    return ee._NLMSGHDR.pack(ee._NLMSGHDR.size + len(cn), ee.NLMSG_DONE, 0, 0, 0) + cn


def one_exec(data: bytes) -> int | None:
    """The pid of an exec of a main thread in a datagram of exactly one event (what the kernel sends), as
    Python's `leader_events` reads it, pids beyond the kernel's PID_MAX_LIMIT aside."""
    if len(data) < ee._ONE_EVENT.size:
        return None
    (length, msg_type, _f, _s, _p, idx, val, _cs, _ca, cn_len, _cf, what, _cpu, _ts, pid,
     tgid) = ee._ONE_EVENT.unpack_from(data)
    if (msg_type == ee.NLMSG_DONE and idx == ee.CN_IDX_PROC and val == ee.CN_VAL_PROC
            and ee._ONE_EVENT.size <= length and 0 <= len(data) - length < 4
            and cn_len >= ee._ONE_EVENT.size - ee._WHAT_AT and what == ee.PROC_EVENT_EXEC and pid == tgid
            and 0 < pid <= 0x7FFFFFFF):
        return pid
    return None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def wait_for_cmdline(pid: int) -> None:
    """Popen returns once the exec is past its point of no return, before the kernel has set up the new
    command line (read then, it is empty, and the probe reads it again a cycle later): the readers are
    compared on a finished exec."""
    deadline = time.monotonic() + 10.0
    while not Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.001)


def dead_pid() -> int:
    p = subprocess.Popen(["/bin/true"])
    p.wait()
    return p.pid


event_fields = st.builds(
    lambda pid, tgid, what, ts, tail: exec_datagram(pid, tgid, what, ts)[:60 + tail] + bytes(max(0, tail - 16)),
    st.integers(0, 2**32 - 1), st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.sampled_from([ee.PROC_EVENT_EXEC, ee.PROC_EVENT_EXIT, ee.PROC_EVENT_FORK, ee.PROC_EVENT_NONE, 0x200]),
    st.integers(0, 2**64 - 1), st.integers(-4, 24))
"""Events of every kind with any pid/tgid, cut short or padded: the decoder's edge cases."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(min_size=60, max_size=300), event_fields), max_size=40))
def test_it_decodes_what_pythons_decoder_decodes(pair: tuple[socket.socket, socket.socket],
                                                         datagrams: list[bytes]) -> None:
    send, recv = pair
    datagrams = [d for d in datagrams if len(d) >= 60]  # shorter ones end a batch (close()'s wake-up)
    for d in datagrams:
        send.send(d)
    send.send(b"stop")
    rows, execs, over, overflows, err = native.read_batch(recv.fileno(), 1000, 10_000, 0, 256)
    assert (rows, overflows, err) == ([], 0, 0)  # a budget of 0: nothing read from /proc
    assert execs == over == sum(one_exec(d) is not None for d in datagrams)


def test_it_reads_real_processes_as_proc_shows_them(pair: tuple[socket.socket, socket.socket]) -> None:
    send, recv = pair
    kids = [subprocess.Popen(["/bin/sleep", "30", f"0.{i}"]) for i in range(3)]
    gone = dead_pid()
    try:
        for k in kids:
            wait_for_cmdline(k.pid)
        for d in [exec_datagram(k.pid) for k in kids] + [exec_datagram(gone), exec_datagram(kids[0].pid, 1)]:
            send.send(d)
        send.send(b"stop")
        rows, execs, over, _overflows, err = native.read_batch(recv.fileno(), 1000, 10_000, 3, 256)
        assert (execs, over, err) == (4, 1, 0)  # the thread's exec (tgid != pid) is not one; the 4th is over budget
        assert [r[0] for r in rows] == [k.pid for k in kids]
        me = os.path.realpath(f"/proc/{os.getpid()}/exe")
        for k, (pid, when, exe, argv, uid, ppid, parent, cgroup) in zip(kids, rows, strict=True):
            with open(f"/proc/{pid}/cgroup", "rb") as f:
                want_cgroup = cgroup_line(f.read())
            assert exe == SLEEP and argv == f"/bin/sleep\x0030\x000.{kids.index(k)}\x00".encode()
            assert (uid, ppid, parent) == (os.getuid(), os.getpid(), me)
            assert cgroup is not None and cgroup_line(cgroup) == want_cgroup and when > 0
        send.send(exec_datagram(gone))
        send.send(b"stop")
        rows, *_ = native.read_batch(recv.fileno(), 1000, 10_000, 1, 256)
        assert rows == [(gone, rows[0][1], None, None, None, None, None, None)]  # reaped: everything missing
        records = ee.finish_native(rows, {})
        assert records[0].missing == ["exe", "cmdline", "user", "ppid", "parent_exe", "cgroup"]
    finally:
        for k in kids:
            k.kill()
            k.wait()


def test_a_batch_ends_at_its_size_and_when_nothing_comes(pair: tuple[socket.socket, socket.socket]) -> None:
    send, recv = pair
    gone = dead_pid()
    for _ in range(5):
        send.send(exec_datagram(gone))
    rows, execs, *_ = native.read_batch(recv.fileno(), 1000, 10_000, 100, 2)
    assert len(rows) == execs == 2  # full
    rows, execs, *_ = native.read_batch(recv.fileno(), 1000, 10_000, 100, 256)
    assert len(rows) == execs == 3  # the rest, then a pause longer than the socket's receive timeout
    assert native.read_batch(recv.fileno(), 10, 10_000, 100, 256)[:2] == ([], 0)  # nothing within wait_ms


def test_finish_native_uses_the_parent_cache_and_cuts_long_command_lines() -> None:
    exes = {7: "/usr/bin/bash"}
    long_argv = b"x" * (ee.MAX_CMDLINE_BYTES + 1)
    recs = ee.finish_native([(8, 1.0, "/usr/bin/date", long_argv, 0, 7, None, b"0::/job"),
                             (7, 2.0, "/usr/bin/env", b"env\0", 0, 1, "/sbin/init", None)], exes)
    assert recs[0].parent_exe == "/usr/bin/bash" and recs[0].argv_over and len(recs[0].argv or b"") == 16384
    assert recs[0].cgroup == "0::/job" and recs[0].missing == []
    assert recs[1].missing == ["cgroup"]
    assert exes == {7: "/usr/bin/env", 8: "/usr/bin/date"}  # learnt in kernel order


def test_bad_arguments_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_records"):
        native.read_batch(0, 0, 0, 0, 0)
    assert native.read_batch(-1, 0, 0, 0, 1) == ([], 0, 0, 0, 0)  # no socket: nothing to wait for, nothing read


names = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
argv0s = st.one_of(st.binary(min_size=1, max_size=64), st.integers(16_000, 17_000).map(lambda n: b"x" * n)).filter(
    lambda b: b"\0" not in b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, argv0=argv0s)
def test_it_reads_what_the_python_reader_reads_of_hostile_processes(
        pair: tuple[socket.socket, socket.socket], tmp_path_factory: pytest.TempPathFactory, name: bytes,
        argv0: bytes) -> None:
    # a program under any file name (newlines, invalid UTF-8, spaces) and any command line, as long as 17 KB
    folder = tmp_path_factory.mktemp("exe")
    exe = os.path.join(os.fsencode(folder), name)
    with open(SLEEP, "rb") as src, open(exe, "wb") as dst:
        dst.write(src.read())
    os.chmod(exe, 0o755)
    send, recv = pair
    proc = subprocess.Popen([argv0, b"30"], executable=exe)
    try:
        wait_for_cmdline(proc.pid)
        send.send(exec_datagram(proc.pid))
        send.send(b"stop")
        rows, *_ = native.read_batch(recv.fileno(), 1000, 10_000, 1, 4)
        got = ee.finish_native(rows, {})
        want = ee.read_execs([proc.pid], info=ee.PidInfo())
        assert got[0].exe == want[0].exe == os.fsdecode(os.path.realpath(exe))
        assert (got[0].argv, got[0].argv_over) == (want[0].argv, want[0].argv_over)
        assert (got[0].argv or b"").startswith(argv0[:16384])
        assert (got[0].uid, got[0].ppid, got[0].parent_exe, got[0].cgroup, got[0].missing) == (
            want[0].uid, want[0].ppid, want[0].parent_exe, want[0].cgroup, want[0].missing)
    finally:
        proc.kill()
        proc.wait()
        os.unlink(exe)
