"""Process events connector: message parsing and the socket filter from hand-built byte strings, the reader's
bookkeeping over a fake /proc, and the exec-storm windows."""

from __future__ import annotations

import contextlib
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from collector_helpers import QueuedSource
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.probes.exec_events import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    NLMSG_DONE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_NONE,
    PROC_EVENT_UID,
    ExecRecord,
    ExecSource,
    ProcEvent,
    _status_fields,
    attach_socket_filter,
    control_message,
    leader_events,
    parse_messages,
    read_execs,
    read_one,
)
from collectors.probes.exec_storms import ExecAggregator, Verdict, normalise

if TYPE_CHECKING:
    from collectors.probes import ProcessProbe


def message(what: int, *fields: int, idx: int = CN_IDX_PROC, val: int = CN_VAL_PROC, ts: int = 123) -> bytes:
    event = struct.pack("=IIQ", what, 0, ts) + struct.pack(f"={len(fields)}I", *fields)
    cn = struct.pack("=IIIIHH", idx, val, 7, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def test_each_event_kind_is_decoded() -> None:
    assert parse_messages(message(PROC_EVENT_EXEC, 42, 42)) == [ProcEvent(PROC_EVENT_EXEC, 42, 42, timestamp_ns=123)]
    assert parse_messages(message(PROC_EVENT_FORK, 1, 1, 43, 43)) == [
        ProcEvent(PROC_EVENT_FORK, 43, 43, 1, 1, timestamp_ns=123)]
    assert parse_messages(message(PROC_EVENT_UID, 42, 42, 1000, 0)) == [
        ProcEvent(PROC_EVENT_UID, 42, 42, ruid=1000, euid=0, timestamp_ns=123)]
    # exit: pid, tgid, exit_code, exit_signal, parent pid, parent tgid (the last two since 4.17)
    assert parse_messages(message(PROC_EVENT_EXIT, 42, 42, 0, 17, 7, 7)) == [
        ProcEvent(PROC_EVENT_EXIT, 42, 42, 7, 7, timestamp_ns=123)]
    assert parse_messages(message(PROC_EVENT_EXIT, 42, 42, 0, 17)) == [
        ProcEvent(PROC_EVENT_EXIT, 42, 42, timestamp_ns=123)]
    assert parse_messages(message(PROC_EVENT_NONE, 1)) == [ProcEvent(PROC_EVENT_NONE, err=1, timestamp_ns=123)]


def test_several_messages_in_one_datagram_and_padding() -> None:
    data = message(PROC_EVENT_EXEC, 5, 5) + message(PROC_EVENT_EXIT, 5, 5, 0, 17)
    assert [e.what for e in parse_messages(data)] == [PROC_EVENT_EXEC, PROC_EVENT_EXIT]


def test_malformed_input_is_skipped() -> None:
    good = message(PROC_EVENT_EXEC, 5, 5)
    assert parse_messages(b"") == []
    assert parse_messages(good[:20]) == []  # truncated
    assert parse_messages(message(PROC_EVENT_EXEC, 5, 5, idx=2)) == []  # another connector
    assert parse_messages(message(PROC_EVENT_EXEC, 5)) == []  # body too short for its kind
    assert parse_messages(message(0x200, 5, 5, 0, 0)) == []  # a kind we do not read (comm)
    bad_len = struct.pack("=I", 10_000) + good[4:]
    assert parse_messages(bad_len) == []
    zero_len = struct.pack("=I", 0) + good[4:]
    assert parse_messages(zero_len + good) == []


def test_control_message_layout() -> None:
    plain = control_message(PROC_CN_MCAST_LISTEN, 99)
    length, kind, _, _, port = struct.unpack_from("=IHHII", plain)
    assert (length, kind, port) == (len(plain), NLMSG_DONE, 99)
    assert struct.unpack_from("=IIIIHHI", plain, 16) == (CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0, PROC_CN_MCAST_LISTEN)
    filtered = control_message(PROC_CN_MCAST_LISTEN, 99, PROC_EVENT_EXEC)
    assert struct.unpack_from("=HHII", filtered, 32) == (8, 0, PROC_CN_MCAST_LISTEN, PROC_EVENT_EXEC)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for ev in parse_messages(data):
        assert isinstance(ev, ProcEvent)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK, PROC_EVENT_UID, 0]),
                max_size=8), st.binary(max_size=64), st.integers(0, 200))
def test_valid_messages_with_garbage_never_raise(kinds: list[int], junk: bytes, cut: int) -> None:
    data = b"".join(message(k, 1, 1, 2, 2, 3, 3) for k in kinds) + junk
    parse_messages(data[:len(data) - cut] if cut < len(data) else data)


def test_normalised_kind_ignores_numbers_hex_and_uuids() -> None:
    assert normalise("date +%s 1712 deadbeef01 0f8fad5b-d9cb-469f-a165-70867728950e") == "date +%s # # #"


def test_storm_windows_count_every_exec() -> None:
    agg: ExecAggregator[int] = ExecAggregator(window_s=1.0)
    key = ("/usr/bin/date", "/bin/sh", "0", "date")
    verdicts = [agg.add(key, i, now=0.001 * i) for i in range(500)]
    assert verdicts[0] is Verdict.REPORT and set(verdicts[1:]) == {Verdict.COUNTED}
    assert agg.due(0.9) == []
    assert agg.due(1.0) == [(499, 499)]
    assert agg.add(key, 500, now=1.5) is Verdict.COUNTED  # the storm goes on: a new window
    assert agg.due(2.0) == [(500, 1)]
    assert agg.due(3.1) == [] and len(agg) == 0  # a quiet window closes the kind
    assert agg.add(key, 501, now=3.2) is Verdict.REPORT


def test_storm_cap_counts_new_kinds_instead_of_reporting_them() -> None:
    agg: ExecAggregator[str] = ExecAggregator(window_s=1.0, max_kinds=2)
    assert agg.add(("a",), "a", 0.0, may_report=False) is Verdict.COUNTED
    assert agg.add(("b",), "b", 0.0) is Verdict.REPORT
    assert agg.add(("c",), "c", 0.0) is Verdict.SHED
    assert agg.due(1.0, limit=0) == []  # over the cycle's cap: stays due
    assert agg.due(1.0) == [("a", 1)]


def one_event(what: int, pid: int, tgid: int, ts: int = 5) -> bytes:
    """A datagram as the kernel sends it: one message, the event union padded to its full size (24)."""
    body = struct.pack("=IIQ", what, 0, ts) + struct.pack("=II", pid, tgid) + bytes(16)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 7, 0, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def test_leader_events_keep_execs_and_exits_of_main_threads() -> None:
    assert leader_events(one_event(PROC_EVENT_EXEC, 42, 42, ts=9)) == [(9, PROC_EVENT_EXEC, 42)]
    assert leader_events(one_event(PROC_EVENT_EXIT, 42, 42, ts=10)) == [(10, PROC_EVENT_EXIT, 42)]
    assert leader_events(one_event(PROC_EVENT_EXIT, 43, 42)) == []  # a thread of 42
    assert leader_events(one_event(PROC_EVENT_FORK, 1, 1)) == []
    assert leader_events(one_event(PROC_EVENT_NONE, 0, 0)) == []
    # several messages in one datagram, or the short form: the general parser, same answer
    both = message(PROC_EVENT_EXEC, 5, 5, ts=1) + message(PROC_EVENT_EXIT, 6, 7, 0, 17, ts=2) + \
        message(PROC_EVENT_EXIT, 5, 5, 0, 17, ts=3)
    assert leader_events(both) == [(1, PROC_EVENT_EXEC, 5), (3, PROC_EVENT_EXIT, 5)]
    assert leader_events(one_event(PROC_EVENT_EXEC, 42, 42)[:59]) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_leader_events_never_raise(data: bytes) -> None:
    for ts, what, pid in leader_events(data):
        assert what in (PROC_EVENT_EXEC, PROC_EVENT_EXIT) and pid > 0 and ts >= 0


def test_socket_filter_drops_in_the_kernel_what_python_would_skip() -> None:
    # the same classic BPF program on a Unix datagram socket (no root needed): what it lets through
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rx, tx:
        assert attach_socket_filter(rx, PROC_EVENT_EXEC | PROC_EVENT_EXIT)
        sent = [one_event(PROC_EVENT_FORK, 1, 1), one_event(PROC_EVENT_EXEC, 42, 42),
                one_event(PROC_EVENT_EXIT, 43, 42), one_event(PROC_EVENT_UID, 42, 42),
                one_event(PROC_EVENT_EXIT, 42, 42), one_event(PROC_EVENT_NONE, 0, 0), b"short", one_event(0x200, 9, 9)]
        for data in sent:
            tx.send(data)
        rx.setblocking(False)
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(rx.recv(4096))
        assert got == [sent[1], sent[4], sent[5], b"short"]
    for kinds, kept in ((PROC_EVENT_EXEC, PROC_EVENT_EXEC), (PROC_EVENT_EXIT, PROC_EVENT_EXIT)):
        rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with rx, tx:
            assert attach_socket_filter(rx, kinds)
            tx.send(one_event(PROC_EVENT_EXEC, 42, 42))
            tx.send(one_event(PROC_EVENT_EXIT, 42, 42))
            rx.setblocking(False)
            assert leader_events(rx.recv(4096))[0][1] == kept
            with pytest.raises(BlockingIOError):
                rx.recv(4096)


def test_status_fields() -> None:
    raw = b"Name:\tsh\nUmask:\t0022\nState:\tS\nTgid:\t7\nNgid:\t0\nPid:\t7\nPPid:\t1\nTracerPid:\t0\n" \
          b"Uid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
    assert _status_fields(raw) == (1000, 1)
    assert _status_fields(b"Name:\tx\n") == (None, None)


def fake_proc(root: Path, pid: int, exe: str, ppid: int, argv: bytes = b"prog\0") -> None:
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    link = d / "exe"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(exe)
    (d / "cmdline").write_bytes(argv)
    (d / "status").write_bytes(f"Name:\tx\nPid:\t{pid}\nPPid:\t{ppid}\nUid:\t0\t0\t0\t0\n".encode())
    (d / "cgroup").write_bytes(b"0::/user.slice\n")


def test_parent_exe_cache_follows_the_events(tmp_path: Path) -> None:
    src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
    fake_proc(tmp_path, 50, "/usr/bin/make", 1)
    fake_proc(tmp_path, 100, "/usr/bin/cc", 50)
    src._handle([(1, PROC_EVENT_EXEC, 100)])
    assert [r.parent_exe for r in src.drain() if isinstance(r, ExecRecord)] == ["/usr/bin/make"]
    fake_proc(tmp_path, 50, "/usr/bin/other", 1)  # no event about 50 yet: the cache answers as it was
    fake_proc(tmp_path, 101, "/usr/bin/cc", 50)
    src._handle([(2, PROC_EVENT_EXEC, 101)])
    assert [r.parent_exe for r in src.drain() if isinstance(r, ExecRecord)] == ["/usr/bin/make"]
    fake_proc(tmp_path, 102, "/usr/bin/cc", 50)  # 50 exec'd: its entry goes, its new exe is read
    src._handle([(3, PROC_EVENT_EXEC, 50), (4, PROC_EVENT_EXEC, 102), (5, PROC_EVENT_EXIT, 101)])
    items = src.drain()
    assert [(type(r).__name__, r.pid) for r in items] == [("ExecRecord", 50), ("ExecRecord", 102),
                                                          ("ExitRecord", 101)]
    assert isinstance(items[1], ExecRecord) and items[1].parent_exe == "/usr/bin/other"
    assert items[1].missing == [] and items[1].argv == b"prog\0" and items[1].cgroup == "0::/user.slice"
    src._handle([(6, PROC_EVENT_EXIT, 50)])  # gone: forgotten, and a new process 50 is read afresh
    assert 50 not in src._exes
    fake_proc(tmp_path, 50, "/usr/bin/new", 1)
    fake_proc(tmp_path, 103, "/usr/bin/cc", 50)
    src._handle([(7, PROC_EVENT_EXEC, 103)])
    assert [r.parent_exe for r in src.drain() if isinstance(r, ExecRecord)] == ["/usr/bin/new"]


def test_a_parent_read_after_its_own_next_exec_is_unknown(tmp_path: Path) -> None:
    # `$(cat f-$(date +%s))`: the subshell 60 runs date (61), waits for it, then becomes cat. A reader a
    # moment late reads cat as date's parent; the kernel reports 60's exec after 61's, so that is not it
    src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
    fake_proc(tmp_path, 60, "/usr/bin/cat", 1)
    fake_proc(tmp_path, 61, "/usr/bin/date", 60)
    src._handle([(1, PROC_EVENT_EXEC, 61), (2, PROC_EVENT_EXEC, 60)])
    date, cat = src.drain()
    assert isinstance(date, ExecRecord) and isinstance(cat, ExecRecord)
    assert (date.exe, date.parent_exe, "parent_exe" in date.missing) == ("/usr/bin/date", None, True)
    assert cat.exe == "/usr/bin/cat"
    # the parent's exec reported first: cat really was the parent when date started
    fake_proc(tmp_path, 62, "/usr/bin/date", 60)
    src._handle([(3, PROC_EVENT_EXEC, 60), (4, PROC_EVENT_EXEC, 62)])
    assert [r.parent_exe for r in src.drain() if isinstance(r, ExecRecord) and r.pid == 62] == ["/usr/bin/cat"]


def test_a_queued_record_learns_that_its_parent_moved_on(tmp_path: Path) -> None:
    # the same race over two reads: date's record waits in the queue when the subshell's exec arrives
    src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
    fake_proc(tmp_path, 70, "/usr/bin/cat", 1)
    fake_proc(tmp_path, 71, "/usr/bin/date", 70)
    fake_proc(tmp_path, 72, "/usr/bin/hostname", 70)
    src._handle([(1, PROC_EVENT_EXEC, 71)])
    src._handle([(2, PROC_EVENT_EXEC, 70), (3, PROC_EVENT_EXEC, 72)])
    parents = {r.pid: (r.parent_exe, "parent_exe" in r.missing) for r in src.drain() if isinstance(r, ExecRecord)}
    assert parents[71] == (None, True)
    assert parents[72] == ("/usr/bin/cat", False)  # started after its parent's exec
    # a parent that stays what it was is kept
    fake_proc(tmp_path, 80, "/bin/dash", 1)
    fake_proc(tmp_path, 81, "/usr/bin/date", 80)
    fake_proc(tmp_path, 82, "/usr/bin/env", 1)
    src._handle([(4, PROC_EVENT_EXEC, 81)])
    src._handle([(5, PROC_EVENT_EXEC, 82)])
    assert [r.parent_exe for r in src.drain() if isinstance(r, ExecRecord) and r.pid == 81] == ["/bin/dash"]


def test_reads_over_the_rate_are_shed_in_kernel_order(tmp_path: Path) -> None:
    src = ExecSource(proc=tmp_path, max_reads_per_s=2)
    for pid in (10, 11, 12):
        fake_proc(tmp_path, pid, "/bin/true", 1)
    src._handle([(1, PROC_EVENT_EXEC, 10), (2, PROC_EVENT_EXIT, 9), (3, PROC_EVENT_EXEC, 11),
                 (4, PROC_EVENT_EXEC, 12)])
    assert [(type(r).__name__, r.pid) for r in src.drain()] == [("ExecRecord", 10), ("ExitRecord", 9),
                                                                ("ExecRecord", 11)]
    assert src.take_shed() == {"rate": 1} and src.execs_seen == 3 and src.exits_seen == 1


def test_an_exe_read_on_waking_is_the_records_exe(tmp_path: Path) -> None:
    # the reader reads the first exec's exe as soon as it wakes (token taken); a later exec of the same pid
    # (sh -c 'exec x') is read again, and a command line of the other program is dropped
    src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
    fake_proc(tmp_path, 1, "/sbin/init", 0)
    fake_proc(tmp_path, 200, "/usr/bin/sleep", 1, b"sleep\x001\x00")
    src._handle([(1, PROC_EVENT_EXEC, 200), (2, PROC_EVENT_EXEC, 200)], early={200: "/bin/sh"})
    first, second = src.drain()
    assert isinstance(first, ExecRecord) and isinstance(second, ExecRecord)
    assert (first.exe, first.argv, "cmdline" in first.missing) == ("/bin/sh", None, True)
    assert (second.exe, second.argv, second.missing) == ("/usr/bin/sleep", b"sleep\x001\x00", [])
    assert src.execs_seen == 2 and src.take_shed() == {}


def test_a_process_caught_inside_its_exec_is_looked_at_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    # polling: the new program is in place but its command line reads empty for a moment
    from collectors.probes import ProcessProbe

    probe = ProcessProbe()
    listed: set[int] = set()
    looks: list[dict[str, object]] = []
    monkeypatch.setattr(probe, "pids", lambda: set(listed))
    monkeypatch.setattr(probe, "tasks_file", None)  # a faked listing: list every cycle
    monkeypatch.setattr(probe, "read", lambda pid: looks.pop(0) if looks else None)
    assert probe.collect(full=False) == []
    item = {"pid": 77, "ppid": 1, "exe": "/usr/bin/sleep", "user": "root", "start_time": 1.0, "name": "sleep",
            "cmdline_truncated": False}
    listed.add(77)
    looks.append({**item, "cmdline": ""})
    assert probe.collect(full=False) == []  # deferred
    looks.append({**item, "cmdline": "sleep 2"})
    assert [p["cmdline"] for _k, p in probe.collect(full=False)] == ["sleep 2"]
    listed.add(78)  # one that stays empty is reported on the second look, as it is
    looks.extend([{**item, "pid": 78, "cmdline": ""}, {**item, "pid": 78, "cmdline": ""}])
    assert probe.collect(full=False) == []
    assert [(p["pid"], p["cmdline"]) for _k, p in probe.collect(full=False)] == [(78, "")]
    assert probe._rechecked == set()


def _status_text(pid: int, ppid: int | None, uid: int | None, junk: bytes) -> bytes:
    lines = [b"Name:\tx", b"Pid:\t%d" % pid]
    if ppid is not None:
        lines.append(b"PPid:\t%d" % ppid)
    if uid is not None:
        lines.append(b"Uid:\t%d\t0\t0\t0" % uid)
    return b"\n".join(lines) + b"\n" + junk


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.one_of(st.none(), st.binary(max_size=20000)), st.one_of(st.none(), st.integers(0, 99)),
       st.one_of(st.none(), st.integers(0, 2**31)), st.binary(max_size=64),
       st.one_of(st.none(), st.binary(max_size=400)), st.booleans(), st.booleans())
def test_the_one_exec_path_reads_what_the_batch_path_reads(
        has_exe: bool, argv: bytes | None, ppid: int | None, uid: int | None, junk: bytes, cgroup: bytes | None,
        parent_there: bool, parent_cached: bool) -> None:
    # read_one (nearly every exec: one per wakeup) and read_execs (a batch) give the same record for any
    # /proc contents, files missing or garbled included, and learn the same parent exe
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = root / "300"
        d.mkdir()
        if has_exe:
            (d / "exe").symlink_to("/usr/bin/prog")
        if argv is not None:
            (d / "cmdline").write_bytes(argv)
        (d / "status").write_bytes(_status_text(300, ppid, uid, junk))
        if cgroup is not None:
            (d / "cgroup").write_bytes(cgroup)
        if ppid is not None and parent_there:
            (root / str(ppid)).mkdir(exist_ok=True)
            (root / str(ppid) / "exe").symlink_to("/bin/sh")
        exe = "/usr/bin/prog" if has_exe else None
        cache_one: dict[int, str] = {}
        cache_batch: dict[int, str] = {}
        if ppid is not None and parent_cached:
            cache_one[ppid] = cache_batch[ppid] = "/usr/bin/make"
        one = read_one(300, exe, f"{root}/", 5.0, cache_one)
        batch = read_execs([300], root, 5.0, exes=cache_batch, read={300: exe})[0]
        assert one == batch
        assert cache_one == cache_batch


def one_wakeup(src: ExecSource, rx: socket.socket, tx: socket.socket, datagrams: list[bytes]) -> None:
    """Run the reader over `datagrams` sent before it starts (all queued at its first wakeup)."""
    for data in datagrams:
        tx.send(data)
    src._sock = rx
    src._thread = threading.Thread(target=src._run, daemon=True)
    src._thread.start()
    deadline = time.monotonic() + 10
    execs = sum(ev[1] == PROC_EVENT_EXEC for d in datagrams for ev in leader_events(d))
    while src.execs_seen < execs and time.monotonic() < deadline:
        time.sleep(0.01)
    src._stop.set()
    tx.send(b"wake")
    src._thread.join(timeout=5)
    assert not src._thread.is_alive()


def test_the_reader_reads_a_lone_exec_and_a_queued_batch_alike(tmp_path: Path) -> None:
    # one exec alone takes the short path, three queued the batch path: the same records, in kernel order,
    # each process's parent exe from the cache or from /proc, and no exits (the probe's listing has them)
    fake_proc(tmp_path, 1, "/sbin/init", 0)
    fake_proc(tmp_path, 10, "/bin/sh", 1, b"sh\x00-c\x00x\x00")
    fake_proc(tmp_path, 11, "/usr/bin/date", 10, b"date\x00")
    fake_proc(tmp_path, 12, "/usr/bin/cat", 10, b"cat\x00f\x00")
    for events in ([one_event(PROC_EVENT_EXEC, 11, 11)],
                   [one_event(PROC_EVENT_EXEC, 10, 10), one_event(PROC_EVENT_EXIT, 9, 9),
                    one_event(PROC_EVENT_EXEC, 11, 11), one_event(PROC_EVENT_EXEC, 12, 12)]):
        src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
        rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with rx, tx:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
            one_wakeup(src, rx, tx, events)
        got = src.drain()
        assert all(isinstance(r, ExecRecord) for r in got)
        wanted = [pid for _ts, what, pid in (leader_events(e)[0] for e in events) if what == PROC_EVENT_EXEC]
        assert [r.pid for r in got] == wanted and src.execs_seen == len(wanted)
        for rec in got:
            assert isinstance(rec, ExecRecord) and rec.missing == [] and rec.cgroup == "0::/user.slice"
        assert {r.pid: r.parent_exe for r in got if isinstance(r, ExecRecord)}[11] == "/bin/sh"
        assert src._exes[11] == "/usr/bin/date"


def test_cached_exes_of_processes_gone_are_forgotten(tmp_path: Path) -> None:
    src = ExecSource(proc=tmp_path, max_reads_per_s=1e9)
    src._exes.update({5: "/bin/sh", 6: "/usr/bin/make", 7: "/bin/bash"})
    src.forget_gone({1, 6})
    assert src._exes == {6: "/usr/bin/make"}



def test_exits_in_event_modes_come_from_the_listing_also_on_an_inventory_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.probes import ProcessProbe
    from contract.events import Kind

    src = QueuedSource(max_reads_per_s=1e9)
    probe = ProcessProbe(exec_source=src)
    alive = {1, 50}
    monkeypatch.setattr(probe, "pids", lambda: set(alive))
    monkeypatch.setattr(probe, "tasks_file", None)  # a faked listing: list every cycle
    monkeypatch.setattr(probe, "read", lambda pid: {"pid": pid, "ppid": 0, "exe": f"/bin/p{pid}", "cmdline": "",
                                                    "user": "root", "start_time": 1.0, "name": f"p{pid}"})
    probe.collect(full=True)
    assert set(probe.known) == {1, 50}

    def record(pid: int, exe: str) -> ExecRecord:
        return ExecRecord(pid, 2.0, exe, exe.encode() + b"\x00", False, 0, 1, "/sbin/init", "0::/", [])

    src._push_all([record(60, "/usr/bin/long"), record(70, "/usr/bin/brief")])
    alive |= {60}  # 70 is already gone when the cycle runs
    kinds = [(k, p["pid"]) for k, p in probe.collect(full=False)]
    assert kinds == [(Kind.PROCESS_START, 60), (Kind.PROCESS_START, 70), (Kind.PROCESS_EXIT, 70)]
    alive -= {50, 60}
    kinds = [(k, p["pid"]) for k, p in probe.collect(full=True) if k is not Kind.PROCESS_INVENTORY]
    assert kinds == [(Kind.PROCESS_EXIT, 50), (Kind.PROCESS_EXIT, 60)]
    assert set(probe.known) == {1}


def test_the_reader_sheds_over_the_rate_on_both_paths(tmp_path: Path) -> None:
    # an empty token bucket: a lone exec and a queued batch are counted as shed, never read
    fake_proc(tmp_path, 11, "/usr/bin/date", 1)
    for events in ([one_event(PROC_EVENT_EXEC, 11, 11)],
                   [one_event(PROC_EVENT_EXEC, 11, 11), one_event(PROC_EVENT_EXEC, 11, 11)]):
        src = ExecSource(proc=tmp_path, max_reads_per_s=1e-9)
        rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with rx, tx:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
            one_wakeup(src, rx, tx, events)
        assert src.drain() == []
        assert src.take_shed() == {"rate": len(events)} and src.execs_seen == len(events)


exec_seq = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6), st.sampled_from(["/a", "/b", "/c", None]),
                              st.sampled_from(["/a", "/b", "/c", None]), st.booleans()), max_size=40)


@given(exec_seq)
def test_no_queued_record_keeps_a_parent_exe_its_parent_execd_into_later(
        seq: list[tuple[int, int, str | None, str | None, bool]]) -> None:
    # any kernel-order sequence of execs (pid, ppid, exe, parent exe read, pushed alone or with the previous
    # batch): a record whose parent exec'd later into the very program read as its parent has it unknown;
    # every other parent read stays, and nothing is lost or reordered
    src = ExecSource(proc=Path("/nonexistent"), max_reads_per_s=1e9)
    recs = [ExecRecord(pid, float(i), exe, None, False, 0, ppid or None, parent, None, [])
            for i, (pid, ppid, exe, parent, _) in enumerate(seq)]
    batch: list[ExecRecord] = []
    for rec, (*_, alone) in zip(recs, seq, strict=True):
        if alone and batch:
            src._push_all(batch)
            batch = []
        batch.append(rec)
    if batch:
        src._push_all(batch)
    out = src.drain()
    assert [r.time for r in out if isinstance(r, ExecRecord)] == [float(i) for i in range(len(seq))]
    for i, (_pid, ppid, _exe, parent, _) in enumerate(seq):
        got = out[i]
        assert isinstance(got, ExecRecord)
        nxt = next((e for p, _pp, e, _pe, _a in seq[i + 1:] if p == ppid and e is not None), None)
        moved = bool(ppid) and parent is not None and nxt == parent
        assert got.parent_exe == (None if moved else parent)
        assert ("parent_exe" in got.missing) == moved


def _probe_over(proc: Path, monkeypatch: pytest.MonkeyPatch, alive: set[int]) -> tuple[QueuedSource, ProcessProbe]:
    from collectors.probes import ProcessProbe

    src = QueuedSource(proc=proc, max_reads_per_s=1e9)
    probe = ProcessProbe(exec_source=src)
    monkeypatch.setattr(probe, "pids", lambda: set(alive))
    monkeypatch.setattr(probe, "tasks_file", None)  # a faked listing: list every cycle
    monkeypatch.setattr(probe, "read", lambda pid: None)
    probe.collect(full=True)
    return src, probe


def test_an_exec_read_without_its_command_line_is_read_again_a_cycle_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a miner read mid-exec under load: its exe is known, its command line not yet. Reported as it was, it
    # would have no identity until the next inventory; held one cycle, it is reported whole while it runs
    from contract.events import Kind

    alive = {1}
    src, probe = _probe_over(tmp_path, monkeypatch, alive)
    fake_proc(tmp_path, 40, "/tmp/.cache/kworkerds", 0, argv=b"")
    fake_proc(tmp_path, 41, "/usr/bin/date", 1, argv=b"")
    fake_proc(tmp_path, 42, "/usr/bin/sleep", 1, argv=b"sleep\x0060\x00")
    alive |= {40, 41, 42}
    src._push_all([ExecRecord(40, 5.0, "/tmp/.cache/kworkerds", None, False, 0, 0, None, "0::/", ["cmdline",
                                                                                                    "parent_exe"]),
                   ExecRecord(41, 5.1, "/usr/bin/date", None, False, None, 1, "/sbin/init", "0::/", ["cmdline",
                                                                                                     "user"]),
                   ExecRecord(42, 5.2, "/usr/bin/sleep", b"sleep\x0060\x00", False, 0, 1, "/sbin/init", "0::/", [])])
    assert [(k, p["pid"]) for k, p in probe.collect(full=False)] == [(Kind.PROCESS_START, 42)]  # 40, 41 held
    (tmp_path / "40" / "cmdline").write_bytes(b"kworkerds\x00-o\x00pool:3333\x00")
    alive.discard(41)  # date is gone: reported as it was, started and ended
    (tmp_path / "41" / "exe").unlink()
    out = probe.collect(full=False)
    assert [(k, p["pid"]) for k, p in out] == [(Kind.PROCESS_START, 40), (Kind.PROCESS_START, 41),
                                              (Kind.PROCESS_EXIT, 41)]
    miner, date = out[0][1], out[1][1]
    assert miner["cmdline"] == "kworkerds -o pool:3333" and miner["missing"] == ["parent_exe"]
    assert date["cmdline"] == "" and set(date["missing"]) == {"cmdline", "user"}
    assert probe.collect(full=False) == [] and probe._incomplete == {}


def test_a_held_exec_whose_process_exec_d_again_keeps_no_later_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the shell read mid-exec then exec'd env: the command line there is env's, never the shell's; and
    # the shell's record comes out before env's
    from contract.events import Kind

    alive = {1, 50}
    src, probe = _probe_over(tmp_path, monkeypatch, alive)
    fake_proc(tmp_path, 50, "/bin/sh", 1, argv=b"")
    src._push_all([ExecRecord(50, 5.0, "/bin/sh", None, False, 0, 1, "/sbin/init", "0::/", ["cmdline"])])
    assert probe.collect(full=False) == []
    fake_proc(tmp_path, 50, "/usr/bin/env", 1, argv=b"env\x00X=1\x00")
    src._push_all([ExecRecord(50, 6.0, "/usr/bin/env", b"env\x00X=1\x00", False, 0, 1, "/sbin/init", "0::/", [])])
    out = probe.collect(full=False)
    assert [(k, p["exe"], p["cmdline"]) for k, p in out] == [(Kind.PROCESS_START, "/bin/sh", ""),
                                                             (Kind.PROCESS_START, "/usr/bin/env", "env X=1")]


def word(i: int) -> str:
    """A distinct word per number, with no digits or hex letters (the storm key drops those)."""
    return "".join("ghijklmnopqrstuvwxyz"[int(d)] for d in str(i))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(10, 14), st.booleans(), st.sampled_from(["/a", "/b"]),
                          st.sampled_from(["same", "other", "gone"]), st.booleans()), max_size=30))
def test_held_execs_are_each_reported_once_in_their_pids_order(
        seq: list[tuple[int, bool, str, str, bool]]) -> None:
    # any sequence of execs (pid, command line read, exe, what /proc shows of the pid a cycle later, a new
    # cycle before it), some read without their command line: every exec is reported exactly once, each
    # pid's in kernel order, and a command line read again only while /proc shows the same program
    from collectors.probes import ProcessProbe

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        proc = Path(tmp)
        alive: set[int] = set()
        src = QueuedSource(proc=proc, max_reads_per_s=1e9)
        probe = ProcessProbe(exec_source=src)
        mp.setattr(probe, "pids", lambda: set(alive))
        mp.setattr(probe, "tasks_file", None)  # a faked listing: list every cycle
        mp.setattr(probe, "read", lambda pid: None)
        probe.collect(full=True)
        starts: list[dict[str, object]] = []
        for i, (pid, read_cmd, exe, later, cycle) in enumerate(seq):
            argv = f"p\x00{word(i)}\x00".encode()  # every exec a kind of its own: none is aggregated
            src._push_all([ExecRecord(pid, float(i), exe, argv if read_cmd else None, False, 0, 1, f"/{word(i)}",
                                      "0::/", [] if read_cmd else ["cmdline"])])
            if later == "gone":
                alive.discard(pid)
                with contextlib.suppress(FileNotFoundError):
                    (proc / str(pid) / "exe").unlink()
            else:
                alive.add(pid)
                fake_proc(proc, pid, exe if later == "same" else "/other", 1, argv=argv)
            if cycle:
                starts += [p for k, p in probe.collect(full=False) if k.value == "process.start"]
        for _ in range(2):
            starts += [p for k, p in probe.collect(full=False) if k.value == "process.start"]
        assert sorted(float(str(p["start_time"])) for p in starts) == [float(i) for i in range(len(seq))]
        for pid in {s[0] for s in seq}:
            times = [float(str(p["start_time"])) for p in starts if p["pid"] == pid]
            assert times == sorted(times)
        for p in starts:
            i = int(float(str(p["start_time"])))
            _pid, read_cmd, _exe, _later, _cycle = seq[i]
            assert p["cmdline"] in ("", f"p {word(i)}")
            if not read_cmd and p["cmdline"]:
                assert seq[i][3] == "same"  # filled in only from the same program
