"""Isolation forest: a vector is an outlier when random axis-parallel cuts isolate it in few steps.

The algorithm of Liu, Ting and Zhou (2008), the one scikit-learn's IsolationForest implements, written for
what the multivariate detector fits: one vector per live host of a cohort (8 to a few hundred rows), refitted
whenever the cohort's data changed. Each tree is grown on a sample of `max_samples` rows drawn without
replacement: a node picks one of the features that still vary among its rows at random and cuts at a uniform
point between their minimum and maximum (rows at or below the cut go left), until a row is alone or the depth
reaches ceil(log2(max_samples)). A row's path length in a tree is the depth of the leaf it falls in plus
c(rows left in that leaf), c(n) being the average path length of an unsuccessful search in a binary search
tree of n items; its anomaly score is 2^(-mean path length / c(max_samples)): about 0.5 for a typical row,
near 1 for one isolated at once. That is scikit-learn's `-score_samples`; the random draws are Python's, so
scores differ from scikit-learn's by the forest's sampling noise, not in kind.

Why not scikit-learn: it builds each tree through its general estimator machinery (parameter checks, a
random state and an ExtraTreeRegressor per tree), about 0.2 s per 50-tree forest on a 12-row sample on our
2-core machines while the cuts themselves take a few milliseconds; that was about half the CPU of a week's
backtest of one 12-host cohort, and the library's import added ~1.7 s to the first fit. Here a forest is a
few flat lists while it grows and five numpy arrays once grown; all trees score a batch of rows in one pass
per depth level.
"""

from __future__ import annotations

import math
import random

import numpy as np


def average_path_length(n: float) -> float:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n items."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + 0.5772156649) - 2.0 * (n - 1.0) / n


class IsolationForest:
    """A fitted forest: node arrays of all trees, concatenated; `scores` rates rows of the same columns."""

    def __init__(self, x: np.ndarray, n_trees: int = 50, max_samples: int = 128, seed: int = 0) -> None:
        rows: list[list[float]] = np.asarray(x, dtype=float).tolist()
        n = len(rows)
        if n == 0:
            raise ValueError("an isolation forest needs at least one row")
        self.samples = min(int(max_samples), n)
        self.depth = max(1, math.ceil(math.log2(max(self.samples, 2))))
        rng = random.Random(seed)
        feature: list[int] = []
        cut: list[float] = []
        left: list[int] = []
        right: list[int] = []
        path: list[float] = []

        def grow(idx: list[int], depth: int) -> int:
            node = len(feature)
            feature.append(-1)
            cut.append(0.0)
            left.append(node)
            right.append(node)
            path.append(depth + average_path_length(len(idx)))
            if depth >= self.depth or len(idx) <= 1:
                return node
            varying = []
            for f, values in enumerate(zip(*[rows[i] for i in idx], strict=True)):
                lo, hi = min(values), max(values)
                if lo < hi:
                    varying.append((f, lo, hi))
            if not varying:
                return node  # identical rows: a leaf, as deep as c(rows) says
            f, lo, hi = varying[rng.randrange(len(varying))]
            at = lo + rng.random() * (hi - lo)
            below = [i for i in idx if rows[i][f] <= at]
            above = [i for i in idx if rows[i][f] > at]
            feature[node], cut[node] = f, at
            left[node] = grow(below, depth + 1)
            right[node] = grow(above, depth + 1)
            return node

        roots = [grow(rng.sample(range(n), self.samples), 0) for _ in range(int(n_trees))]
        self.roots = np.asarray(roots, dtype=np.intp)
        self.feature = np.asarray(feature, dtype=np.intp)
        self.cut = np.asarray(cut, dtype=float)
        self.left = np.asarray(left, dtype=np.intp)
        self.right = np.asarray(right, dtype=np.intp)
        self.path = np.asarray(path, dtype=float)
        """Per node, the path length of a row that ends there (a leaf's depth + c(its rows))."""

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score of each row of x, in (0, 1]: ~0.5 typical, near 1 an outlier."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or len(x) == 0:
            return np.zeros(len(x) if x.ndim else 0)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        row = np.arange(len(x))[:, None]
        for _ in range(self.depth):  # every row moves one level down in every tree; leaves point to themselves
            f = self.feature[node]
            inner = f >= 0
            if not inner.any():
                break
            value = x[row, np.where(inner, f, 0)]
            node = np.where(value <= self.cut[node], self.left[node], self.right[node])
        mean_path = self.path[node].mean(axis=1)
        return np.asarray(2.0 ** (-mean_path / max(average_path_length(self.samples), 1e-9)))
