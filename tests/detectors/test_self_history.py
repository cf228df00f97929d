"""SelfHistory: each host against its own seasonal history, alone when it has no clones."""

from __future__ import annotations

import math
import pickle
import random
from datetime import timedelta

from det_helpers import T0

from detectors import EngineConfig, FamilyEngine, FindingKind, Observation, SelfHistory

STEP = 300.0  # five-minute reports
DAYS = 14


def seasonal_cpu(k: int, rng: random.Random) -> float:
    """A daily cycle: about 20 at night, 60 in the afternoon, with noise."""
    hour = (k * STEP / 3600.0) % 24
    return 40.0 - 20.0 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, 2)


def lone_host(spike_at: int | None) -> list[Observation]:
    rng = random.Random(4)
    out = []
    for k in range(int(DAYS * 86400 / STEP)):
        cpu = seasonal_cpu(k, rng)
        if spike_at is not None and spike_at <= k < spike_at + 3:
            cpu = 95.0
        out.append(
            Observation("solo", "ami-solo", "solo", T0 + timedelta(seconds=k * STEP), metrics={"cpu_pct": cpu})
        )
    return out


def metric_findings(stream: list[Observation]) -> list:
    engine = FamilyEngine(config=EngineConfig())
    found = []
    for o in stream:
        found += [f for f in engine.process(o) if getattr(f, "kind", None) is FindingKind.METRIC_DEVIATION]
    return found


def test_a_host_without_clones_is_judged_by_its_own_history() -> None:
    spike = int(12 * 86400 / STEP) + 3  # day 12, shortly after midnight: its usual is about 20
    found = metric_findings(lone_host(spike))
    assert len(found) == 1, [f.explanation for f in found]
    f = found[0]
    assert f.host_id == "solo" and f.subject == "metric:cpu_pct" and f.details["view"] == "self"
    assert f.time == T0 + timedelta(seconds=spike * STEP)
    assert "its own usual" in f.explanation and "too few to compare with" in f.explanation


def test_a_clean_seasonal_series_gives_no_finding() -> None:
    assert metric_findings(lone_host(None)) == []


def test_warm_up_scores_zero_then_the_spike_scores_above_half() -> None:
    d = SelfHistory()
    stream = lone_host(None)
    later = stream[-1].time + timedelta(seconds=STEP)
    spike = Observation("solo", "ami-solo", "solo", later, metrics={"cpu_pct": 95.0})
    assert d.score_one(spike) == 0.0
    for o in stream[:100]:
        d.learn_one(o)
    assert d.score_one(spike) == 0.0  # still warming up
    for o in stream[100:]:
        d.learn_one(o)
    assert d.score_one(spike) > 0.5
    assert d.score_one(stream[-1]) < 0.5


def test_it_does_not_learn_what_it_flags() -> None:
    d = SelfHistory()
    stream = lone_host(None)
    for o in stream:
        d.learn_one(o)
    level = d.state["solo"]["cpu_pct"][0]
    t = stream[-1].time
    for k in range(1, 13):  # an hour at 95
        d.learn_one(Observation("solo", "ami-solo", "solo", t + timedelta(seconds=k * STEP), metrics={"cpu_pct": 95.0}))
    assert abs(d.state["solo"]["cpu_pct"][0] - level) < 1.0


def test_memory_per_host_is_bounded_and_survives_a_dump() -> None:
    d = SelfHistory(max_metrics=8)
    rng = random.Random(2)
    for k in range(2000):
        metrics = {f"m{rng.randint(0, 50)}": rng.random() for _ in range(5)}
        d.learn_one(Observation("h", "i", "f", T0 + timedelta(seconds=60 * k), metrics=metrics))
    assert len(d.state["h"]) == 8
    e = SelfHistory(max_metrics=8)
    e.restore("h", pickle.loads(pickle.dumps(d.dump("h"))))
    o = Observation("h", "i", "f", T0 + timedelta(seconds=60 * 2001), metrics={m: 9.0 for m in d.state["h"]})
    assert abs(e.score_one(o) - d.score_one(o)) < 1e-3
    d.learn_one(Observation("h", "i", "f", T0, gone=True))
    assert "h" not in d.state
