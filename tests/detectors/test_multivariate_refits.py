"""The multivariate model is refitted when its data changed, not on a clock: for a fixed number of metric
reports the number of refits does not depend on how much event time they span, a cohort that stays what
it was is not refitted at all, and one report just past the sample's range (noise) is not a refit."""

from __future__ import annotations

import math
import random

from det_helpers import obs

from contract.findings import FindingKind
from detectors import EngineConfig, FamilyEngine, Finding

HOSTS = 12


def drive(
    cadence_s: float, rounds: int, outlier_from: int | None = None, growth: float = 0.0
) -> tuple[FamilyEngine, list[Finding]]:
    """12 clones report cpu/mem/conns/net every `cadence_s`, `rounds` times; the engine ticks every round.
    From round `outlier_from` host h05 reports a vector unlike its clones' (no single metric extreme). With
    `growth`, every clone's connections grow together by that fraction per round (a cohort that drifts)."""
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
                "conns": rng.gauss(200, 10) * (1.0 + growth * r),
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


def test_a_cohort_that_stays_what_it_was_is_not_refitted() -> None:
    e, out = drive(cadence_s=300.0, rounds=200)
    # the first fit, and at most one for noise; before, one every refit_reports (48) rounds and more
    assert e.mv.fits <= 2, e.mv.fits
    assert out == []


def test_a_cohort_that_drifts_is_refitted_after_refit_reports_and_not_reported() -> None:
    e, out = drive(cadence_s=300.0, rounds=200, growth=0.02)  # connections x5 over the run, all clones alike
    assert e.mv.fits >= 3, e.mv.fits
    assert [f for f in out if f.kind == FindingKind.MULTIVARIATE_OUTLIER] == []


def test_one_report_just_past_the_sample_range_is_not_a_refit_one_far_past_it_is() -> None:
    e, _ = drive(cadence_s=300.0, rounds=20)
    m = e.mv._models["ami-web"]
    i = m.names.index("conns")
    width = float(m.hi[i] - m.lo[i])
    values = {"cpu_pct": 30.0, "mem_pct": 50.0, "net_bytes_out": 1e6}
    fits = e.mv.fits
    near = math.expm1(float(m.hi[i]) + 1.5 * width)  # 1.5 widths above the highest conns in the sample
    e.process(obs("h03", "ami-web", 20 * 300.0, metrics={**values, "conns": near}))
    assert e.mv.fits == fits
    far = math.expm1(float(m.hi[i]) + 3.0 * width)
    e.process(obs("h04", "ami-web", 20 * 300.0 + 1, metrics={**values, "conns": far}))
    assert e.mv.fits == fits + 1


def test_an_outlying_vector_is_refitted_into_the_sample_and_reported() -> None:
    _, out = drive(cadence_s=300.0, rounds=60, outlier_from=50)
    mv = [f for f in out if f.kind == FindingKind.MULTIVARIATE_OUTLIER]
    assert [f.host_id for f in mv] == ["h05"], [(f.host_id, f.details) for f in mv]


def test_cohorts_from_8_hosts_get_the_multivariate_model_by_default() -> None:
    assert EngineConfig().mv_min_hosts == 8
