"""Peer deviation: a host's metric far from its cohort's peers at the same time.

Statistics are robust and across hosts, not over a host's own history: median and MAD of the latest
value of every other live host of the cohort, from reports made before the judged one (see the class). A cohort-wide
traffic spike moves the median with it, so it does not alert; one host doing something its clones do not
does. A deviation must be material (an absolute and a relative difference) and persist for
`persistence` consecutive observations of that host.

Cost: the peers' view (each other host's latest value per metric, sorted) depends only on the cohort, the
cut-off and the window, which are rounded to `grid_s` of event time; every report of a cohort whose cut-off
falls in the same step shares one view, built once (the engine scores a cohort's reports in event-time
order, in batches at the stream's low watermark). Per report and metric what remains is the median without
the host's own value (a bisection, no copy) and, only for a material difference, the median of absolute
deviations over the cohort's few values.
"""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np

from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.calibration import Cadence
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

KEEP = 3
"""Reports kept per host: enough to find the one before the cut-off when reports are staggered."""

VIEWS_KEPT = 8
"""Peer views kept per cohort (cut-offs in use at once: hosts with different intervals, late reports)."""

_NO_VIEW: tuple[list[float], dict[str, float]] = ([], {})
"""The view of a metric no peer reported (never changed)."""


def _median_sorted(values: list[float]) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


def _median_without(values: list[float], skip: int) -> float:
    """The median of sorted `values` without the one at index `skip` (-1: none left out), uncopied."""
    if skip < 0:
        return _median_sorted(values)
    n = len(values) - 1
    mid = n // 2  # index mid of the values without `skip` is values[mid] before it, values[mid + 1] from it
    upper = values[mid if mid < skip else mid + 1]
    if n % 2:
        return upper
    lower = values[mid - 1 if mid - 1 < skip else mid]
    return 0.5 * (lower + upper)


def _scale(values: list[float], skip: int, med: float) -> float:
    """1.4826 * the median absolute deviation from `med` of sorted `values` without index `skip` (their
    mean absolute deviation when that is 0)."""
    others = values if skip < 0 else values[:skip] + values[skip + 1 :]
    dev = sorted([abs(x - med) for x in others])  # two sorted runs: linear
    scale = 1.4826 * _median_sorted(dev)
    if scale == 0.0:
        scale = math.fsum(dev) / len(others)
    return scale


class PeerDeviation(Detector):
    """Robust z-score of a host's metric against its cohort's peers' latest reports.

    Cadence-free and order-free: the peers of a report at time t are the other live hosts of the cohort,
    each with its latest report made at least half of the judged host's reporting interval before t and
    at most `window_intervals` intervals (and at least `window_s` seconds) before that. The interval is the
    median of the host's recent intervals (Cadence), so 10 s, 1 min and 5 min reports all work, and the
    hosts reporting at the same moment never see each other's new values: the scores are the same
    whatever the order in which they arrive, and the same when their reports are staggered by less than
    half an interval (live) or aligned (backtest). A host's first report has no interval yet: not judged.
    """

    name = "peers"

    def __init__(
        self,
        min_z: float = 5.0,
        min_rel: float = 0.5,
        min_abs: dict[str, float] | None = None,
        persistence: int = 5,
        window_s: float = 180.0,
        refresh_s: float = 10.0,
        min_peers: int = 3,
        two_sided: bool = False,
        baseline: CohortBaseline | None = None,
        window_intervals: float = 3.0,
        grid_s: float = 5.0,
    ) -> None:
        super().__init__(baseline)
        self.min_z = float(min_z)
        self.min_rel = float(min_rel)
        self.min_abs = dict(DEFAULT_MIN_ABS if min_abs is None else min_abs)
        self.persistence = int(persistence)
        self.window_s = float(window_s)
        self.refresh_s = float(refresh_s)
        """Unused (statistics are exact per cut-off time); kept so existing configurations still load."""
        self.min_peers = int(min_peers)
        self.two_sided = bool(two_sided)
        self.window_intervals = float(window_intervals)
        self.grid_s = float(grid_s)
        """Cut-offs are rounded down, windows up, to multiples of this (seconds of event time): the reports
        of a cohort within one step share one peer view (0: exact cut-offs, one view per report)."""
        self.cadence = Cadence()
        self.recent: dict[str, dict[str, list[tuple[float, dict[str, float]]]]] = {}
        """image -> host -> its last KEEP reports (time, metrics), oldest first."""
        self._views: dict[str, dict[tuple[float, float, float], dict[str, tuple[list[float], dict[str, float]]]]] = {}
        """image -> (cut, window, reference time) -> metric -> (sorted values, host -> value): built views."""

    def __getstate__(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["_views"] = {}
        return d

    # ---- learning -------------------------------------------------------------------------------------
    def learn_one(self, obs: Observation) -> None:
        super().learn_one(obs)
        if obs.gone:
            self.forget(obs.host_id)
        elif obs.metrics:
            self.observe(obs.host_id, obs.image_id, obs.time.timestamp(), obs.metrics)

    def observe(self, host: str, image: str, t: float, metrics: dict[str, float]) -> None:
        """Keep a host's report (the engine calls this after scoring it)."""
        self.cadence.observe(host, t)
        for other, hosts in self.recent.items():
            if other != image and host in hosts:  # re-imaged: it left its old cohort
                del hosts[host]
                self._views.pop(other, None)
        reports = self.recent.setdefault(image, {}).setdefault(host, [])
        views = self._views.get(image)
        if views and any(k[0] >= t for k in views):
            del self._views[image]  # it falls before a cut-off whose view was built
        reports.append((t, dict(metrics)))
        if len(reports) > 1 and reports[-2][0] > t:
            reports.sort(key=lambda r: r[0])
        if len(reports) > KEEP:
            del reports[0]

    def forget(self, host: str) -> None:
        self.cadence.forget(host)
        for image, hosts in self.recent.items():
            if hosts.pop(host, None) is not None:
                self._views.pop(image, None)
        self.baseline.store.pop(STREAKS.key(host), None)

    # ---- statistics -----------------------------------------------------------------------------------
    def cutoff(self, host: str | None, t: float) -> tuple[float, float]:
        """(cut-off time, window) of the peer reports a report of `host` at t is compared with.

        Without a known interval (the host's first report) the cohort's median interval is used, and with
        none known either, every report up to t within `window_s`. Without a host (a standalone query):
        every host's latest report, if made at most `window_s` before t (cut-off inf). A cut-off from an
        interval is rounded down and its window up to a multiple of `grid_s`."""
        if host is None:
            return math.inf, self.window_s
        interval = self.cadence.interval(host)
        if interval is None:
            known = [g for g in (self.cadence.interval(h) for h in self.cadence.gaps) if g is not None]
            if not known:
                return t, self.window_s
            interval = float(np.median(known))
        return self._grid(t - interval / 2.0, max(self.window_s, self.window_intervals * interval))

    def _grid(self, cut: float, window: float) -> tuple[float, float]:
        g = self.grid_s
        if g <= 0.0:
            return cut, window
        return math.floor(cut / g) * g, math.ceil(window / g) * g

    def _view(
        self, image: str, metric: str, cut: float, window: float, now: float
    ) -> tuple[list[float], dict[str, float]]:
        """(sorted values, host -> value) of each host's latest report of `metric` made at or before `cut`
        and at most `window` before it (before `now` when cut is inf); built once per (cut, window)."""
        ref = now if math.isinf(cut) else cut
        views = self._views.get(image)
        if views is None:
            views = self._views[image] = {}
        key = (cut, window, ref)
        view = views.get(key)
        if view is None:
            if len(views) >= VIEWS_KEPT:  # reports are scored in time order: the oldest cut-off goes
                del views[min(views)]
            view = views[key] = self._build(image, cut, window, ref)
        return view.get(metric) or _NO_VIEW

    def _build(
        self, image: str, cut: float, window: float, ref: float
    ) -> dict[str, tuple[list[float], dict[str, float]]]:
        """Every metric's view at one cut-off: one pass over the cohort's hosts."""
        by_metric: dict[str, dict[str, float]] = {}
        recent = self.recent.get(image, {})
        latest = self.baseline.metrics.get(image, {})
        for host in {*recent, *latest}:
            reports = recent.get(host, [])
            if host in latest and (not reports or latest[host][0] > reports[-1][0]):
                reports = [*reports, latest[host]]  # learned by a detector sharing this baseline
            for rt, values in reversed(reports):
                if rt <= cut:
                    if ref - rt <= window:
                        for metric, value in values.items():
                            by_metric.setdefault(metric, {})[host] = value
                    break
        return {m: (sorted(by_host.values()), by_host) for m, by_host in by_metric.items()}

    def stats(
        self, image: str, metric: str, now: float, host: str | None = None, view: tuple[float, float] | None = None
    ) -> tuple[float, float, int]:
        """(median, scale, peers) of a metric across the cohort's other hosts; scale is 1.4826 * MAD.

        `view`: the (cut-off, window) of `cutoff(host, now)`, when the caller has it already."""
        arr, skip = self._peers(image, metric, now, host, view)
        n = len(arr) - (skip >= 0)
        if n == 0:
            return 0.0, 0.0, 0
        med = _median_without(arr, skip)
        return med, _scale(arr, skip, med), n

    def _peers(
        self, image: str, metric: str, now: float, host: str | None, view: tuple[float, float] | None
    ) -> tuple[list[float], int]:
        """(the view's sorted values, the index of the host's own value in them or -1): the peers are the
        values but that one (left out by index, not copied)."""
        cut, window = self.cutoff(host, now) if view is None else view
        arr, by_host = self._view(image, metric, cut, window, now)
        if host is not None and host in by_host:
            return arr, bisect_left(arr, by_host[host])
        return arr, -1

    def deviation(
        self,
        image: str,
        metric: str,
        value: float,
        now: float,
        host: str | None = None,
        view: tuple[float, float] | None = None,
    ) -> tuple[float, float, float, int]:
        """(z, median, scale, peers); z is 0 when the difference is not material or peers are too few. The
        scale (as in `stats`) is computed only when z is, 0.0 otherwise: most reports deviate in nothing.
        (`_peers`, inlined: this runs for every metric of every report.)"""
        cut, window = self.cutoff(host, now) if view is None else view
        arr, by_host = self._view(image, metric, cut, window, now)
        own = by_host.get(host) if host is not None else None
        skip = -1 if own is None else bisect_left(arr, own)
        n = len(arr) - (skip >= 0)
        if n == 0:
            return 0.0, 0.0, 0.0, 0
        med = _median_without(arr, skip)
        if n < self.min_peers:
            return 0.0, med, 0.0, n
        diff = value - med
        if not self.two_sided and diff < 0:
            return 0.0, med, 0.0, n
        if abs(diff) < max(self.min_abs.get(metric, 0.0), self.min_rel * abs(med), 1e-9):
            return 0.0, med, 0.0, n
        scale = _scale(arr, skip, med)
        z = diff / max(scale, 0.05 * abs(med), 1e-9)
        return z, med, scale, n

    def raw(self, host: str, image: str, metrics: dict[str, float], t: float) -> float:
        """The largest material z over a report's metrics (0.0 when none deviates or peers are too few)."""
        best = 0.0
        view = self.cutoff(host, t)
        for metric, value in metrics.items():
            z = abs(self.deviation(image, metric, value, t, host, view)[0])
            if z > best:
                best = z
        return best

    def z_score(self, z: float, threshold: float | None = None) -> float:
        """Map |z| to [0, 1): 0.5 at the alert threshold (`min_z` unless a calibrated one is given)."""
        thr = self.min_z if threshold is None else threshold
        return 1.0 - math.exp(-abs(z) * math.log(2) / thr)

    def score_one(self, obs: Observation) -> float:
        if not obs.metrics:
            return 0.0
        return self.z_score(self.raw(obs.host_id, obs.image_id, obs.metrics, obs.time.timestamp()))

    def update_streaks(self, host: str, deviating: dict[str, bool]) -> dict[str, int]:
        """update_streak for several metrics of one report: one read and at most one write."""
        key = STREAKS.key(host)
        cur = self.baseline.store.get(key) or {}
        new = {m: int(cur.get(m, 0)) + 1 if d else 0 for m, d in deviating.items()}
        if any(int(cur.get(m, 0)) != n for m, n in new.items()):
            merged = {**cur, **{m: n for m, n in new.items() if n}}
            for m, n in new.items():
                if not n:
                    merged.pop(m, None)
            if merged:
                self.baseline.store[key] = merged
            else:
                self.baseline.store.pop(key, None)
        return new

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
