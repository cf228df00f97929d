"""Process events connector: message parsing from hand-built byte strings, and the exec-storm windows."""

from __future__ import annotations

import struct

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
    ProcEvent,
    control_message,
    parse_messages,
)
from collectors.probes.exec_storms import ExecAggregator, Verdict, normalise


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
