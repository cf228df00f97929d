"""Self-history: each host against its own normal, for every host (with or without clones).

Per host and metric, a robust level and spread learned online in several views: all reports (`global`),
the hour of the day (24 buckets, UTC) and the day of the week (7 buckets). Each view is an exponentially
weighted mean and mean absolute deviation (x 1.2533, a standard deviation for normal data) of the
values, with each update clipped to level +- `clip_z` spreads, so one spike barely moves it. A value is
judged against every view that has warmed up and counts as unusual only if it is unusual in all of them
(z = the smallest of the views' robust z): a daily peak is usual for its hour, a quiet Sunday for its day.

The host's raw score combines its metrics and its recent reports (`score`): per report, the mean of its
`combine_top` (5) largest metric z, each softly capped at `combine_cap` (10), so a few metrics off together
outweigh one metric with a tiny spread far off; then an exponentially weighted mean over the host's
reports (`smoothing` 0.2, about five reports), so a change that lasts counts more than one odd report.
Its threshold is not a fixed z: a TailCalibrator learns the distribution of the host's raw scores on
unflagged reports and fires above the score that matches `budget` false alarms per 1,000 host-hours at
the host's own reporting interval (Cadence); the report's own combined score is judged too, against a
threshold of its own (a spike is found on its first report), each at half the budget. The per-report
score (`score_one`, the engine's `history` score) is 1 - 2^(-s / clip_z) of s = the larger of the
smoothed score and half the report's combined score: 0.5 when the host's recent reports are on average
`clip_z` spreads off, the same scale for every host, so scores of different hosts rank together; 0.0
while warming up.

It does not learn from what it flags: a flagged report updates the views with a tenth of the weight (a
lasting change of level is absorbed slowly, a spike hardly at all) and counts for calibration only as
1.5 x the threshold (left out, the tail the calibration measures would be cut and the threshold would
creep down; counted in full, real anomalies would inflate it).

Memory per host: at most `max_metrics` metrics x 32 views x 3 numbers, two histograms, a few intervals.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.calibration import Cadence, TailCalibrator, report_probability
from detectors.types import Observation

VIEWS = 1 + 24 + 7
"""global, 24 hours of the day, 7 days of the week."""
_MAD_TO_SIGMA = 1.4826
"""sigma / median absolute deviation for normal data."""
_MEAN_ABS_TO_MAD = 1.2533 / 1.4826
"""(mean absolute deviation / median absolute deviation) for normal data: the spread is kept as a MAD."""


_REPORT = "\x00report"
"""Calibrator key suffix of a host's single-report score (the host's own key: its smoothed score)."""


def views_of(t: float) -> tuple[int, int]:
    """(hour-of-day view, day-of-week view) indices for event time t (UTC; Monday is day 0)."""
    hour = int(t // 3600) % 24
    dow = int(t // 86400 + 3) % 7
    return 1 + hour, 25 + dow


@dataclass(frozen=True)
class MetricJudgement:
    """How far one metric is from its host's own usual: z and the usual range of the view that judged."""

    metric: str
    value: float
    z: float
    level: float
    spread: float
    view: str


class SelfHistory(Detector):
    """Each host's metrics against its own robust, seasonal history; thresholds calibrated to a budget."""

    name = "history"

    def __init__(
        self,
        budget: float = 1.0,
        alpha: float = 1e-4,
        bucket_alpha: float = 2e-3,
        warmup: int = 120,
        bucket_warmup: int = 10,
        clip_z: float = 4.0,
        min_rel: float = 0.01,
        min_spread: float = 1e-3,
        seasonal: bool = True,
        max_metrics: int = 64,
        calibrate_min: int = 500,
        combine_cap: float = 10.0,
        combine_top: int = 5,
        smoothing: float = 0.2,
        baseline: CohortBaseline | None = None,
    ) -> None:
        super().__init__(baseline)
        self.budget = float(budget)
        self.alpha = float(alpha)
        self.bucket_alpha = float(bucket_alpha)
        self.warmup = int(warmup)
        self.bucket_warmup = int(bucket_warmup)
        self.clip_z = float(clip_z)
        self.min_rel = float(min_rel)
        self.min_spread = float(min_spread)
        self.seasonal = bool(seasonal)
        self.max_metrics = int(max_metrics)
        self.combine_cap = float(combine_cap)
        self.combine_top = int(combine_top)
        self.smoothing = float(smoothing)
        self.recent: dict[str, float] = {}
        """host -> its exponentially weighted recent combined score (the raw score that is judged)."""
        self.last: dict[str, tuple[float, float]] = {}
        """host -> (combined, smoothed) score of its last observed report (for the engine's per-report score)."""
        self.state: dict[str, dict[str, list[float]]] = {}
        """host -> metric -> [level, spread, n] x VIEWS."""
        self.cadence = Cadence()
        self.calibrator = TailCalibrator(min_count=calibrate_min)

    # ---- scoring ------------------------------------------------------------------------------------
    def judge(self, host: str, metric: str, value: float, t: float) -> MetricJudgement | None:
        """The metric's robust z against the host's warm views (None while none is warm)."""
        s = self.state.get(host, {}).get(metric)
        if s is None or s[2] < self.warmup:
            return None  # judged only once the host's whole history (the global view) has warmed up
        views = self._views(t)
        chosen = views[0]  # overall, or the hour of the day once that has warmed up
        if len(views) > 1 and s[3 * views[1][0] + 2] >= self.bucket_warmup:
            chosen = views[1]
        best = self._judgement(s, chosen, metric, value)
        if len(views) > 2 and s[3 * views[2][0] + 2] >= self.bucket_warmup:
            # the day of the week excuses a value usual for this weekday (a quiet Sunday) when that view is
            # about as tight as the chosen one (for a daily cycle it is not: it mixes every hour)
            other = self._judgement(s, views[2], metric, value)
            if other.spread <= 2.0 * best.spread and other.z < best.z:
                best = other
        return best

    def _judgement(self, s: list[float], view: tuple[int, str], metric: str, value: float) -> MetricJudgement:
        i = 3 * view[0]
        level, spread = s[i], _MAD_TO_SIGMA * s[i + 1]
        scale = max(spread, self.min_rel * abs(level), self.min_spread)
        return MetricJudgement(metric, value, abs(value - level) / scale, level, spread, view[1])

    def raw(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, MetricJudgement | None]:
        """(the report's combined score over its metrics, the judgement of its most unusual metric).

        The combined score is the mean of the `combine_top` largest z of the report's judged metrics (all
        of them when it has fewer; metrics exactly at their usual level are left out), each capped softly
        at `combine_cap` (above it a metric adds only log(1 + excess)): a few metrics off together count
        more than one metric far off, and one metric whose spread is tiny (a counter that never moved)
        cannot drown the others. With one metric it is that metric's z (monotonic, never saturated)."""
        top: MetricJudgement | None = None
        capped: list[float] = []
        cap = self.combine_cap
        for metric, value in metrics.items():
            j = self.judge(host, metric, value, t)
            if j is None:
                continue
            if j.z > 0.0:  # a metric exactly at its usual (a counter that never moved) does not dilute the rest
                capped.append(j.z if j.z <= cap else cap + math.log1p(j.z - cap))
            if top is None or j.z > top.z:
                top = j
        if top is None:
            return 0.0, None
        if not capped:
            return 0.0, top
        if len(capped) > self.combine_top:
            capped = heapq.nlargest(self.combine_top, capped)
        return math.fsum(capped) / len(capped), top

    def score(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, MetricJudgement | None]:
        """(the judged raw score, the most unusual metric's judgement): the report's combined score averaged
        with the host's recent ones (weight `smoothing` for the new one), so a change that lasts several
        reports counts more than a single odd report."""
        _, smoothed, top = self._scores(host, metrics, t)
        return smoothed, top

    def _scores(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, float, MetricJudgement | None]:
        """(the report's combined score, the recent reports' smoothed score, the top judgement)."""
        combined, top = self.raw(host, metrics, t)
        if top is None:
            return 0.0, 0.0, None
        prev = self.recent.get(host)
        return combined, combined if prev is None else prev + self.smoothing * (combined - prev), top

    def threshold(self, host: str, report: bool = False) -> float | None:
        """The host's calibrated threshold of its smoothed score (`report`: of a single report's combined
        score), each at half the budget; None while calibrating or before its cadence is known."""
        interval = self.cadence.interval(host)
        if interval is None:
            return None
        key = host + _REPORT if report else host
        return self.calibrator.threshold(key, report_probability(self.budget / 2, interval))

    def to_score(self, raw: float, threshold: float | None) -> float:
        if threshold is None or raw <= 0.0:
            return 0.0
        return 1.0 - math.exp(-raw * math.log(2) / max(threshold, 1e-9))

    def report_score(self, combined: float, smoothed: float, threshold: float | None) -> float:
        """The per-report score in [0, 1): 1 - 2^(-s / clip_z) of s = the larger of the smoothed score and
        half the report's own combined score, the same scale for every host; 0.0 while the host's
        threshold is not known yet (warming up or calibrating)."""
        level = max(smoothed, 0.5 * combined)
        if threshold is None or level <= 0.0:
            return 0.0
        return 1.0 - math.exp(-level * math.log(2) / self.clip_z)

    def score_one(self, obs: Observation) -> float:
        if not obs.metrics:
            return 0.0
        combined, smoothed, _ = self._scores(obs.host_id, obs.metrics, obs.time.timestamp())
        return self.report_score(combined, smoothed, self.threshold(obs.host_id))

    # ---- learning -----------------------------------------------------------------------------------
    def learn_one(self, obs: Observation) -> None:
        if obs.gone:
            self.forget(obs.host_id)
            return
        if obs.metrics:
            self.observe(obs.host_id, obs.metrics, obs.time.timestamp())

    def observe(
        self, host: str, metrics: dict[str, float], t: float, spikes: bool = True
    ) -> tuple[float, float | None, MetricJudgement | None]:
        """Score one report, then learn it: (raw, threshold, top judgement). Flagged reports count a tenth.

        Two raw scores are judged, each against its own calibrated threshold: the recent reports' smoothed
        score (a change that lasts) and the report's own combined score (a spike, found on its first
        report). The raw score returned is `_level`: at or above the threshold returned when either is.
        `spikes` False: only the smoothed score is judged (the engine's choice for hosts with peers, whose
        short bursts the peer view's persistence rule already weighs); both are still learned."""
        combined, raw, top = self._scores(host, metrics, t)
        if top is None:
            self.cadence.observe(host, t)
            self._learn(host, metrics, t, 1.0)
            return 0.0, self.threshold(host), None
        self.recent[host] = raw
        self.last[host] = (combined, raw)
        thr, thr_report = self.threshold(host), self.threshold(host, report=True)
        over = thr is not None and raw >= thr
        over_report = thr_report is not None and combined >= thr_report
        # flagged scores are counted, but capped: leaving them out would cut the tail the calibration
        # measures (and lower the threshold report by report); capping keeps real anomalies from inflating it
        self.calibrator.add(host, min(raw, 1.5 * thr) if thr is not None and over else raw)
        self.calibrator.add(
            host + _REPORT, min(combined, 1.5 * thr_report) if thr_report is not None and over_report else combined
        )
        self.cadence.observe(host, t)
        self._learn(host, metrics, t, 0.1 if over or over_report else 1.0)
        return (self._level(raw, combined, thr, thr_report) if spikes else raw), thr, top

    @staticmethod
    def _level(smoothed: float, combined: float, thr: float | None, thr_report: float | None) -> float:
        """The judged score: the smoothed one, or the report's own combined score in the smoothed score's
        units (scaled by the ratio of their thresholds) when that is further above its threshold; so
        `level >= thr` exactly when either is at or above its own threshold."""
        if thr is None or thr_report is None or thr_report <= 0.0:
            return smoothed
        return max(smoothed, combined * thr / thr_report)

    def _views(self, t: float) -> list[tuple[int, str]]:
        if not self.seasonal:
            return [(0, "overall")]
        hour, dow = views_of(t)
        return [(0, "overall"), (hour, "at this hour"), (dow, "on this weekday")]

    def _learn(self, host: str, metrics: dict[str, float], t: float, weight: float) -> None:
        per_host = self.state.get(host)
        if per_host is None:
            per_host = self.state[host] = {}
        for metric, value in metrics.items():
            s = per_host.get(metric)
            if s is None:
                if len(per_host) >= self.max_metrics:
                    continue
                s = per_host[metric] = [0.0] * (3 * VIEWS)
            for view, _ in self._views(t):
                i = 3 * view
                n = s[i + 2] + 1.0
                s[i + 2] = n
                base = self.alpha if view == 0 else self.bucket_alpha if view <= 24 else self.bucket_alpha / 4
                a = weight * max(1.0 / n, base)
                if n == 1.0:
                    s[i] = value
                    continue
                level, spread = s[i], s[i + 1]
                d = value - level
                if n > (self.warmup if view == 0 else self.bucket_warmup):  # warm: one value moves it little
                    limit = self.clip_z * max(_MAD_TO_SIGMA * spread, self.min_rel * abs(level), self.min_spread)
                    d = max(-limit, min(limit, d))
                s[i] = level + a * d
                s[i + 1] = spread + a * (abs(d) / _MEAN_ABS_TO_MAD - spread)

    def forget(self, host: str) -> None:
        self.state.pop(host, None)
        self.recent.pop(host, None)
        self.last.pop(host, None)
        self.cadence.forget(host)
        self.calibrator.forget(host)
        self.calibrator.forget(host + _REPORT)

    # ---- explanations and durable state --------------------------------------------------------------
    @staticmethod
    def usual(j: MetricJudgement) -> str:
        lo = j.level - 2 * j.spread
        hi = j.level + 2 * j.spread
        return f"{lo:.4g}-{hi:.4g}"

    def dump(self, host: str) -> dict[str, Any]:
        """The host's whole learned state as JSON-able data (`restore` reads it back)."""
        return {
            "metrics": _rounded(self.state.get(host, {})),
            "cadence": self.cadence.to_json(host),
            "calibration": self.calibrator.to_json(host),
            "calibration_report": self.calibrator.to_json(host + _REPORT),
            "recent": round(self.recent.get(host, 0.0), 6),
        }

    def restore(self, host: str, data: dict[str, Any]) -> None:
        self.state[host] = {str(m): [float(x) for x in s] for m, s in dict(data.get("metrics", {})).items()}
        self.cadence.load(host, list(data.get("cadence", [])))
        self.calibrator.load(host, list(data.get("calibration", [])))
        self.calibrator.load(host + _REPORT, list(data.get("calibration_report", [])))
        if "recent" in data:
            self.recent[host] = float(data["recent"])


def _rounded(state: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each metric's views rounded to 6 decimals (one numpy call: a checkpoint holds thousands of numbers)."""
    if not state:
        return {}
    names = list(state)
    rows = np.round(np.array([state[m] for m in names], dtype=float), 6).tolist()
    return dict(zip(names, rows, strict=True))
