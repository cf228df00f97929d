"""Peer statistics follow the hosts' reporting interval and do not depend on the order hosts arrive in."""

from __future__ import annotations

import random
from datetime import timedelta

from det_helpers import T0

from detectors import EngineConfig, FamilyEngine, Observation

HOSTS = [f"h{i}" for i in range(6)]
INTERVAL = 300.0  # five-minute metrics: longer than the old fixed 180 s peer window


def report(host: str, cycle: int, offset: float, rng: random.Random) -> Observation:
    cpu = 30.0 + rng.gauss(0, 3) + (60.0 if host == "h3" and 20 <= cycle < 30 else 0.0)
    return Observation(
        host, "ami-c", "c", T0 + timedelta(seconds=cycle * INTERVAL + offset), metrics={"cpu_pct": cpu, "conns": 100.0}
    )


def run(offsets: dict[str, float], shuffle: bool, cycles: int = 40) -> dict[tuple[str, int], dict[str, float]]:
    """Replay one data set (same values) with per-host time offsets; returns every report's scores."""
    engine = FamilyEngine(config=EngineConfig(record_scores=True))
    values = random.Random(1)
    data = {(h, k): report(h, k, offsets[h], values) for k in range(cycles) for h in HOSTS}
    order = sorted(data, key=lambda hk: (data[hk].time, hk[0]))
    if shuffle:  # arrival order within one timestamp is arbitrary
        rng = random.Random(7)
        order = sorted(order, key=lambda hk: (data[hk].time, rng.random()))
    scores = {}
    for hk in order:
        engine.process(data[hk])
        scores[hk] = dict(engine.last_scores)
    return scores


def test_staggered_and_aligned_replays_give_the_same_scores() -> None:
    aligned = run({h: 0.0 for h in HOSTS}, shuffle=False)
    shuffled = run({h: 0.0 for h in HOSTS}, shuffle=True)
    staggered = run({h: 17.0 * i for i, h in enumerate(HOSTS)}, shuffle=True)  # live: up to 85 s apart
    judged = [hk for hk in aligned if hk[1] >= 1]  # a host's first report has no interval yet
    for name in ("peers", "metric"):
        assert [aligned[hk][name] for hk in judged] == [shuffled[hk][name] for hk in judged]
        assert [aligned[hk][name] for hk in judged] == [staggered[hk][name] for hk in judged]
    # the peer view works at a five-minute cadence: the planted load on h3 scores, the others do not
    assert min(aligned[("h3", k)]["peers"] for k in range(21, 30)) > 0.5
    assert max(aligned[(h, k)]["peers"] for h in HOSTS if h != "h3" for k in range(1, 40)) < 0.5


def test_peer_window_follows_the_cadence() -> None:
    engine = FamilyEngine()
    for k in range(3):
        for h in HOSTS:
            t = T0 + timedelta(seconds=k * INTERVAL)
            engine.process(Observation(h, "ami-c", "c", t, metrics={"cpu_pct": 30.0}))
    cut, window = engine.peers.cutoff("h0", (T0 + timedelta(seconds=3 * INTERVAL)).timestamp())
    assert window == 3 * INTERVAL and cut == (T0 + timedelta(seconds=2.5 * INTERVAL)).timestamp()
    assert engine.peers.stats("ami-c", "cpu_pct", (T0 + timedelta(seconds=3 * INTERVAL)).timestamp(), "h0")[2] == 5


def test_five_minute_hosts_are_not_timed_out_between_reports() -> None:
    engine = FamilyEngine()
    for k in range(4):
        for h in HOSTS:
            t = T0 + timedelta(seconds=k * INTERVAL)
            engine.process(Observation(h, "ami-c", "c", t, metrics={"cpu_pct": 30.0}))
        engine.tick(T0 + timedelta(seconds=k * INTERVAL + INTERVAL - 1))
    assert engine.baseline.n("ami-c") == len(HOSTS)
