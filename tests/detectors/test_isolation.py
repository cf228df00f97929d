"""The isolation forest the multivariate detector fits: outliers are isolated in few cuts, typical rows score
about 0.5, and its scores agree with scikit-learn's IsolationForest on the same rows (the same algorithm,
other random draws)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest as SklearnForest

from detectors.isolation import IsolationForest, average_path_length


def test_an_outlying_row_scores_high_and_typical_rows_about_half() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 6))
    x[5] += 4.0  # one host unlike the other 11 in every metric, none of them extreme alone
    s = IsolationForest(x, n_trees=50, max_samples=128, seed=0).scores(x)
    assert int(np.argmax(s)) == 5
    assert s[5] > 0.6 and 0.35 < float(np.median(s)) < 0.55
    assert np.all((s > 0.0) & (s <= 1.0))


@pytest.mark.parametrize(("rows", "cols"), [(12, 8), (30, 4), (300, 10)])
def test_scores_agree_with_scikit_learn(rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows)
    x = rng.lognormal(size=(rows, cols))
    x[3] *= 5.0
    ours = IsolationForest(x, n_trees=200, max_samples=128, seed=0).scores(x)
    theirs = -SklearnForest(n_estimators=200, max_samples=min(128, rows), random_state=0).fit(x).score_samples(x)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.85
    assert abs(float(np.median(ours)) - float(np.median(theirs))) < 0.03
    assert int(np.argmax(ours)) == int(np.argmax(theirs)) == 3


def test_same_seed_same_forest_and_constant_columns_are_never_cut() -> None:
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(size=20), np.full(20, 7.0), rng.normal(size=20)])
    a, b = IsolationForest(x, seed=3), IsolationForest(x, seed=3)
    assert np.array_equal(a.scores(x), b.scores(x))
    assert 1 not in set(a.feature.tolist())  # the constant column cannot separate anything
    # identical rows cannot be isolated: every tree is one leaf, as deep as c(n) says
    same = IsolationForest(np.ones((10, 3)), seed=0)
    assert len(same.feature) == 50 and np.allclose(same.scores(np.ones((2, 3))), 0.5)
    assert average_path_length(1) == 0.0 and average_path_length(2) == 1.0
