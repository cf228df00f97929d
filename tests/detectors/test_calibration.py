"""Thresholds calibrated to a false alarm budget per 1,000 host-hours keep that rate on clean data."""

from __future__ import annotations

import math
import random

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from detectors.calibration import Cadence, TailCalibrator, report_probability
from detectors.self_history import SelfHistory


def test_budget_maps_to_a_probability_per_report() -> None:
    assert report_probability(1.0, 60.0) == 1.0 / 1000 / 60  # 1-minute reports
    assert report_probability(1.0, 300.0) == 1.0 / 1000 / 12  # 5-minute reports


def test_cadence_is_the_median_of_recent_intervals() -> None:
    c = Cadence()
    assert c.interval("h") is None
    for t in (0, 60, 120, 185, 240, 300, 900, 960):  # one late report and a long gap
        c.observe("h", float(t))
    assert c.interval("h") == 60.0


def test_tail_calibrator_matches_known_quantiles() -> None:
    rng = random.Random(3)
    cal = TailCalibrator()
    for _ in range(100_000):
        cal.add("k", rng.expovariate(1.0))
    for p in (1e-2, 1e-3, 1e-5):  # the exact quantile of Exp(1) is ln(1/p); 1e-5 is extrapolated
        thr = cal.threshold("k", p)
        assert thr is not None and abs(thr - math.log(1 / p)) < 0.15 * math.log(1 / p)


@settings(max_examples=4, deadline=None, phases=[Phase.generate])
@given(st.sampled_from(["normal", "laplace", "lognormal", "student"]), st.integers(0, 10_000))
def test_false_alarm_rate_on_clean_data_stays_near_the_budget(shape: str, seed: int) -> None:
    """40,000 one-minute reports of one host (667 host-hours) of three clean metrics; with a budget of
    150 per 1,000 host-hours the calibrated detector should flag about 100 of them once calibrated."""
    rng = random.Random(seed)

    def draw() -> float:
        if shape == "normal":
            return rng.gauss(50, 5)
        if shape == "laplace":
            return 50 + rng.choice((-1, 1)) * rng.expovariate(0.3)
        if shape == "lognormal":
            return rng.lognormvariate(3, 0.4)
        return 50 + rng.gauss(0, 1) / max(abs(rng.gauss(0, 1)) / 3 ** 0.5, 0.05)  # heavy tails

    budget = 150.0
    d = SelfHistory(budget=budget, seasonal=False)
    flagged = judged = 0
    for k in range(40_000):
        raw, thr, _ = d.observe("h", {"a": draw(), "b": draw(), "c": draw()}, 60.0 * k)
        if thr is not None and k >= 10_000:  # measured once calibrated, over 500 host-hours
            judged += 1
            flagged += raw >= thr
    expected = judged * report_probability(budget, 60.0)
    assert 0.4 * expected <= flagged <= 2.5 * expected, (flagged, expected)
