"""The multivariate model is refitted when its data changed, not on a clock: for a fixed number of metric
reports the number of refits does not depend on how much event time they span."""

from __future__ import annotations

import random

from det_helpers import obs

from contract.findings import FindingKind
from detectors import EngineConfig, FamilyEngine, Finding

HOSTS = 12


def drive(cadence_s: float, rounds: int, outlier_from: int | None = None) -> tuple[FamilyEngine, list[Finding]]:
    """12 clones report cpu/mem/conns/net every `cadence_s`, `rounds` times; the engine ticks every round.
    From round `outlier_from` host h05 reports a vector unlike its clones' (no single metric extreme)."""
    rng = random.Random(5)
    # only the multivariate detector speaks; every clone's latest report counts (window longer than a cadence)
    e = FamilyEngine(config=EngineConfig(peer_persistence=1000, peer_window_s=7200))
    out: list[Finding] = []
    for r in range(rounds):
        t = r * cadence_s
        for i in range(HOSTS):
            m = {
                "cpu_pct": rng.gauss(30, 2),
                "mem_pct": rng.gauss(50, 2),
                "conns": rng.gauss(200, 10),
                "net_bytes_out": rng.gauss(1e6, 5e4),
            }
            if outlier_from is not None and r >= outlier_from and i == 5:
                m = {"cpu_pct": 45.0, "mem_pct": 35.0, "conns": 140.0, "net_bytes_out": 3e6}
            out += [o for o in e.process(obs(f"h{i:02d}", "ami-web", t + i * 0.01, metrics=m, first=r == 0))
                    if isinstance(o, Finding)]
        out += [o for o in e.tick(t + cadence_s - 1) if isinstance(o, Finding)]
    return e, out


def test_refits_do_not_grow_with_event_time_for_the_same_reports() -> None:
    short, _ = drive(cadence_s=150.0, rounds=200)
    long, _ = drive(cadence_s=3600.0, rounds=200)  # the same reports spread over 24 times the event time
    assert short.mv.fits == long.mv.fits
    # about one refit per refit_reports rounds (plus the first fit and reports outside the fitted range)
    assert 200 // 48 <= short.mv.fits <= 200 // 48 + 4, short.mv.fits


def test_an_outlying_vector_is_refitted_into_the_sample_and_reported() -> None:
    _, out = drive(cadence_s=300.0, rounds=60, outlier_from=50)
    mv = [f for f in out if f.kind == FindingKind.MULTIVARIATE_OUTLIER]
    assert [f.host_id for f in mv] == ["h05"], [(f.host_id, f.details) for f in mv]


def test_cohorts_from_8_hosts_get_the_multivariate_model_by_default() -> None:
    assert EngineConfig().mv_min_hosts == 8
