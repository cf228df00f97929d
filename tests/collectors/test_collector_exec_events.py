"""Exec events from the kernel (root, real processes): every short-lived exec is seen with its identity,
exec storms are aggregated with counts that add up, and where the connector cannot be used the probe
polls /proc and says so."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors import signals
from collectors.agent import Agent, build_probes, open_exec_source
from collectors.probes import ProcessProbe
from collectors.probes import exec_events as exec_events_module
from collectors.probes.exec_events import ExecRecord, ExecSource, ExecSourceUnavailable, ExitRecord
from collectors.probes.exec_storms import normalise
from collectors.probes.fanotify_events import FanotifySource
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings

UNREACHABLE = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit")
TRUE = os.path.realpath("/bin/true")
SLEEP = os.path.realpath("/bin/sleep")
SH = os.path.realpath("/bin/sh")

# These race real processes that live a millisecond against the reader: with another test process busy
# beside them on 2 cores the race is a different one, so they run alone (`make pytest`); the benchmark
# (benchmarks/bench_collectors.py --exec-events) measures the same under load.
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the process events connector needs root"),
              pytest.mark.alone]


READERS = ["native", "python"]
"""Every test of the connector runs with each reader: the C one (collectors/probes/_execread.c) and Python's."""


@pytest.fixture(params=READERS)
def source(request: pytest.FixtureRequest) -> Iterator[ExecSource]:
    src = ExecSource(native=request.param == "native")
    assert src.reader == request.param
    src.open()
    try:
        yield src
    finally:
        src.close()


def run_and_wait(argv: list[str], timeout: float = 60.0) -> int:
    p = subprocess.Popen(argv)
    try:
        p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.pid


def drain_until(src: ExecSource, want: set[int], execs_each: int = 2,
                timeout: float = 5.0) -> list[ExecRecord | ExitRecord]:
    """Everything the source delivers until `execs_each` execs of every pid in `want` were seen (or the
    timeout)."""
    got: list[ExecRecord | ExitRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += src.drain()
        counts: dict[int, int] = {}
        for r in got:
            if isinstance(r, ExecRecord):
                counts[r.pid] = counts.get(r.pid, 0) + 1
        if all(counts.get(pid, 0) >= execs_each for pid in want):
            break
        time.sleep(0.05)
    return got


def test_every_short_lived_exec_is_seen_with_its_exe(source: ExecSource) -> None:
    # `sh -c 'exec X'` keeps the pid Popen gives us through both execs, so each run is found by pid
    me = os.getpid()
    lively = [run_and_wait(["/bin/sh", "-c", "exec /bin/sleep 0.005"]) for _ in range(50)]  # lives ~6 ms
    brief = [run_and_wait(["/bin/sh", "-c", "exec /bin/true"]) for _ in range(50)]  # lives well under 1 ms
    got = drain_until(source, set(lively) | set(brief))
    execs: dict[int, list[ExecRecord]] = {}
    for r in got:
        if isinstance(r, ExecRecord):
            execs.setdefault(r.pid, []).append(r)

    assert not [r for r in got if isinstance(r, ExitRecord)]  # exits: the probe's /proc listing, each cycle
    for pid in lively:  # both execs seen, the last with the full identity
        assert len(execs.get(pid, [])) == 2, (pid, execs.get(pid))
        last = execs[pid][-1]
        assert last.exe == SLEEP, last
        assert last.argv == b"/bin/sleep\x000.005\x00" and last.uid == 0 and last.ppid == me
        assert last.parent_exe == os.path.realpath(f"/proc/{me}/exe") and last.cgroup
        assert last.missing == []
    with_exe = 0
    for pid in brief:  # every exec seen; the exe, where the process was still there to read, is the right one
        assert len(execs.get(pid, [])) == 2, (pid, execs.get(pid))
        last = execs[pid][-1]
        assert last.exe in (TRUE, SH, None), last
        assert (last.exe is None) == ("exe" in last.missing)
        with_exe += last.exe == TRUE
    print(f"/bin/true runs read with their exe: {with_exe}/50")


def test_a_shell_loop_of_short_processes_is_reported_through_the_probe(source: ExecSource) -> None:
    probe = ProcessProbe(0.5, 600, exec_source=source, exec_window_s=0.5)
    probe.collect(True)
    sh = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 30 ]; do /bin/sleep 0.00$((i % 5 + 5)); "
                                            "i=$((i+1)); done"])
    try:
        sh.wait(timeout=60)
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait()
    emits: list[tuple[Kind, dict[str, Any]]] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.3)
        emits += probe.collect(False)
        if any(k is Kind.PROCESS_EXIT and p["pid"] == sh.pid for k, p in emits):
            time.sleep(0.6)  # the last window closes
            emits += probe.collect(False)
            break
    starts = [p for k, p in emits if k is Kind.PROCESS_START and p["ppid"] == sh.pid]
    assert starts and {p["exe"] for p in starts} == {SLEEP}
    assert {p["cmdline"] for p in starts} <= {f"/bin/sleep 0.00{n}" for n in range(5, 10)}
    assert all(p["parents"][0] == SH and p["user"] == "root" and "missing" not in p for p in starts)
    assert sum(p.get("count", 1) for p in starts) == 30  # every run, one by one or counted
    assert len(starts) < 30


def test_exec_storm_is_aggregated_and_counts_add_up(source: ExecSource) -> None:
    probe = ProcessProbe(0.5, 600, exec_source=source, exec_window_s=1.0)
    probe.collect(True)
    drained = 0
    real_drain = source.drain

    def counting_drain() -> list[ExecRecord | ExitRecord]:
        nonlocal drained
        items = real_drain()
        drained += sum(isinstance(r, ExecRecord) for r in items)
        return items

    source.drain = counting_drain  # type: ignore[method-assign]
    began = time.monotonic()
    sh = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 1500 ]; do /bin/true $i; i=$((i+1)); done"])
    emits: list[tuple[Kind, dict[str, Any]]] = []
    try:
        while sh.poll() is None:
            time.sleep(0.3)
            emits += probe.collect(False)
    finally:
        if sh.poll() is None:
            sh.kill()
        sh.wait()
    time.sleep(1.2)
    emits += probe.collect(False)  # the last windows close
    windows = (time.monotonic() - began) / probe.storms.window_s + 1  # a loaded machine runs the loop longer
    emits += [(Kind.PROCESS_START, {**rec_payload, "count": n})
              for rec_payload, n in ((probe.exec_item(r), n) for r, n in probe.storms.flush())]
    starts = [p for k, p in emits if k is Kind.PROCESS_START]
    ours = [p for p in starts if p["ppid"] == sh.pid and p["exe"] == TRUE]
    seen_ours = sum(p.get("count", 1) for p in ours)
    shed = probe.take_shed()
    print(f"storm: {seen_ours} /bin/true execs read with their identity, reported in {len(ours)} events; "
          f"{source.execs_seen} execs seen in all, shed {shed}")
    # the kernel reports every exec; /bin/true lives well under a millisecond, so how many are still there to
    # read when their event is handled depends on the machine's load (60-90 % when quiet, a third in one
    # CI run: a figure for the benchmark, not a test); a storm must still be read, not only counted
    assert source.execs_seen >= 1500
    assert seen_ours >= 150
    # per kind, one report at first, then one counted report per window; under load some execs are read
    # mid-exec (command line still empty): a second kind, aggregated the same way
    kinds: dict[str, int] = {}
    for p in ours:
        key = normalise(p["cmdline"])
        kinds[key] = kinds.get(key, 0) + 1
    assert set(kinds) <= {normalise(f"{TRUE} 0"), normalise("/bin/true 0"), ""}, kinds
    assert all(n <= 2 + windows for n in kinds.values()), kinds
    # every exec read is accounted for: reported alone, in a count, or shed as one kind too many
    assert sum(p.get("count", 1) for p in starts) + shed.get("exec_events_kinds", 0) == drained


def no_netlink(*_args: object, **_kw: object) -> socket.socket:
    raise OSError(97, "Address family not supported by protocol")


def test_connector_unavailable_falls_back_to_fanotify_and_says_so(
        monkeypatch: pytest.MonkeyPatch, agent_settings: CollectorSettings) -> None:
    monkeypatch.setattr(exec_events_module.socket, "socket", no_netlink)
    probes = build_probes(agent_settings)
    processes = next(p for p in probes if isinstance(p, ProcessProbe))
    try:
        assert processes.mode == "fanotify" and isinstance(processes.exec_source, FanotifySource)
        assert processes.source_info() == {"mode": "fanotify"}
        assert signals.process_source.labels("fanotify")._value.get() == 1
        assert signals.process_source.labels("connector")._value.get() == 0
        processes.collect(True)
        pid = run_and_wait(["/bin/sh", "-c", "exec /bin/sleep 0.01"])
        emits: list[tuple[Kind, dict[str, Any]]] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not any(k is Kind.PROCESS_EXIT and p["pid"] == pid for k, p in emits):
            time.sleep(0.2)
            emits += processes.collect(False)
        mine = [p for k, p in emits if k is Kind.PROCESS_START and p["pid"] == pid]
        assert [p["exe"] for p in mine] == [SH, SLEEP] and mine[1]["cmdline"] == "/bin/sleep 0.01"
        assert all(p["source"] == "fanotify" for p in mine)
    finally:
        processes.close()


def test_connector_unavailable_falls_back_to_polling_and_says_so(
        monkeypatch: pytest.MonkeyPatch, agent_settings: CollectorSettings) -> None:
    monkeypatch.setattr(exec_events_module.socket, "socket", no_netlink)
    with pytest.raises(ExecSourceUnavailable, match="no netlink connector socket"):
        ExecSource().open()

    def no_fanotify(_self: FanotifySource) -> None:
        raise ExecSourceUnavailable("fanotify_init refused: test")

    monkeypatch.setattr(FanotifySource, "open", no_fanotify)
    settings = agent_settings.copy(process_source="auto")
    probes = build_probes(settings)
    processes = next(p for p in probes if isinstance(p, ProcessProbe))
    assert processes.mode == "poll" and processes.exec_source is None
    assert signals.process_source.labels("poll")._value.get() == 1
    assert signals.process_source.labels("connector")._value.get() == 0
    agent = Agent(settings, UNREACHABLE, probes=probes)
    try:
        kind, hello = agent.hello()
        assert kind is Kind.HELLO
        assert hello["process_source"]["mode"] == "poll"
        assert "no netlink connector socket" in hello["process_source"]["reason"]
        assert "fanotify_init refused: test" in hello["process_source"]["reason"]
        assert agent.heartbeat()[1]["process_source"]["mode"] == "poll"
    finally:
        agent.delivery.close()
    # the poll still sees a process that lives a few seconds
    first = processes.collect(True)
    assert any(k is Kind.PROCESS_INVENTORY for k, _ in first)
    p = subprocess.Popen(["/bin/sleep", "3"])
    try:
        time.sleep(0.3)
        started = [e for k, e in processes.collect(False) if k is Kind.PROCESS_START and e["pid"] == p.pid]
        assert started and started[0]["exe"] == SLEEP
    finally:
        p.kill()
        p.wait()


def test_other_reasons_to_poll_are_named(agent_settings: CollectorSettings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_exec_source(agent_settings.copy(process_source="poll")) == (
        None, "configured: process_source=poll")
    other = open_exec_source(agent_settings.copy(proc=tmp_path))
    assert other[0] is None and "own pids only" in other[1]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert open_exec_source(agent_settings) == (None, "not root: the process events connector needs root")


def test_connector_mode_is_reported_and_a_reader_failure_falls_back(agent_settings: CollectorSettings) -> None:
    probes = build_probes(agent_settings)
    processes = next(p for p in probes if isinstance(p, ProcessProbe))
    try:
        assert processes.source_info() == {"mode": "connector", "reader": "native"}
        assert signals.process_source.labels("connector")._value.get() == 1
        processes.collect(True)
        assert processes.exec_source is not None
        processes.exec_source.failed = "reading process events failed: test"
        processes.collect(False)
        assert processes.source_info() == {"mode": "poll", "reason": "reading process events failed: test"}
        assert signals.process_source.labels("poll")._value.get() == 1
        p = subprocess.Popen(["/bin/sleep", "3"])
        try:
            time.sleep(0.3)
            started = [e for k, e in processes.collect(False) if k is Kind.PROCESS_START and e["pid"] == p.pid]
            assert started and started[0]["exe"] == SLEEP
        finally:
            p.kill()
            p.wait()
    finally:
        processes.close()


def test_exec_command_lines_are_redacted(source: ExecSource) -> None:
    probe = ProcessProbe(0.5, 600, exec_source=source)
    probe.collect(True)
    pid = run_and_wait(["/bin/sh", "-c", "/bin/sleep 0.2; true", "--password=hunter2"])
    emits: list[tuple[Kind, dict[str, Any]]] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not any(k is Kind.PROCESS_EXIT and p["pid"] == pid for k, p in emits):
        time.sleep(0.1)
        emits += probe.collect(False)
    mine = [p for k, p in emits if k is Kind.PROCESS_START and p["pid"] == pid]
    assert mine, "the exec was not reported"
    assert mine[0]["exe"] == SH
    assert mine[0]["cmdline"] == "/bin/sh -c /bin/sleep 0.2; true --password=***"
    assert not [p for _, p in emits if "hunter2" in str(p)]


def test_close_wakes_the_reader_it_does_not_wait_for_its_timeout() -> None:
    src = ExecSource(native=False)
    src.open()
    assert src._sock is not None and src._thread is not None
    # a read that would wait 30 s: only close()'s own datagram can end it within the join
    src._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))
    time.sleep(1.5)  # the reader is back in a read with the new timeout (the old one is 1 s)
    thread = src._thread
    src.close()
    assert not thread.is_alive()


def test_close_wakes_the_native_reader_it_does_not_wait_for_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    src = ExecSource(native=True)
    monkeypatch.setattr(exec_events_module, "RECV_TIMEOUT_S", 30.0)  # the C reader's wait for a first exec
    src.open()
    assert src._thread is not None
    time.sleep(0.5)
    thread = src._thread
    started = time.monotonic()
    src.close()  # joins for up to 31 s: returning at once means close()'s datagram woke the reader
    assert not thread.is_alive() and time.monotonic() - started < 10.0


def test_the_native_reader_is_built_here() -> None:
    assert exec_events_module._execread is not None, (
        "collectors/probes/_execread.c was not compiled: reinstall with a C compiler (pip install -e .)")
    assert ExecSource().reader == "native"
    assert ExecSource(proc=Path("/tmp")).reader == "python"  # a fake /proc: only Python reads its files


def test_two_native_readers_in_one_process_each_see_every_exec() -> None:
    sources = [ExecSource(native=True) for _ in range(2)]  # their C readers share the module's caches
    for src in sources:
        src.open()
    try:
        me = os.path.realpath(f"/proc/{os.getpid()}/exe")
        pids = [run_and_wait(["/bin/sleep", "0.005"]) for _ in range(40)]
        for src in sources:
            got = [r for r in drain_until(src, set(pids), execs_each=1) if isinstance(r, ExecRecord)]
            mine = {r.pid: r for r in got if r.pid in pids}
            assert set(mine) == set(pids)
            assert all(r.exe == SLEEP and r.parent_exe == me and r.missing == [] for r in mine.values())
    finally:
        for src in sources:
            src.close()
