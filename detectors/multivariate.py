"""Multivariate outliers: a host whose whole metric vector is unlike its clones', even when no single
metric is far off. One scikit-learn IsolationForest per cohort, fitted on the latest metric vector of
every live host (from the store, fixed random_state). The engine scores the latest vectors at most every
`refit_s` of event time, once at least half the cohort's hosts reported since the last scoring.

Refits are triggered by data, not by the clock, so their cost grows with the reports, not with event time:
a model is refitted when `refit_reports` new reports per host arrived since it was fitted, or when a new
vector falls outside the range the model was fitted on (widened by its width on each side) while most of
the cohort's latest vectors are still inside it: an isolation forest cannot isolate a point outside that
range, so a host that left the pack is refitted into the sample before it is judged. A scoring that finds a
candidate outlier (score >= threshold, z >= 0.75 min_z) with a model fitted before the vectors it judges
refits and scores again. `fits` counts refits. Models are derived caches: never stored, only rebuilt.

A refit takes the cohort's vectors and their range at once (the range decides the next refit), but builds
the forest only when a scoring first needs it: a refit replaced by another before any scoring (a backlog
brings many reports per tick) costs no forest. The forest is the same either way (the same vectors, a
fixed random_state); `built` counts the forests actually built.

A host is an outlier when its anomaly score is high in absolute terms (`threshold`, 0.5 = typical) and
stands out from its peers' scores (robust z >= `min_z`), so a cohort-wide shift, which moves every
host's score together, does not alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.types import Observation


@dataclass
class _Model:
    time: float
    """Event time of the fit."""
    forest: Any
    """The fitted IsolationForest; None until a scoring first needs it (built from `sample`)."""
    names: list[str]
    lo: np.ndarray
    """Per metric (log-scaled), the low end of the range the forest can judge."""
    hi: np.ndarray
    reports: int = 0
    """The cohort's report count (`note`) when the model was fitted."""
    sample: np.ndarray | None = None
    """The vectors the forest is (to be) fitted on; dropped once it is built."""


class MultivariateOutlier(Detector):
    name = "multivariate"

    def __init__(
        self,
        n_estimators: int = 50,
        min_hosts: int = 16,
        refit_s: float = 120.0,
        window_s: float = 180.0,
        max_samples: int = 128,
        threshold: float = 0.6,
        min_z: float = 4.0,
        random_state: int = 0,
        baseline: CohortBaseline | None = None,
        refit_reports: int = 48,
    ) -> None:
        super().__init__(baseline)
        self.refit_reports = int(refit_reports)
        self.n_estimators = int(n_estimators)
        self.min_hosts = int(min_hosts)
        self.refit_s = float(refit_s)
        self.window_s = float(window_s)
        self.max_samples = int(max_samples)
        self.threshold = float(threshold)
        self.min_z = float(min_z)
        self.random_state = int(random_state)
        self._models: dict[str, _Model] = {}
        self._reports: dict[str, int] = {}
        """image -> metric reports noted so far (a cache like the models: only what this instance saw)."""
        self._scored: dict[str, float] = {}
        """image -> event time of its last scoring."""
        self.fits = 0
        """Models fitted so far (refits are counted, for tests and benchmarks)."""
        self.built = 0
        """Forests built so far (a refit replaced before any scoring builds none)."""
        self._last: dict[str, float] = {}
        """host -> time of its previous report (to learn the cohort's cadence)."""
        self._gap: dict[str, float] = {}
        """image -> typical interval between a host's reports (moving average)."""

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_models"] = {}
        d["_scored"] = {}
        d["_reports"] = {}
        d["_last"] = {}
        d["_gap"] = {}
        return d

    def window(self, image: str) -> float:
        """How old a host's latest vector may be and still count: window_s, or three report intervals when
        the cohort reports less often (a 5-minute collector cadence)."""
        return max(self.window_s, 3.0 * self._gap.get(image, 0.0))

    def forget(self, host: str) -> None:
        self._last.pop(host, None)

    def note(self, image: str, host: str, values: dict[str, float], now: float) -> None:
        """A host of the cohort reported `values` (the engine calls this for every report, after learning
        it). Refits here, so how often depends only on the reports: when `refit_reports` reports per host
        arrived since the fit, or this one falls outside what the model was fitted on."""
        count = self._reports[image] = self._reports.get(image, 0) + 1
        prev = self._last.get(host)
        self._last[host] = now
        if prev is not None and now > prev:
            gap = self._gap.get(image)
            self._gap[image] = now - prev if gap is None else 0.9 * gap + 0.1 * (now - prev)
        m = self._models.get(image)
        if m is None:
            return
        reports = self.baseline.metrics.get(image, {})
        if count - m.reports >= self.refit_reports * max(len(reports), 1):
            self.fit(image, now)
        elif self._outside(m, values):
            # a host that left the pack is refitted into the sample; a cohort that moved as a whole (the
            # time of day, a traffic spike) waits for the scheduled refit: its hosts' scores move together
            outside = sum(1 for _, v in reports.values() if self._outside(m, v))
            if 2 * outside <= len(reports):
                self.fit(image, now)

    def _outside(self, m: _Model, values: dict[str, float]) -> bool:
        x = self._matrix([values], m.names)
        return bool(np.any(x < m.lo) or np.any(x > m.hi))

    def vectors(self, image: str, now: float) -> tuple[list[str], list[str], np.ndarray]:
        """(hosts, metric names, log-scaled matrix) of the cohort's live hosts' latest metrics."""
        rows = [(h, v) for h, (t, v) in self.baseline.metrics.get(image, {}).items() if now - t <= self.window(image)]
        if not rows:
            return [], [], np.zeros((0, 0))
        seen: dict[str, int] = {}
        for _, v in rows:
            for k in v:
                seen[k] = seen.get(k, 0) + 1
        names = sorted(k for k, c in seen.items() if c >= 0.8 * len(rows))
        return [h for h, _ in rows], names, self._matrix([v for _, v in rows], names)

    @staticmethod
    def _matrix(values: list[dict[str, float]], names: list[str]) -> np.ndarray:
        x = np.array([[v.get(k, 0.0) for k in names] for v in values], dtype=float)
        return np.sign(x) * np.log1p(np.abs(x))

    def fit(self, image: str, now: float) -> bool:
        """Refit the cohort's model on its live hosts' latest vectors (the forest is built on first use)."""
        hosts, names, x = self.vectors(image, now)
        if len(hosts) < self.min_hosts or not names:
            self._models.pop(image, None)
            return False
        self.fits += 1
        lo, hi = x.min(axis=0), x.max(axis=0)
        margin = np.maximum(hi - lo, 0.05)
        self._models[image] = _Model(now, None, names, lo - margin, hi + margin, self._reports.get(image, 0), x)
        return True

    def _forest(self, m: _Model) -> Any:
        """The model's forest, built now if this is its first use."""
        if m.forest is None:
            from sklearn.ensemble import IsolationForest

            assert m.sample is not None
            forest = IsolationForest(
                n_estimators=self.n_estimators,
                max_samples=min(self.max_samples, len(m.sample)),
                random_state=self.random_state,
            )
            forest.fit(m.sample)
            self.built += 1
            m.forest, m.sample = forest, None
        return m.forest

    def _recent(self, image: str, now: float, since: float) -> tuple[int, list[dict[str, float]]]:
        """(live reporting hosts within the window, the vectors reported after `since`)."""
        reports = [(t, v) for t, v in self.baseline.metrics.get(image, {}).values() if now - t <= self.window(image)]
        return len(reports), [v for t, v in reports if t > since]

    def due(self, image: str, now: float) -> bool:
        """Time to score: refit_s since the last scoring, and at least half the hosts reported since."""
        last = self._scored.get(image)
        if last is not None and 0 <= now - last < self.refit_s:
            return False
        hosts, new = self._recent(image, now, -math.inf if last is None else last)
        return hosts > 0 and 2 * len(new) >= hosts

    def model(self, image: str, now: float) -> tuple[Any, list[str]] | None:
        """The cohort's model, fitted first if there is none (refits happen in `note`)."""
        m = self._models.get(image)
        if m is None or now < m.time:
            if not self.fit(image, now):
                return None
            m = self._models[image]
        return self._forest(m), m.names

    def score_hosts(self, image: str, now: float) -> dict[str, tuple[float, float]]:
        """host -> (anomaly score in (0, 1], robust z of that score among the cohort's hosts)."""
        m = self.model(image, now)
        if m is None:
            return {}
        model, names = m
        rows = [(h, v) for h, (t, v) in self.baseline.metrics.get(image, {}).items() if now - t <= self.window(image)]
        if not rows:
            return {}
        self._scored[image] = now
        x = self._matrix([v for _, v in rows], names)
        scores, z = self._scores(model, x)
        candidate = bool(np.any((scores >= self.threshold) & (z >= 0.75 * self.min_z)))
        if candidate and self._models[image].time < now and self.fit(image, now):
            # a candidate outlier is judged by a model fitted on the vectors it is judged with
            model, names = self._forest(self._models[image]), self._models[image].names
            scores, z = self._scores(model, self._matrix([v for _, v in rows], names))
        return {h: (float(s), float(zh)) for (h, _), s, zh in zip(rows, scores, z, strict=True)}

    @staticmethod
    def _scores(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Isolation scores of the rows of x and their robust z among themselves."""
        scores = fast_scores(model, x)
        med = float(np.median(scores))
        scale = 1.4826 * float(np.median(np.abs(scores - med))) or 1e-3
        return scores, (scores - med) / scale

    def score_one(self, obs: Observation) -> float:
        if not obs.metrics:
            return 0.0
        m = self.model(obs.image_id, obs.time.timestamp())  # fitted (or refitted) when missing or stale
        if m is None:
            return 0.0
        model, names = m
        return float(fast_scores(model, self._matrix([obs.metrics], names))[0])

    def contributions(self, image: str, host: str, now: float, top: int = 3) -> list[tuple[str, float, float]]:
        """The metrics that set the host apart most: (name, host value, peer median), by robust z."""
        values = self.baseline.metrics.get(image, {}).get(host)
        if values is None:
            return []
        out = []
        for k, x in values[1].items():
            peers = self.baseline.peer_values(image, k, now, self.window(image))
            if len(peers) < 3:
                continue
            med = median(peers)
            mad = median([abs(p - med) for p in peers]) * 1.4826 or max(abs(med) * 0.05, 1e-9)
            out.append((abs(x - med) / mad, k, x, med))
        out.sort(reverse=True)
        return [(k, x, med) for z, k, x, med in out[:top] if math.isfinite(z)]


def _average_path_length(n: float) -> float:
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + 0.5772156649) - 2.0 * (n - 1.0) / n


def fast_scores(model: Any, x: np.ndarray) -> np.ndarray:
    """IsolationForest anomaly scores (as -score_samples: ~0.5 normal, near 1 outlier) without the
    per-call overhead of scikit-learn's parallel scorer; falls back to it when its internals differ."""
    lengths = getattr(model, "_decision_path_lengths", None)
    averages = getattr(model, "_average_path_length_per_tree", None)
    if lengths is None or averages is None:
        return np.asarray(-model.score_samples(x))
    x32 = np.asarray(x, dtype=np.float32)
    depths = np.zeros(x32.shape[0])
    for tree, features, dl, ap in zip(model.estimators_, model.estimators_features_, lengths, averages, strict=True):
        leaves = tree.tree_.apply(np.ascontiguousarray(x32[:, features]))
        depths += dl[leaves] + ap[leaves] - 1.0
    denom = len(model.estimators_) * _average_path_length(model.max_samples_)
    return np.asarray(2.0 ** (-depths / max(denom, 1e-9)))
