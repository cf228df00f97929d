"""Peer deviation: a host's metric far from its cohort's peers at the same time.

Statistics are robust and across hosts, not over a host's own history: median and MAD of the latest
value of every live host of the cohort (recomputed lazily every `refresh_s` of event time). A cohort-wide
traffic spike moves the median with it, so it does not alert; one host doing something its clones do not
does. A deviation must be material (an absolute and a relative difference) and persist for
`persistence` consecutive observations of that host.
"""

from __future__ import annotations

import math
from statistics import median

from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.store_keys import STREAKS
from detectors.types import Observation

DEFAULT_MIN_ABS = {
    "cpu_pct": 30.0,
    "mem_pct": 20.0,
    "load1": 1.5,
    "load5": 1.5,
    "load15": 1.5,
    "swap_pct": 10.0,
    "procs": 25.0,
    "conns": 100.0,
    "auth_failures": 20.0,
    "failed_logins": 20.0,
    "proc_restarts": 5.0,
    "proc_starts": 30.0,
}
"""Minimum absolute difference from the peer median per metric (others: only the relative rule)."""


class PeerDeviation(Detector):
    """Robust z-score of a host's metric against its cohort's live peers."""

    name = "peers"

    def __init__(
        self,
        min_z: float = 5.0,
        min_rel: float = 0.5,
        min_abs: dict[str, float] | None = None,
        persistence: int = 5,
        window_s: float = 180.0,
        refresh_s: float = 10.0,
        min_peers: int = 5,
        two_sided: bool = False,
        baseline: CohortBaseline | None = None,
    ) -> None:
        super().__init__(baseline)
        self.min_z = float(min_z)
        self.min_rel = float(min_rel)
        self.min_abs = dict(DEFAULT_MIN_ABS if min_abs is None else min_abs)
        self.persistence = int(persistence)
        self.window_s = float(window_s)
        self.refresh_s = float(refresh_s)
        self.min_peers = int(min_peers)
        self.two_sided = bool(two_sided)
        self._stats: dict[tuple[str, str], tuple[float, float, int, float, int]] = {}

    def __getstate__(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["_stats"] = {}
        return d

    def stats(self, image: str, metric: str, now: float) -> tuple[float, float, int]:
        """(median, scale, peers) of a metric across the cohort's live hosts; scale is 1.4826 * MAD."""
        key = (image, metric)
        cached = self._stats.get(key)
        version = self.baseline.version
        if cached is not None and now - cached[3] < self.refresh_s and cached[4] == version:
            return cached[0], cached[1], cached[2]
        values = self.baseline.peer_values(image, metric, now, self.window_s)
        if not values:
            self._stats[key] = (0.0, 0.0, 0, now, version)
            return 0.0, 0.0, 0
        med = median(values)
        mad = median([abs(v - med) for v in values])
        scale = 1.4826 * mad
        if scale == 0.0:
            scale = sum(abs(v - med) for v in values) / len(values)
        self._stats[key] = (med, scale, len(values), now, version)
        return med, scale, len(values)

    def deviation(self, image: str, metric: str, value: float, now: float) -> tuple[float, float, float, int]:
        """(z, median, scale, peers); z is 0 when the difference is not material or peers are too few."""
        med, scale, n = self.stats(image, metric, now)
        if n < self.min_peers:
            return 0.0, med, scale, n
        diff = value - med
        if not self.two_sided and diff < 0:
            return 0.0, med, scale, n
        if abs(diff) < max(self.min_abs.get(metric, 0.0), self.min_rel * abs(med), 1e-9):
            return 0.0, med, scale, n
        z = diff / max(scale, 0.05 * abs(med), 1e-9)
        return z, med, scale, n

    def z_score(self, z: float) -> float:
        """Map |z| to [0, 1): 0.5 at the alert threshold."""
        return 1.0 - math.exp(-abs(z) * math.log(2) / self.min_z)

    def score_one(self, obs: Observation) -> float:
        if not obs.metrics:
            return 0.0
        now = obs.time.timestamp()
        best = 0.0
        for metric, value in obs.metrics.items():
            z = self.deviation(obs.image_id, metric, value, now)[0]
            if z:
                best = max(best, self.z_score(z))
        return best

    def update_streak(self, host: str, metric: str, deviating: bool) -> int:
        """Consecutive deviating observations of (host, metric); writes only when it changes."""
        key = STREAKS.key(host)
        cur = self.baseline.store.get(key) or {}
        old = int(cur.get(metric, 0))
        new = old + 1 if deviating else 0
        if new != old:
            cur = dict(cur)
            if new:
                cur[metric] = new
            else:
                cur.pop(metric, None)
            if cur:
                self.baseline.store[key] = cur
            else:
                self.baseline.store.pop(key, None)
        return new

    def forget(self, host: str) -> None:
        self.baseline.store.pop(STREAKS.key(host), None)
