"""Probe time budgets: every probe runs in its own worker thread, and the agent waits for it at most its
budget. A probe still running after its budget (blocked in a system call that could not be made
non-blocking, e.g. a file on a hung network mount, or just very slow) is reported once (signal
`collector_probe_stuck` and a warning) and is not started again until that run returns; the other
probes go on meanwhile. When the stuck run returns, its events are used (late, not lost) and the probe
runs on its normal rhythm again.

Worker threads are daemon threads: a probe stuck for good never keeps the agent from stopping.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from collectors import signals
from collectors.probes.base import Emit, Probe

log = logging.getLogger("herdwatch.collector")

WAIT_SLICE_S = 0.05
"""How often a waiting agent looks at its stop flag (SIGTERM is acted on within this)."""


class ProbeWorker:
    """One probe's thread: runs one collect(full) at a time and hands back its events or its error."""

    def __init__(self, probe: Probe, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.clock = clock
        self._jobs: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: list[Emit] = []
        self._error: BaseException | None = None
        self.started_at: float | None = None
        """Monotonic start of the run in progress (None when idle or its result is waiting)."""
        self.stuck = False
        """The run in progress overran its budget (reported once)."""
        self._thread = threading.Thread(target=self._loop, name=f"probe-{probe.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            full = self._jobs.get()
            try:
                self._result, self._error = self.probe.collect(full), None
            except BaseException as e:  # handed to the agent, which counts and logs it
                self._result, self._error = [], e
            self._done.set()

    @property
    def running(self) -> bool:
        """A run was started and its result has not been taken yet."""
        return self.started_at is not None

    def start(self, full: bool) -> None:
        self._done.clear()
        self.started_at = self.clock()
        self._jobs.put(full)

    def wait(self, budget: float, stop: threading.Event) -> bool:
        """Wait up to `budget` seconds (less if `stop` is set); True when the run has returned."""
        deadline = time.monotonic() + budget
        while not self._done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                return False
            self._done.wait(min(remaining, WAIT_SLICE_S))
        return True

    def take(self) -> list[Emit]:
        """The finished run's events (raises its error); the worker is idle afterwards."""
        self.started_at, self.stuck = None, False
        result, error = self._result, self._error
        self._result, self._error = [], None
        if error is not None:
            raise error
        return result

    @property
    def done(self) -> bool:
        return self._done.is_set()


class ProbeRunner:
    """Runs probes with time budgets (see the module doc)."""

    def __init__(self, default_budget: float, budgets: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default_budget = default_budget
        self.budgets = dict(budgets or {})
        self.clock = clock
        self.workers: dict[str, ProbeWorker] = {}
        self.skipped: dict[str, int] = {}

    def budget(self, probe: Probe) -> float:
        return self.budgets.get(probe.name, self.default_budget)

    def stuck(self) -> dict[str, float]:
        """Probes whose run overran its budget and has not returned: name -> seconds running."""
        now = self.clock()
        return {name: round(now - w.started_at, 3) for name, w in self.workers.items()
                if w.stuck and w.started_at is not None and not w.done}

    def run(self, probe: Probe, full: bool, stop: threading.Event) -> list[Emit]:
        """The probe's events from this run (or a late run that has just returned); [] if it overran its
        budget, is still stuck, or the agent is stopping. Raises what the probe raised."""
        worker = self.workers.get(probe.name)
        if worker is None:
            worker = self.workers[probe.name] = ProbeWorker(probe, self.clock)
        if worker.running:  # an earlier run overran its budget
            if not worker.done:
                self.skipped[probe.name] = self.skipped.get(probe.name, 0) + 1
                signals.probe_skipped.emit(probe=probe.name)
                return []
            took = self.clock() - (worker.started_at or self.clock())
            log.warning("probe %s returned after %.1f s (budget %.1f s); it runs again on its interval",
                        probe.name, took, self.budget(probe))
            return worker.take()
        worker.start(full)
        if worker.wait(self.budget(probe), stop):
            return worker.take()
        if not stop.is_set():
            worker.stuck = True
            signals.probe_stuck.emit(probe=probe.name)
            log.warning("probe %s did not return within its %.1f s budget; it is skipped until it does, "
                        "the other probes go on", probe.name, self.budget(probe))
        return []
