"""Calibration: one knob for noise (false alarms per 1,000 host-hours) instead of fixed thresholds.

Two small online pieces, both pure and bounded:

- `Cadence` learns each host's reporting interval (the median of its last few intervals), so windows
  and rates follow the data (10 s, 1 min or 5 min reports) instead of a fixed number of seconds.
- `TailCalibrator` keeps, per key (a host and a detector), a histogram of the detector's raw scores on
  data it did not flag, and answers the raw score that is exceeded with probability `p`: the empirical
  quantile when there is enough data for it, else a peaks-over-threshold extrapolation (an exponential
  tail fitted above the 98th percentile: threshold = u + mean excess x ln(0.02 / p)). With `margin` m the
  mean excess of the n scores above u is taken at its upper confidence bound, x (1 + m / sqrt(n)): a young
  calibration has seen few tail scores and underestimates the tail (its thresholds would then start low and
  creep up as rarer scores arrive, each early one a false alarm); the margin shrinks as the tail fills.

A budget of B false alarms per 1,000 host-hours at a cadence of r reports per hour is an exceedance
probability per report of p = B / (1000 x r) (`report_probability`). A run of consecutive exceedances is
reported once, so the rate of findings stays at or below the budget.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from statistics import median

_EDGES: list[float] = [0.0] + [10 ** (-3 + k / 16) for k in range(0, 16 * 8 + 1)]
"""Histogram edges of raw scores: 0, then log-spaced from 1e-3 to 1e5 (16 bins per decade)."""
BINS = len(_EDGES)
"""Bins per key: one per edge (the last is open-ended)."""

TAIL_LEVEL = 0.02
"""Exceedance probability of the tail's starting point u (the 98th percentile)."""


def report_probability(budget_per_1000h: float, interval_s: float) -> float:
    """Exceedance probability per report that gives `budget_per_1000h` alarms at one report per `interval_s`."""
    reports_per_hour = 3600.0 / max(interval_s, 1e-3)
    return min(0.5, budget_per_1000h / 1000.0 / reports_per_hour)


class Cadence:
    """Each key's reporting interval: the median of its last `keep` intervals (None until it has one)."""

    def __init__(self, keep: int = 7) -> None:
        self.keep = int(keep)
        self.last: dict[str, float] = {}
        self.gaps: dict[str, list[float]] = {}
        self._median: dict[str, float] = {}
        """key -> the median of its gaps, kept as they change (asked for several times per report)."""

    def observe(self, key: str, t: float) -> None:
        prev = self.last.get(key)
        if prev is not None and t <= prev:
            return  # a repeated or late report says nothing about the interval
        self.last[key] = t
        if prev is None:
            return
        gaps = self.gaps.setdefault(key, [])
        gaps.append(t - prev)
        if len(gaps) > self.keep:
            del gaps[0]
        self._median[key] = median(gaps)

    def interval(self, key: str) -> float | None:
        return self._median.get(key)

    def forget(self, key: str) -> None:
        self.last.pop(key, None)
        self.gaps.pop(key, None)
        self._median.pop(key, None)

    def to_json(self, key: str) -> list[float]:
        return [self.last.get(key, 0.0), *self.gaps.get(key, [])]

    def load(self, key: str, value: list[float]) -> None:
        if value:
            self.last[key] = float(value[0])
            self.gaps[key] = [float(x) for x in value[1:]][-self.keep :]
            if self.gaps[key]:
                self._median[key] = median(self.gaps[key])
            else:
                self._median.pop(key, None)


class TailCalibrator:
    """Per key, the raw score exceeded with probability p on unflagged data (None while warming up).

    Memory per key: one histogram of `BINS` counts and at most `delay` waiting scores. Counts are halved once
    they reach `horizon` in all, so the calibration follows slow changes and never grows.

    `submit` counts a score `delay` scores later, unless a score at or above the threshold comes first: then
    the waiting scores are dropped as the run-up of what was flagged. A statistic that builds up over several
    reports (a smoothed score, a level shift) would otherwise count its own rise before it crosses the
    threshold, and raise the threshold ahead of itself.
    """

    def __init__(self, min_count: int = 500, horizon: int = 200_000, delay: int = 0, margin: float = 0.0) -> None:
        if margin < 0.0:
            raise ValueError(f"margin must be >= 0, got {margin}: it widens a young tail estimate, never narrows it")
        self.min_count = int(min_count)
        self.horizon = int(horizon)
        self.delay = int(delay)
        self.margin = float(margin)
        self.hists: dict[str, list[float]] = {}
        self.totals: dict[str, float] = {}
        self.waiting: dict[str, deque[float]] = {}
        self._cache: dict[tuple[str, float], tuple[float, float]] = {}

    def __getstate__(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["_cache"] = {}
        return d

    def add(self, key: str, raw: float) -> None:
        """Count one raw score of data the detector did not flag."""
        hist = self.hists.get(key)
        if hist is None:
            hist = self.hists[key] = [0.0] * BINS
        i = max(0, bisect_right(_EDGES, max(raw, 0.0)) - 1)
        hist[i] += 1.0
        total = self.totals.get(key, 0.0) + 1.0
        if total >= self.horizon:
            for k in range(BINS):
                hist[k] *= 0.5
            total *= 0.5
        self.totals[key] = total

    def submit(self, key: str, raw: float, threshold: float | None) -> None:
        """Count a score of the data: at or above `threshold` (flagged) at once, capped at 1.5 x threshold
        (left out, the tail would be cut and the threshold would creep down; in full, real anomalies would
        raise it), and the scores waiting before it dropped; else `delay` scores later."""
        if threshold is not None and raw >= threshold:
            self.waiting.pop(key, None)
            self.add(key, min(raw, 1.5 * threshold))
            return
        if self.delay <= 0:
            self.add(key, raw)
            return
        waiting = self.waiting.get(key)
        if waiting is None:
            waiting = self.waiting[key] = deque()
        waiting.append(raw)
        if len(waiting) > self.delay:
            self.add(key, waiting.popleft())

    def count(self, key: str) -> float:
        return self.totals.get(key, 0.0)

    def threshold(self, key: str, p: float) -> float | None:
        """The raw score exceeded with probability `p`, or None before `min_count` scores were counted."""
        total = self.totals.get(key, 0.0)
        if total < self.min_count:
            return None
        cached = self._cache.get((key, p))
        if cached is not None and cached[0] == total:
            return cached[1]
        hist = self.hists[key]
        thr = _threshold(hist, total, p, self.margin)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[(key, p)] = (total, thr)
        return thr

    def forget(self, key: str) -> None:
        self.hists.pop(key, None)
        self.totals.pop(key, None)
        self.waiting.pop(key, None)

    def to_json(self, key: str) -> list[float]:
        """The key's histogram as a short list: [total, (bin, count) pairs of non-empty bins ...]."""
        hist = self.hists.get(key, [])
        out = [round(self.totals.get(key, 0.0), 3)]
        for i in [i for i, c in enumerate(hist) if c]:
            out += (float(i), round(hist[i], 3))
        return out

    def load(self, key: str, value: list[float]) -> None:
        if not value:
            return
        hist = [0.0] * BINS
        for i in range(1, len(value) - 1, 2):
            b = int(value[i])
            if 0 <= b < BINS:
                hist[b] = float(value[i + 1])
        self.hists[key] = hist
        self.totals[key] = float(value[0])


def _upper(i: int) -> float:
    return _EDGES[i + 1] if i + 1 < BINS else _EDGES[i] * 10 ** (1 / 16)


_UPPER: list[float] = [_upper(i) for i in range(BINS)]


def _quantile(hist: list[float], total: float, tail: float) -> float:
    """The score exceeded by a share `tail` of the counts (linear within a bin)."""
    need = tail * total
    above = 0.0
    for i in range(BINS - 1, -1, -1):
        c = hist[i]
        if c and above + c >= need:
            lo, hi = _EDGES[i], _UPPER[i]
            frac = (need - above) / c  # share of this bin that lies above the answer
            return hi - frac * (hi - lo)
        above += c
    return 0.0


def _threshold(hist: list[float], total: float, p: float, margin: float = 0.0) -> float:
    if p * total >= 20.0:  # enough data above: the empirical quantile
        return _quantile(hist, total, p)
    u = _quantile(hist, total, TAIL_LEVEL)
    excess, n = 0.0, 0.0
    # bins below the one holding u lie wholly under it: start there (the same sum, in the same order)
    for i in range(max(0, bisect_right(_EDGES, u) - 1), BINS):
        c = hist[i]
        if not c:
            continue
        lo, hi = _EDGES[i], _UPPER[i]
        if hi <= u:
            continue
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        # the part of the bin above u, at its (geometric) middle
        part = c if lo >= u else c * (hi - u) / (hi - lo)
        x = mid if lo >= u else (u + hi) / 2
        excess += part * (x - u)
        n += part
    beta = excess / n if n else max(u, 1e-3) * 0.1
    if margin > 0.0:  # the mean excess at its upper confidence bound: wide while few tail scores were seen
        beta *= 1.0 + margin / math.sqrt(max(n, 1.0))
    return u + beta * math.log(TAIL_LEVEL / p)
