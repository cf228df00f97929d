"""Self-limits: the agent measures its own CPU and memory and, when over budget, slows its probes down
(each degrade level doubles every probe interval) instead of crashing or being killed. It steps back up
once it has been well under budget for a while.

CPU counts the agent's own work only: every thread of the process except the Kafka client's (librdkafka
names its threads "rdk:..."), read from /proc/self/task/<tid>/stat. The client's threads are measured apart
(gauge herdwatch_collector_kafka_client_cpu_pct): while the network misbehaves they must not make the agent
shed probe runs, and they are the ones to watch for a spinning client."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import deque
from collections.abc import Callable

import psutil

from collectors import signals

log = logging.getLogger("herdwatch.collector")

Sample = tuple[float, float]  # (cpu seconds used so far, rss bytes)


CLIENT_THREAD_PREFIX = "rdk:"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def thread_cpu(task_dir: str = "/proc/self/task") -> tuple[float, float]:
    """(CPU seconds of the agent's own threads, CPU seconds of the Kafka client's threads), live threads only.
    Each stat file in one read (open, read, close), no buffered file object."""
    own = client = 0.0
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            fd = os.open(f"{task_dir}/{tid}/stat", _READ_FLAGS)
        except OSError:  # the thread just ended
            continue
        try:
            stat = os.read(fd, 4096).decode(errors="replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 13:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        if comm.startswith(CLIENT_THREAD_PREFIX):
            client += seconds
        else:
            own += seconds
    return own, client


def own_usage(proc: psutil.Process | None = None) -> Sample:
    """The agent's own CPU seconds (Kafka client threads excluded) and the process's RSS."""
    p = proc or psutil.Process()
    own, _ = thread_cpu()
    return own, float(p.memory_info().rss)


class _OwnSampler:
    """`own_usage` that keeps the Kafka client's seconds of the same reading of the threads, so a check reads
    every thread's stat once, not once for each figure."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.client: float | None = None

    def __call__(self) -> Sample:
        own, self.client = thread_cpu()
        return own, float(self.proc.memory_info().rss)


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
        self._own: _OwnSampler | None = None
        if sample is None:
            sample = self._own = _OwnSampler()
        self._sample = sample
        self.samples: deque[tuple[float, float]] = deque()
        self.client_samples: deque[tuple[float, float]] = deque()
        self.client_cpu_pct = 0.0
        self.level = 0
        self.cpu_pct = 0.0
        self.rss_bytes = 0.0
        self.peak_rss = 0.0
        self._last_change = clock()
        self._last_check = -1e18
        self._under_since: float | None = None

    def _client_check(self, now: float) -> None:
        """The Kafka client's threads, over the same window: reported, never counted against the budget."""
        own = self._own
        client = own.client if own is not None and own.client is not None else thread_cpu()[1]
        self.client_samples.append((now, client))
        while len(self.client_samples) > 2 and now - self.client_samples[1][0] >= self.window:
            self.client_samples.popleft()
        t0, c0 = self.client_samples[0]
        if now - t0 > 0:
            self.client_cpu_pct = max(0.0, 100.0 * (client - c0) / (now - t0))
        signals.kafka_client_cpu_pct.set(self.client_cpu_pct)

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
        if now - t0 > 0:  # a thread that ended takes its seconds with it: never below zero
            self.cpu_pct = max(0.0, 100.0 * (cpu - c0) / (now - t0))
        self._client_check(now)
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
