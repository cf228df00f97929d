"""SelfHistory's calibration: a young tail errs high, a slow drift does not raise its own threshold, an episode
counts once, and the checkpoint holds exactly what numpy.round gave."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import SelfHistory
from detectors.calibration import Cadence, TailCalibrator
from detectors.self_history import _round6, reports_per_independent

STEP = 300.0  # five-minute reports
DAY = int(86400 / STEP)
START = 10 * DAY


def cpu(k: int, rng: random.Random, noise: float = 2.0) -> float:
    hour = (k * STEP / 3600.0) % 24
    return 40.0 - 20.0 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, noise)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.5, 1.0, 2.0]))
def test_the_margin_widens_a_young_tail_and_fades_as_it_fills(seed: int, margin: float) -> None:
    rng = random.Random(seed)
    plain, wide = TailCalibrator(min_count=100), TailCalibrator(min_count=100, margin=margin)
    ratios = []
    for n in range(1, 40_001):
        x = rng.expovariate(1.0)
        plain.add("k", x)
        wide.add("k", x)
        if n in (500, 40_000):
            a, b = plain.threshold("k", 1e-5), wide.threshold("k", 1e-5)
            assert a is not None and b is not None and b > a
            ratios.append(b / a)
    assert ratios[1] < ratios[0]  # 800 tail scores instead of 10: the bound is close to the estimate
    assert ratios[1] < 1.0 + margin / 20


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        TailCalibrator(margin=-1.0)


@pytest.mark.parametrize("per_day", [3.0, 4.0, 5.0, 6.0, 8.0, 12.0, -4.0, -5.0, -6.0, -8.0])
def test_a_slow_drift_is_flagged_within_a_day_whatever_its_rate(per_day: float) -> None:
    """The shift's scores while a drift builds up are counted for calibration 100 reports late: with 20 (the
    shift window) a drift of 4 or 8 a day raised its own threshold ahead of itself and was never flagged."""
    assert SelfHistory().shift_calibrator.delay == 100 and SelfHistory().calibrator.delay == 20
    rng = random.Random(4)
    d = SelfHistory()
    first = None
    for k in range(START + DAY):
        v = cpu(k, rng) + (per_day * (k - START) / DAY if k >= START else 0.0)
        raw, thr, _ = d.observe("h", {"cpu_pct": v}, k * STEP)
        if thr is not None and raw >= thr:
            assert k >= START, f"flagged on clean data at report {k}"
            first = k - START
            break
    assert first is not None and first <= DAY


def test_a_five_minute_host_is_calibrated_within_three_days_and_stays_quiet() -> None:
    rng = random.Random(8)
    d = SelfHistory()
    calibrated = None
    for k in range(4 * DAY):
        raw, thr, _ = d.observe("h", {"cpu_pct": cpu(k, rng)}, k * STEP)
        if thr is not None:
            calibrated = k if calibrated is None else calibrated
            assert raw < thr, f"a clean daily cycle flagged at report {k}"
    # 701 (58 hours): 250 settled scores with the confidence margin (before, 500 scores: report 951)
    assert calibrated is not None and calibrated <= 800, calibrated


def test_an_episode_counts_once_so_it_does_not_blind_the_host_to_the_next() -> None:
    """Three hours far off (a tenth of the reports usual), then the same two days later: the threshold after the
    first episode stays within 1.5x of before (each flagged report counted, it rose twentyfold) and the second
    episode is flagged on its first report."""
    rng = random.Random(5)
    d = SelfHistory()
    first, second = 12 * DAY, 14 * DAY
    before = flagged_second = None
    for k in range(second + 24):
        v = cpu(k, rng)
        if (first <= k < first + 36 or second <= k) and k % 9 != 0:
            v += 40.0
        if k == first:
            before = d.threshold("h")
        raw, thr, _ = d.observe("h", {"cpu_pct": v}, k * STEP)
        if k >= second and thr is not None and raw >= thr and flagged_second is None:
            flagged_second = k - second
    after = d.threshold("h")
    assert before is not None and after is not None and after < 1.5 * before, (before, after)
    assert flagged_second is not None and flagged_second <= 1


@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_rounding_matches_numpy(xs: list[float]) -> None:
    assert [_round6(x) for x in xs] == np.round(np.array(xs), 6).tolist()
    assert _round6(float("inf")) == float("inf") and math.isnan(_round6(float("nan")))


def test_a_dump_rounds_every_view_learned_since_the_last_one() -> None:
    rng = random.Random(3)
    d = SelfHistory()
    for k in range(3 * DAY):
        d.observe("h", {"a": cpu(k, rng), "b": rng.random() * 1e9}, k * STEP)
        if k % 7 == 0 or k == 3 * DAY - 1:
            dumped = d.dump("h")["metrics"]
            assert dumped == {m: np.round(np.array(s), 6).tolist() for m, s in d.state["h"].items()}
    e = SelfHistory()
    e.restore("h", d.dump("h"))
    assert e.dump("h") == d.dump("h")


def test_cadence_median_follows_observations_and_loads() -> None:
    c = Cadence(keep=3)
    for t in (0.0, 10.0, 30.0, 60.0, 70.0):
        c.observe("h", t)
    assert c.interval("h") == 20.0  # gaps 20, 30, 10
    e = Cadence(keep=3)
    e.load("h", c.to_json("h"))
    assert e.interval("h") == 20.0
    e.load("h", [70.0])  # no gaps
    assert e.interval("h") is None
    c.forget("h")
    assert c.interval("h") is None


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_reports_per_independent_is_the_effective_sample_size_of_an_exponential_mean(rate: float) -> None:
    """n values of an exponentially weighted mean of independent noise estimate its mean as well as about
    n / reports_per_independent(rate) independent values would (measured over many runs)."""
    rng = np.random.default_rng(7)
    runs, n = 2000, 400
    noise = rng.normal(size=(runs, n + 200))
    ewma = np.zeros(runs)
    values = np.empty((runs, n))
    for k in range(n + 200):  # 200 reports to forget the start
        ewma += rate * (noise[:, k] - ewma)
        if k >= 200:
            values[:, k - 200] = ewma
    stationary_var = rate / (2.0 - rate)  # variance of the exponential mean of unit-variance noise
    var_of_mean = float(values.mean(axis=1).var())
    effective = stationary_var / var_of_mean
    assert effective == pytest.approx(n / reports_per_independent(rate), rel=0.15)


def test_the_level_shift_calibrates_from_as_many_independent_scores_as_the_smoothed_one() -> None:
    """The level-shift score averages ~20 reports: its thresholds wait for 250 x 39 / 9 scores, not 250 (a tail
    fitted on ~6 independent windows gave NAB's rogue_agent_key_hold two false alarms)."""
    h = SelfHistory()
    assert h.calibrator.min_count == 250
    assert h.shift_calibrator.min_count == math.ceil(250 * 39 / 9)
    rng = random.Random(3)
    shift_from = smoothed_from = None
    for k in range(START):
        t = k * STEP
        h.observe("h", {"cpu_pct": cpu(k, rng)}, t)
        if smoothed_from is None and h.threshold("h") is not None:
            smoothed_from = k
        if shift_from is None and h.threshold("h", shift=True) is not None:
            shift_from = k
    assert smoothed_from is not None and shift_from is not None
    assert shift_from - smoothed_from >= 800, (smoothed_from, shift_from)
