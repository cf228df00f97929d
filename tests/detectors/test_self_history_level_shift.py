"""SelfHistory's level-shift view: a level that moved and stayed, or a slow drift, is found; noise is not."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import LevelShift, SelfHistory
from detectors.calibration import TailCalibrator

STEP = 300.0  # five-minute reports
DAY = int(86400 / STEP)
START = 10 * DAY  # the change starts on day 10


def cpu(k: int, rng: random.Random, noise: float = 2.0) -> float:
    """A daily cycle (about 20 at night, 60 in the afternoon) with gaussian noise."""
    hour = (k * STEP / 3600.0) % 24
    return 40.0 - 20.0 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, noise)


def replay(change: str, size: float, days: int = 14, seed: int = 4, **kw: float) -> tuple[SelfHistory, list[tuple]]:
    """One host through SelfHistory.observe; every flagged report as (index after START, judgement)."""
    rng = random.Random(seed)
    d = SelfHistory(**kw)  # type: ignore[arg-type]
    flagged = []
    for k in range(days * DAY):
        v = cpu(k, rng)
        if k >= START:
            v += size if change == "step" else size * (k - START) / DAY  # drift: `size` per day
        raw, thr, top = d.observe("h", {"cpu_pct": v}, k * STEP)
        if thr is not None and raw >= thr:
            flagged.append((k - START, top))
    return d, flagged


def test_a_level_shift_is_flagged_as_one_and_explained_by_its_recent_level() -> None:
    # +3 on a series whose spread at an hour of the day is about 3: each report alone is unremarkable
    _, flagged = replay("step", 3.0)
    assert flagged, "a lasting shift of one spread was never flagged"
    first, top = flagged[0]
    assert 0 <= first <= 60  # within five hours of five-minute reports
    assert top.shift is not None and top.shift > 0  # the level-shift view flagged it, upwards
    assert top.value > top.level  # the recent level, above its usual


def test_a_slow_drift_is_flagged_within_a_day() -> None:
    _, flagged = replay("drift", 4.0)  # 4 a day: after 6 hours one spread off
    assert flagged and 0 <= flagged[0][0] <= DAY
    assert flagged[0][1].shift is not None


def test_a_drift_downwards_is_flagged_downwards() -> None:
    _, flagged = replay("drift", -4.0)
    assert flagged and 0 <= flagged[0][0] <= DAY
    assert flagged[0][1].shift < 0 and flagged[0][1].value < flagged[0][1].level


def test_stationary_noisy_series_are_flagged_within_the_budget() -> None:
    # Not never: the default budget allows about one alarm per 1,000 host-hours, so over many long series of
    # noise a few reports cross a threshold (seed 1589 with heavy tails once flagged a shift). Twelve series of
    # 14 days (4,032 host-hours), light to heavy noise, gaussian and heavy-tailed: within three times the budget.
    flagged = 0
    for seed in (11, 12):
        for noise in (0.5, 2.0, 8.0):
            for heavy in (False, True):
                rng = random.Random(seed)
                d = SelfHistory()
                for k in range(14 * DAY):
                    v = cpu(k, rng, noise)
                    if heavy:  # laplace noise on top: heavier tails, same level
                        v += rng.choice((-1, 1)) * rng.expovariate(1.0 / noise)
                    raw, thr, _ = d.observe("h", {"cpu_pct": v}, k * STEP)
                    flagged += thr is not None and raw >= thr
    host_hours = 12 * 14 * 24
    assert flagged <= 3 * host_hours / 1000.0, f"{flagged} reports flagged over {host_hours} host-hours"


def test_it_does_not_learn_the_shift_it_flags() -> None:
    # the same data through a detector that flags (the default budget) and one that never does (a budget so
    # small no threshold is ever reached): on the reports flagged, its views move a tenth as much
    rng = random.Random(7)
    flags, blind = SelfHistory(), SelfHistory(budget=1e-30)
    learned, unflagged, flagged = 0.0, 0.0, []
    for k in range(START + 4 * 12):  # four hours into the shift
        v = cpu(k, rng) + (6.0 if k >= START else 0.0)
        moves = []
        for d in (flags, blind):
            before = list(d.state.get("h", {}).get("cpu_pct", [0.0] * 3))
            raw, thr, top = d.observe("h", {"cpu_pct": v}, k * STEP)
            after = d.state["h"]["cpu_pct"]
            moves.append(sum(abs(after[i] - before[i]) for i in range(0, min(len(before), len(after)), 3)))  # levels
            if d is flags and thr is not None and raw >= thr:
                flagged.append((k - START, top))
                learned += moves[0]
        if flagged and flagged[-1][0] == k - START:
            unflagged += moves[1]
    assert flagged and 0 <= flagged[0][0] <= 12 and any(top.shift is not None for _, top in flagged)
    assert learned < 0.2 * unflagged


def test_memory_per_host_is_bounded_and_the_shift_survives_a_dump() -> None:
    d = SelfHistory(max_metrics=8)
    rng = random.Random(2)
    for k in range(2000):
        metrics = {f"m{rng.randint(0, 50)}": rng.random() for _ in range(5)}
        d.observe("h", metrics, 60.0 * k)
    assert len(d.shifts.state["h"]) <= 8
    assert all(len(q) <= d.calibrator.delay for q in d.calibrator.waiting.values())
    e = SelfHistory(max_metrics=8)
    e.restore("h", pickle.loads(pickle.dumps(d.dump("h"))))
    assert e.shifts.state["h"].keys() == d.shifts.state["h"].keys()
    for m, (shift, count) in d.shifts.state["h"].items():
        assert abs(e.shifts.shift("h", m) - shift) < 1e-5 and e.shifts.state["h"][m][1] == count
    d.forget("h")
    assert "h" not in d.shifts.state and not any(k.startswith("h") for k in d.calibrator.waiting)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_one_report_moves_the_shift_by_at_most_rate_times_clip(zs: list[float]) -> None:
    s = LevelShift(rate=0.05, clip_z=4.0)
    for z in zs:
        before = s.shift("h", "m")
        shift, count = s.step("h", "m", z)
        if count > 1:
            assert abs(shift - before) <= 0.05 * 8.0 + 1e-9
        assert abs(shift) <= 4.0
        s.commit("h", {"m": (shift, count)})


def test_the_shift_of_a_constant_offset_approaches_it_and_of_noise_stays_near_zero() -> None:
    s = LevelShift(rate=0.05)
    for _ in range(200):
        s.commit("a", {"m": s.step("a", "m", 2.0)})
    assert abs(s.shift("a", "m") - 2.0) < 0.01
    rng = random.Random(1)
    for _ in range(400):
        s.commit("c", {"m": s.step("c", "m", rng.gauss(0, 1))})
    assert abs(s.shift("c", "m")) < 0.6
    assert not s.warm(s.warmup - 1) and s.warm(s.warmup)
    with pytest.raises(ValueError, match="rate"):
        LevelShift(rate=0.0)


def test_the_run_up_to_a_flagged_score_is_not_counted() -> None:
    c = TailCalibrator(min_count=1, delay=5)
    for x in (1.0, 2.0, 3.0):
        c.submit("k", x, threshold=10.0)
    assert c.count("k") == 0  # still waiting
    c.submit("k", 20.0, threshold=10.0)  # flagged: counted at once, capped; the run-up dropped
    assert c.count("k") == 1 and c.threshold("k", 0.5) is not None
    assert "k" not in c.waiting
    for x in range(7):
        c.submit("k", float(x), threshold=10.0)
    assert c.count("k") == 3  # 7 submitted, 5 still waiting
