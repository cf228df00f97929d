"""Self-limits: the agent measures its own CPU and memory and, when over budget, slows its probes down
(each degrade level doubles every probe interval) instead of crashing or being killed. It steps back up
once it has been well under budget for a while."""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from collections.abc import Callable

import psutil

from collectors import signals

log = logging.getLogger("herdwatch.collector")

Sample = tuple[float, float]  # (cpu seconds used so far, rss bytes)


def own_usage(proc: psutil.Process | None = None) -> Sample:
    p = proc or psutil.Process()
    t = p.cpu_times()
    return t.user + t.system, float(p.memory_info().rss)


class Budget:
    def __init__(self, cpu_pct: float = 2.0, rss_mb: float = 80.0, window_s: float = 60.0, max_level: int = 4,
                 sample: Callable[[], Sample] | None = None, clock: Callable[[], float] = time.monotonic,
                 check_every_s: float = 5.0) -> None:
        self.cpu_budget = cpu_pct
        self.rss_budget = rss_mb * 1024 * 1024
        self.window = window_s
        self.max_level = max_level
        self.clock = clock
        self.check_every = check_every_s
        proc = psutil.Process()
        self._sample = sample or (lambda: own_usage(proc))
        self.samples: deque[tuple[float, float]] = deque()
        self.level = 0
        self.cpu_pct = 0.0
        self.rss_bytes = 0.0
        self.peak_rss = 0.0
        self._last_change = clock()
        self._last_check = -1e18
        self._under_since: float | None = None

    @property
    def factor(self) -> int:
        return 2 ** self.level

    def check(self) -> bool:
        """Sample and maybe change level; True when the level changed."""
        now = self.clock()
        if now - self._last_check < self.check_every:
            return False
        self._last_check = now
        cpu, rss = self._sample()
        self.samples.append((now, cpu))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        if now - t0 > 0:
            self.cpu_pct = 100.0 * (cpu - c0) / (now - t0)
        self.rss_bytes = rss
        self.peak_rss = max(self.peak_rss, rss)
        signals.own_cpu_pct.set(self.cpu_pct)
        signals.own_rss_bytes.set(rss)
        covered = now - t0 >= min(self.window, 30.0) / 2
        over = (covered and self.cpu_pct > self.cpu_budget) or rss > self.rss_budget
        if rss > self.rss_budget:
            gc.collect()
        changed = False
        if over:
            self._under_since = None
            if self.level < self.max_level and now - self._last_change >= self.window / 2:
                self.level += 1
                changed = True
                signals.degrade_changes.emit(direction="down")
                log.warning("over budget (cpu %.2f%% of %.2f%%, rss %.0f MB of %.0f MB): probes now run "
                            "%dx slower", self.cpu_pct, self.cpu_budget, rss / 2**20, self.rss_budget / 2**20,
                            self.factor)
        elif self.level and self.cpu_pct < self.cpu_budget / 2 and rss < self.rss_budget * 0.8:
            self._under_since = self._under_since if self._under_since is not None else now
            if now - self._under_since >= 2 * self.window:
                self.level -= 1
                self._under_since = None
                self._last_change = now
                changed = True
                signals.degrade_changes.emit(direction="up")
                log.info("back under budget: probes now run %dx slower than configured", self.factor)
        if changed and over:
            self._last_change = now
        signals.degrade_level.set(self.level)
        return changed
