"""Exits in the event modes come from a /proc listing, skipped when the machine created and ended no task
since the last one (/proc/loadavg's task count and last pid). The skip must never hide or delay an exit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from collector_helpers import QueuedSource
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.probes import ProcessProbe
from contract.events import Kind


class Machine:
    """A machine's tasks as /proc/loadavg and a /proc listing show them."""

    def __init__(self, loadavg: Path) -> None:
        self.loadavg = loadavg
        self.last_pid = 100
        self.threads = 0
        self.alive: set[int] = {1}
        self.listings = 0
        self.write()

    def write(self) -> None:
        self.loadavg.write_text(f"0.10 0.20 0.30 1/{len(self.alive) + self.threads} {self.last_pid}\n")

    def spawn(self) -> None:
        self.last_pid += 1
        self.alive.add(self.last_pid)
        self.write()

    def end(self, i: int) -> None:
        pids = sorted(self.alive - {1})
        if pids:
            self.alive.discard(pids[i % len(pids)])
            self.write()

    def thread(self, start: bool) -> None:
        if start:
            self.last_pid += 1
            self.threads += 1
        elif self.threads:
            self.threads -= 1
        self.write()

    def listing(self) -> set[int]:
        self.listings += 1
        return set(self.alive)


def probe_on(machine: Machine, gated: bool) -> ProcessProbe:
    probe = ProcessProbe(exec_source=QueuedSource(max_reads_per_s=1e9))
    probe.tasks_file = str(machine.loadavg) if gated else None
    probe.pids = machine.listing  # type: ignore[method-assign]
    probe.read = lambda pid: {"pid": pid, "ppid": 1, "exe": "/bin/x", "cmdline": "x", "user": "root",  # type: ignore[method-assign]
                              "start_time": 1.0, "name": "x"}
    return probe


def exits(probe: ProcessProbe, full: bool = False) -> list[int]:
    return [p["pid"] for k, p in probe.collect(full) if k is Kind.PROCESS_EXIT]


def test_no_listing_while_no_task_is_created_or_ended(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "loadavg")
    for _ in range(3):
        machine.spawn()
    probe = probe_on(machine, gated=True)
    probe.collect(full=True)  # the inventory lists /proc itself
    assert exits(probe) == [] and machine.listings == 2  # the first cycle lists: nothing to compare with
    for _ in range(5):
        assert exits(probe) == []
    assert machine.listings == 2
    machine.end(0)
    assert exits(probe) == [101] and machine.listings == 3
    machine.thread(start=True)  # a thread started: listed again, nothing ended
    assert exits(probe) == [] and machine.listings == 4


Step = tuple[str, int]
steps = st.lists(st.tuples(st.sampled_from(["spawn", "end", "thread+", "thread-", "cycle", "inventory"]),
                           st.integers(0, 50)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_skip_reports_every_exit_in_the_same_cycle_as_listing_every_time(plan: list[Step]) -> None:
    """Any sequence of process and thread starts and ends between cycles: the gated probe reports the
    same exits, cycle by cycle, as a probe that lists /proc every cycle."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        machine = Machine(Path(d) / "loadavg")
        gated, listing = probe_on(machine, gated=True), probe_on(machine, gated=False)
        gated.collect(full=True)
        listing.collect(full=True)
        for what, i in plan:
            if what == "spawn":
                machine.spawn()
            elif what == "end":
                machine.end(i)
            elif what in ("thread+", "thread-"):
                machine.thread(start=what == "thread+")
            else:
                full = what == "inventory"
                assert exits(gated, full) == exits(listing, full)
                assert set(gated.known) == set(listing.known)


def test_a_real_process_that_ends_is_reported_at_the_next_cycle() -> None:
    """On this machine's /proc and /proc/loadavg: a child that ends is reported gone at the next cycle."""
    probe = ProcessProbe(exec_source=QueuedSource(max_reads_per_s=1e9))
    assert probe.tasks_file is not None, "the tests run in the initial PID namespace"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in probe.known and time.monotonic() < deadline:
            probe.collect(full=True)
        assert child.pid in probe.known
        probe.collect(full=False)
    finally:
        child.kill()
        child.wait()
    reported: list[dict[str, Any]] = [p for k, p in probe.collect(full=False) if k is Kind.PROCESS_EXIT]
    assert child.pid in [p["pid"] for p in reported]
