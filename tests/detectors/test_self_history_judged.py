"""SelfHistory.judged: how far above its thresholds a report would be, without learning it.

The real-data benchmark explains each false positive with it (which score flagged it, and where that report
ranks in that score), so it must agree with what `observe` flags and must not change what is learned."""

from __future__ import annotations

import math
import random

from detectors import SelfHistory

STEP = 300.0  # five-minute reports
DAY = int(86400 / STEP)


def cpu(k: int, rng: random.Random) -> float:
    """A daily cycle (about 20 at night, 60 in the afternoon) with gaussian noise of 2."""
    hour = (k * STEP / 3600.0) % 24
    return 40.0 - 20.0 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, 2.0)


def series(days: int = 6, spike_at: int = 5 * DAY + 100, spike: float = 40.0) -> list[float]:
    rng = random.Random(7)
    return [cpu(k, rng) + (spike if k == spike_at else 0.0) for k in range(days * DAY)]


def test_judging_a_report_learns_nothing() -> None:
    plain, asked = SelfHistory(), SelfHistory()
    for k, v in enumerate(series()):
        asked.judged("h", {"cpu_pct": v}, k * STEP)
        assert asked.observe("h", {"cpu_pct": v}, k * STEP) == plain.observe("h", {"cpu_pct": v}, k * STEP)
    assert asked.dump("h") == plain.dump("h")


def test_a_report_is_flagged_exactly_when_a_judged_score_reaches_its_threshold() -> None:
    d = SelfHistory()
    spike_at = 5 * DAY + 100
    flags, reaches = [], []
    for k, v in enumerate(series(spike_at=spike_at)):
        ratios = d.judged("h", {"cpu_pct": v}, k * STEP)
        raw, thr, _ = d.observe("h", {"cpu_pct": v}, k * STEP)
        if thr is None:
            assert ratios[0] is None  # no threshold yet: nothing to be above
            continue
        flags.append(raw >= thr)
        reaches.append(any(r is not None and r >= 1.0 for r in ratios))
        if k == spike_at:
            report = ratios[1]
            assert report is not None and report > 1.0  # 20 spreads off: its single-report score flags it
    assert flags == reaches
    assert any(flags)


def test_nothing_is_judged_while_warming_up() -> None:
    d = SelfHistory()
    assert d.judged("h", {"cpu_pct": 40.0}, 0.0) == (None, None, None)
