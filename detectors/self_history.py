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
Its threshold is not a fixed z: a TailCalibrator learns the distribution of the host's raw scores and
fires above the score that matches `budget` false alarms per 1,000 host-hours at the host's own reporting
interval (Cadence). Three raw scores are judged, each against a threshold of its own at a third of the
budget: the smoothed score, the report's own combined score (a spike is found on its first report) and
the level-shift score (LevelShift, detectors/level_shift.py: per metric the recent reports' mean signed z,
about 1 / `shift_rate` reports; the mean of the `combine_top` largest |shift|): a level that moved and
stayed, or a slow drift, whose reports are each unremarkable. The per-report score (`score_one`, the
engine's `history` score) is 1 - 2^(-s / clip_z) of s = the largest of the smoothed score, twice the
level-shift score and half the report's combined score: 0.5 when the host's recent reports are on average
`clip_z` spreads off, the same scale for every host, so scores of different hosts rank together; 0.0
while warming up.

Calibration counts only reports judged by settled views (SETTLED x their warm-up: 240 reports for the
overall view, 20 for an hour of the day; a young view gives wild z, the overall view judges a daily cycle
as far off twice a day before the hours warm up, and those scores would set the threshold for good), each
1 / `shift_rate` reports late (the level-shift score `calibrate_delay` late: it builds up over a slow drift
for far longer), and drops the scores waiting before a flagged one (their run-up: a score that builds up
would otherwise lift its own threshold). The tail is fitted at its upper confidence bound
(`calibrate_margin`, TailCalibrator), so a young calibration errs high, and thresholds start from
`calibrate_min` settled scores (the level-shift score's from as many independent ones as the smoothed
score's: it averages ~4 times as many reports, `reports_per_independent`).

It does not learn from what it flags: a flagged report updates the views with a tenth of the weight (a
lasting change of level is absorbed slowly, a spike hardly at all) and counts for calibration only as
1.5 x the threshold (left out, the tail the calibration measures would be cut and the threshold would
creep down; counted in full, real anomalies would inflate it), once per episode (Episodes: flagged reports
less than `episode_gap` reports apart; counted report by report, each at 1.5 x a threshold it has just
raised, a few hours off would ratchet the threshold up many times). The engine reports an episode once.

Memory per host: at most `max_metrics` metrics x (32 views x 3 numbers + 2 for the shift), three
histograms, 2 x 1 / `shift_rate` + `calibrate_delay` waiting scores, a few intervals, an open episode.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.calibration import Cadence, TailCalibrator, report_probability
from detectors.episodes import Episodes
from detectors.level_shift import LevelShift
from detectors.types import Observation

VIEWS = 1 + 24 + 7
"""global, 24 hours of the day, 7 days of the week."""
_MAD_TO_SIGMA = 1.4826
"""sigma / median absolute deviation for normal data."""
_MEAN_ABS_TO_MAD = 1.2533 / 1.4826
"""(mean absolute deviation / median absolute deviation) for normal data: the spread is kept as a MAD."""


_REPORT = "\x00report"
"""Calibrator key suffix of a host's single-report score (the host's own key: its smoothed score)."""
_SHIFT = "\x00shift"
"""Calibrator key suffix of a host's level-shift score."""
SETTLED = 2
"""A view's judgements count for calibration from SETTLED x its warm-up reports: until then its level and
spread come from few reports and its z are wild, and would set the calibrated thresholds for good."""
SHIFT_WEIGHT = 2.0
"""Weight of the level-shift score in the per-report score (see `lasting`)."""
JUDGED = 3
"""Raw scores judged per report (smoothed, single report, level shift): each gets this share of the budget."""


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
    reports: float = 0.0
    """How many reports the judging view has learned from."""
    shift: float | None = None
    """For a level-shift judgement: the recent reports' mean signed z against the usual (value is then
    the recent level: level + shift x scale)."""


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
        calibrate_min: int = 250,
        calibrate_margin: float = 2.0,
        calibrate_delay: int = 100,
        episode_gap: int = 20,
        combine_cap: float = 10.0,
        combine_top: int = 5,
        smoothing: float = 0.2,
        shift_rate: float = 0.05,
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
        self.settled_at = SETTLED * self.bucket_warmup
        """Reports of a seasonal view before the scores it judges count for calibration (the overall view's:
        SETTLED x warmup)."""
        self.recent: dict[str, float] = {}
        """host -> its exponentially weighted recent combined score (the raw score that is judged)."""
        self.last: dict[str, tuple[float, float]] = {}
        """host -> (combined, lasting) score of its last observed report (for the engine's per-report score)."""
        self.state: dict[str, dict[str, list[float]]] = {}
        """host -> metric -> [level, spread, n] x VIEWS."""
        self.cadence = Cadence()
        self.shifts = LevelShift(shift_rate, clip_z)
        """Per host and metric, the recent reports' level against the usual (a change that stays, a drift)."""
        self.calibrator = TailCalibrator(min_count=calibrate_min, delay=self.shifts.warmup, margin=calibrate_margin)
        """The smoothed and single-report scores, counted `shifts.warmup` reports late, so a rising score never raises
        its own threshold; the tail is estimated at its upper confidence bound (`calibrate_margin`), so a young
        calibration errs high."""
        shift_min = math.ceil(calibrate_min * reports_per_independent(shift_rate) / reports_per_independent(smoothing))
        self.shift_calibrator = TailCalibrator(min_count=shift_min, delay=calibrate_delay, margin=calibrate_margin)
        """The level-shift score, counted `calibrate_delay` reports late (5 shift windows): it builds up over a
        slow drift for far longer than a shift window, and would raise its own threshold ahead of itself. It
        starts from as many independent scores as the smoothed one (1,084 scores at the defaults, against
        250): it is a mean over ~20 reports, so 250 of its scores hold about 6 independent windows, and a tail
        fitted on those moved by half with one more score (NAB's rogue_agent_key_hold: from 1.05 to 2.01)."""
        self.episodes = Episodes(episode_gap)
        """Per host, its current episode of flagged reports (flags less than `episode_gap` reports apart): the
        engine reports an episode once."""
        self._pending: dict[str, dict[str, tuple[float, float]]] = {}
        """host -> metric -> its next (shift, count), from scoring the report `observe` is learning."""
        self._settled: dict[str, bool] = {}
        """host -> whether its report being learned was judged by seasonal views only (counted for calibration)."""
        self._dumped: dict[str, dict[str, list[float]]] = {}
        """host -> metric -> its views rounded as last dumped (`dump` rounds again only the views learned since)."""
        self._dirty: dict[str, set[int]] = {}
        """host -> offsets of the views learned since its last dump."""

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
        return MetricJudgement(metric, value, abs(value - level) / scale, level, spread, view[1], s[i + 2])

    def raw(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, MetricJudgement | None]:
        """(the report's combined score over its metrics, the judgement of its most unusual metric).

        The combined score is the mean of the `combine_top` largest z of the report's judged metrics (all
        of them when it has fewer; metrics exactly at their usual level are left out), each capped softly
        at `combine_cap` (above it a metric adds only log(1 + excess)): a few metrics off together count
        more than one metric far off, and one metric whose spread is tiny (a counter that never moved)
        cannot drown the others. With one metric it is that metric's z (monotonic, never saturated)."""
        combined, top, _, _ = self._assess(host, metrics, t)
        return combined, top

    def _assess(
        self, host: str, metrics: dict[str, float], t: float
    ) -> tuple[float, MetricJudgement | None, float, MetricJudgement | None]:
        """(combined score, top judgement, level-shift score, its top judgement); the metrics' new shifts
        wait in `_pending` for `observe` to commit.

        Each metric is judged as `judge` does (the same views, the same arithmetic), inline: this runs for every
        metric of every report, so the views are looked up once per report and a MetricJudgement is built only
        for the top metric and the most shifted one."""
        per_host = self.state.get(host, {})
        cap = self.combine_cap
        min_rel, min_spread = self.min_rel, self.min_spread
        warmup, bucket_warmup = self.warmup, self.bucket_warmup
        settled_overall, settled_bucket = SETTLED * self.warmup, self.settled_at
        hi = di = -1  # offsets of the hour-of-day and day-of-week views (-1: not seasonal)
        if self.seasonal:
            hour, dow = views_of(t)
            hi, di = 3 * hour, 3 * dow
        step, shift_warm = self.shifts.step, self.shifts.warmup
        top: tuple[str, float, float, float, float, str, float] | None = None
        top_z = 0.0
        moved: MetricJudgement | None = None
        moved_abs = 0.0
        capped: list[float] = []
        shifts: list[float] = []
        updates: dict[str, tuple[float, float]] = {}
        settled = True
        for metric, value in metrics.items():
            s = per_host.get(metric)
            if s is None or s[2] < warmup:
                continue  # judged only once the host's whole history (the global view) has warmed up
            i, view, settled_from = 0, "overall", settled_overall
            if hi >= 0 and s[hi + 2] >= bucket_warmup:
                i, view, settled_from = hi, "at this hour", settled_bucket
            level, spread = s[i], _MAD_TO_SIGMA * s[i + 1]
            scale = max(spread, min_rel * abs(level), min_spread)
            z = abs(value - level) / scale
            reports = s[i + 2]
            if di >= 0 and s[di + 2] >= bucket_warmup:
                # the day of the week excuses a value usual for this weekday (see `judge`)
                o_level, o_spread = s[di], _MAD_TO_SIGMA * s[di + 1]
                o_scale = max(o_spread, min_rel * abs(o_level), min_spread)
                o_z = abs(value - o_level) / o_scale
                if o_spread <= 2.0 * spread and o_z < z:
                    level, spread, scale, z, reports = o_level, o_spread, o_scale, o_z, s[di + 2]
                    view, settled_from = "on this weekday", settled_bucket
            if z > 0.0:  # a metric exactly at its usual (a counter that never moved) does not dilute the rest
                capped.append(z if z <= cap else cap + math.log1p(z - cap))
            if top is None or z > top_z:
                top, top_z = (metric, value, z, level, spread, view, reports), z
            settled = settled and reports >= settled_from
            shift, count = updates[metric] = step(host, metric, math.copysign(z, value - level))
            if count >= shift_warm and shift != 0.0:
                size = abs(shift)
                shifts.append(size)
                if moved is None or size > moved_abs:
                    recent = level + shift * scale
                    moved = MetricJudgement(metric, recent, size, level, spread, view, reports, shift)
                    moved_abs = size
        self._pending[host] = updates
        self._settled[host] = settled
        if top is None:
            return 0.0, None, 0.0, None
        judged = MetricJudgement(*top)
        change = _top_mean(shifts, self.combine_top)
        if not capped:
            return 0.0, judged, change, moved
        return _top_mean(capped, self.combine_top), judged, change, moved

    def score(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, MetricJudgement | None]:
        """(the judged raw score, the most unusual metric's judgement): the report's combined score averaged
        with the host's recent ones (weight `smoothing` for the new one), so a change that lasts several
        reports counts more than a single odd report."""
        _, smoothed, top = self._scores(host, metrics, t)
        return smoothed, top

    def judged(self, host: str, metrics: dict[str, float], t: float) -> tuple[float | None, float | None, float | None]:
        """How far above its threshold each judged score of a report would be, without learning it: (smoothed,
        single report, level shift), each as score / its calibrated threshold (None while that threshold is not
        known, or the report is not judged). For explanations and benchmarks: a false positive far above its
        threshold and above every real anomaly of the host in the same score cannot be removed by calibration,
        only by judging the report differently."""
        pending, settled = self._pending.get(host), self._settled.get(host)
        combined, smoothed, top, change, moved = self._all_scores(host, metrics, t)
        # put back what `_assess` left for `observe` to commit: judging a report learns nothing
        self._pending.pop(host, None)
        self._settled.pop(host, None)
        if pending is not None:
            self._pending[host] = pending
        if settled is not None:
            self._settled[host] = settled
        if top is None:
            return None, None, None
        thr, thr_report = self.threshold(host), self.threshold(host, report=True)
        thr_shift = self.threshold(host, shift=True)
        return (
            smoothed / thr if thr else None,
            combined / thr_report if thr_report else None,
            change / thr_shift if thr_shift and moved is not None else None,
        )

    def _scores(self, host: str, metrics: dict[str, float], t: float) -> tuple[float, float, MetricJudgement | None]:
        """(the report's combined score, the recent reports' smoothed score, the top judgement)."""
        combined, smoothed, top, _, _ = self._all_scores(host, metrics, t)
        return combined, smoothed, top

    def _all_scores(
        self, host: str, metrics: dict[str, float], t: float
    ) -> tuple[float, float, MetricJudgement | None, float, MetricJudgement | None]:
        """(combined, smoothed, top judgement, level-shift score, the most shifted metric's judgement)."""
        combined, top, change, moved = self._assess(host, metrics, t)
        if top is None:
            return 0.0, 0.0, None, 0.0, None
        prev = self.recent.get(host)
        smoothed = combined if prev is None else prev + self.smoothing * (combined - prev)
        return combined, smoothed, top, change, moved

    def threshold(self, host: str, report: bool = False, shift: bool = False) -> float | None:
        """The host's calibrated threshold of its smoothed score (`report`: of a single report's combined
        score; `shift`: of its level-shift score), each at a third of the budget; None while calibrating or
        before its cadence is known."""
        interval = self.cadence.interval(host)
        if interval is None:
            return None
        p = report_probability(self.budget / JUDGED, interval)
        if shift:
            return self.shift_calibrator.threshold(host + _SHIFT, p)
        return self.calibrator.threshold(host + _REPORT if report else host, p)

    def to_score(self, raw: float, threshold: float | None) -> float:
        if threshold is None or raw <= 0.0:
            return 0.0
        return 1.0 - math.exp(-raw * math.log(2) / max(threshold, 1e-9))

    @staticmethod
    def lasting(smoothed: float, change: float) -> float:
        """How far off the host's recent reports are: the larger of their smoothed score and twice their
        level-shift score (a level d spreads off, held for its window, counts as much as reports 2d off one by
        one: the signs of noise cancel in the shift and not in the smoothed |z|)."""
        return max(smoothed, SHIFT_WEIGHT * change)

    def report_score(self, combined: float, lasting: float, threshold: float | None) -> float:
        """The per-report score in [0, 1): 1 - 2^(-s / clip_z) of s = the larger of the recent reports'
        `lasting` score and half the report's own combined score, the same scale for every host; 0.0 while
        the host's threshold is not known yet (warming up or calibrating)."""
        level = max(lasting, 0.5 * combined)
        if threshold is None or level <= 0.0:
            return 0.0
        return 1.0 - math.exp(-level * math.log(2) / self.clip_z)

    def score_one(self, obs: Observation) -> float:
        if not obs.metrics:
            return 0.0
        combined, smoothed, _, change, _ = self._all_scores(obs.host_id, obs.metrics, obs.time.timestamp())
        return self.report_score(combined, self.lasting(smoothed, change), self.threshold(obs.host_id))

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

        Three raw scores are judged, each against its own calibrated threshold: the recent reports' smoothed
        score (a change that lasts), the report's own combined score (a spike, found on its first report)
        and the level-shift score (a level that moved and stayed, a drift). The raw score returned is in the
        smoothed score's units (the others scaled by the ratio of the thresholds), at or above the threshold
        returned when any is; the top judgement is the level-shift one (`shift` set) when that score is the
        furthest above its threshold. `spikes` False: the report's own score is not judged (the engine's
        choice for hosts with peers, whose short bursts the peer view's persistence rule already weighs);
        all are still learned."""
        combined, raw, top, change, moved = self._all_scores(host, metrics, t)
        self.shifts.commit(host, self._pending.pop(host, {}))
        if top is None:
            self.cadence.observe(host, t)
            self._learn(host, metrics, t, 1.0)
            return 0.0, self.threshold(host), None
        self.recent[host] = raw
        self.last[host] = (combined, self.lasting(raw, change))
        thr, thr_report = self.threshold(host), self.threshold(host, report=True)
        thr_shift = self.threshold(host, shift=True)
        over = thr is not None and raw >= thr
        over_report = thr_report is not None and combined >= thr_report
        over_shift = thr_shift is not None and moved is not None and change >= thr_shift
        # flagged scores are counted, but capped: leaving them out would cut the tail the calibration
        # measures (and lower the threshold report by report); capping keeps real anomalies from inflating it.
        # Only reports judged by settled views count: young views give wild z (and the overall view, before the
        # hours warm up, judges a daily cycle as far off twice a day), which would set the thresholds for good.
        # An episode counts its flagged scores once, on the report that opened it: counted report by report, each
        # at 1.5 x a threshold it has just raised, a few hours off would ratchet the threshold up many times over.
        settled = self._settled.pop(host, True)
        if settled and self.episodes.counts(host, over or over_report or over_shift):
            self.calibrator.submit(host, raw, thr)
            self.calibrator.submit(host + _REPORT, combined, thr_report)
            if moved is not None:
                self.shift_calibrator.submit(host + _SHIFT, change, thr_shift)
        self.cadence.observe(host, t)
        self._learn(host, metrics, t, 0.1 if over or over_report or over_shift else 1.0)
        level = self._level(raw, combined, thr, thr_report) if spikes else raw
        judged: tuple[float, float | None, MetricJudgement | None] = (level, thr, top)
        if over_shift and thr is not None and thr_shift is not None and thr_shift > 0.0:
            in_units = change * thr / thr_shift
            if in_units > level:  # the level shift is what is furthest above its threshold: it explains
                judged = (in_units, thr, moved)
        self.episodes.note(host, thr is not None and judged[0] >= thr)
        return judged

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
        # per view of this report: (offset, learning rate floor, reports before it is warm)
        plan = [
            (3 * view, self.alpha, self.warmup)
            if view == 0
            else (3 * view, self.bucket_alpha if view <= 24 else self.bucket_alpha / 4, self.bucket_warmup)
            for view, _ in self._views(t)
        ]
        clip_z, min_rel, min_spread = self.clip_z, self.min_rel, self.min_spread
        dirty = self._dirty.get(host)
        if dirty is None:
            dirty = self._dirty[host] = set()
        dirty.update(i for i, _, _ in plan)
        for metric, value in metrics.items():
            s = per_host.get(metric)
            if s is None:
                if len(per_host) >= self.max_metrics:
                    continue
                s = per_host[metric] = [0.0] * (3 * VIEWS)
            for i, base, warm in plan:
                n = s[i + 2] + 1.0
                s[i + 2] = n
                a = weight * max(1.0 / n, base)
                if n == 1.0:
                    s[i] = value
                    continue
                level, spread = s[i], s[i + 1]
                d = value - level
                if n > warm:  # warm: one value moves it little
                    limit = clip_z * max(_MAD_TO_SIGMA * spread, min_rel * abs(level), min_spread)
                    d = max(-limit, min(limit, d))
                s[i] = level + a * d
                s[i + 1] = spread + a * (abs(d) / _MEAN_ABS_TO_MAD - spread)

    def forget(self, host: str) -> None:
        self.state.pop(host, None)
        self.shifts.forget(host)
        self._pending.pop(host, None)
        self._settled.pop(host, None)
        self.shift_calibrator.forget(host + _SHIFT)
        self.recent.pop(host, None)
        self.last.pop(host, None)
        self.episodes.forget(host)
        self._dumped.pop(host, None)
        self._dirty.pop(host, None)
        self.cadence.forget(host)
        self.calibrator.forget(host)
        self.calibrator.forget(host + _REPORT)

    # ---- explanations and durable state --------------------------------------------------------------
    @staticmethod
    def usual(j: MetricJudgement) -> str:
        lo = j.level - 2 * j.spread
        hi = j.level + 2 * j.spread
        return f"{lo:.4g}-{hi:.4g}"

    def describe(self, j: MetricJudgement, host: str) -> str:
        """The judgement in words, for a finding: "cpu_pct 91 on host X, its own usual at this hour 20-30
        (robust z 14.2" or, for a level shift, "cpu_pct averaged 52 over host X's last ~20 reports, 3.1
        spreads above its own usual at this hour 20-30 (a level shift"; the caller closes the parenthesis."""
        if j.shift is None:
            usual = f"its own usual {j.view} {self.usual(j)}"
            return f"{j.metric} {j.value:.4g} on host {host}, {usual} (robust z {j.z:.1f}"
        side = "above" if j.shift > 0 else "below"
        return (
            f"{j.metric} averaged {j.value:.4g} over host {host}'s last ~{self.shifts.warmup} reports, "
            f"{abs(j.shift):.1f} spreads {side} its own usual {j.view} {self.usual(j)} (a level shift or drift"
        )

    def dump(self, host: str) -> dict[str, Any]:
        """The host's whole learned state as JSON-able data (`restore` reads it back)."""
        return {
            "metrics": self._rounded(host),
            "cadence": self.cadence.to_json(host),
            "calibration": self.calibrator.to_json(host),
            "calibration_report": self.calibrator.to_json(host + _REPORT),
            "calibration_shift": self.shift_calibrator.to_json(host + _SHIFT),
            "shift": self.shifts.to_json(host),
            "recent": round(self.recent.get(host, 0.0), 6),
            "episode": self.episodes.to_json(host),
        }

    def _rounded(self, host: str) -> dict[str, list[float]]:
        """Each metric's views rounded to 6 decimals, as numpy.round does (x 1e6, to the nearest even, / 1e6).
        Only the views learned since the host's last dump are rounded again (a report changes 3 of 32)."""
        state = self.state.get(host, {})
        cache = self._dumped.setdefault(host, {})
        dirty = self._dirty.pop(host, set())
        out: dict[str, list[float]] = {}
        for metric, s in state.items():
            row = cache.get(metric)
            if row is None or len(row) != len(s):
                row = cache[metric] = [_round6(x) for x in s]
            else:
                for i in dirty:
                    for j in (i, i + 1, i + 2):  # _round6, inline: a few hundred values per dump
                        y = s[j] * 1e6
                        row[j] = round(y) / 1e6 if -1e300 < y < 1e300 else s[j]
            out[metric] = list(row)
        return out

    def restore(self, host: str, data: dict[str, Any]) -> None:
        self.state[host] = {str(m): [float(x) for x in s] for m, s in dict(data.get("metrics", {})).items()}
        self._dumped.pop(host, None)
        self._dirty.pop(host, None)
        self.cadence.load(host, list(data.get("cadence", [])))
        self.calibrator.load(host, list(data.get("calibration", [])))
        self.calibrator.load(host + _REPORT, list(data.get("calibration_report", [])))
        self.shift_calibrator.load(host + _SHIFT, list(data.get("calibration_shift", [])))
        self.shifts.load(host, dict(data.get("shift", {})))
        if "recent" in data:
            self.recent[host] = float(data["recent"])
        self.episodes.load(host, list(data.get("episode", [])))


def reports_per_independent(rate: float) -> float:
    """Reports per independent value of an exponentially weighted mean with weight `rate` for the new report:
    successive values are correlated by 1 - rate, so n of them weigh as about n x rate / (2 - rate)
    independent ones (the effective sample size of a lag-one correlated series). 9 for the smoothed score
    (0.2), 39 for the level shift (0.05), 1 for a single report's score."""
    return (2.0 - rate) / rate


def _top_mean(values: list[float], k: int) -> float:
    """The mean of the k largest values (of all when there are fewer); 0.0 for none."""
    if not values:
        return 0.0
    if len(values) > k:
        values = heapq.nlargest(k, values)
    return math.fsum(values) / len(values)


def _round6(x: float) -> float:
    """x rounded to 6 decimals exactly as numpy.round(x, 6): x * 1e6 to the nearest integer (ties to even),
    / 1e6; a value too large for that (or not finite) is kept as it is."""
    y = x * 1e6
    if -1e300 < y < 1e300:
        return round(y) / 1e6
    return x
