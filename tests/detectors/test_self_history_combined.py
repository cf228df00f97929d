"""SelfHistory combines a report's metrics (mean of the largest z, softly capped) and its recent reports."""

from __future__ import annotations

import random
import statistics

from detectors import SelfHistory
from detectors.peers import PeerDeviation


def trained(metrics: int, reports: int = 400, seed: int = 1) -> SelfHistory:
    """A host whose metrics m0.. are noisy around 10 (spread ~1) and whose `flat` metric never moved."""
    rng = random.Random(seed)
    d = SelfHistory(seasonal=False)
    for k in range(reports):
        values = {f"m{i}": 10.0 + rng.gauss(0, 1) for i in range(metrics)}
        d.observe("h", {**values, "flat": 0.0}, 60.0 * k)
    return d


def test_several_metrics_off_together_outrank_one_flat_metric_far_off() -> None:
    d = trained(8)
    usual = {f"m{i}": 10.0 for i in range(8)}
    one_far, _ = d.raw("h", {**usual, "flat": 5.0}, 1e6)  # z in the thousands on a metric that never moved
    several, _ = d.raw("h", {**{f"m{i}": 16.0 for i in range(8)}, "flat": 0.0}, 1e6)  # eight metrics ~5 z off
    assert several > one_far


def test_metrics_at_their_usual_level_do_not_dilute_a_lone_metric() -> None:
    d = trained(1)
    alone, top = d.raw("h", {"m0": 20.0, "flat": 0.0}, 1e6)
    assert top is not None and top.metric == "m0"
    assert alone == min(top.z, 10.0) or alone > 10.0  # the lone moving metric's own (softly capped) z


def test_a_spike_is_flagged_on_its_first_report_and_scores_above_a_usual_report() -> None:
    d = trained(4, reports=800)
    usual = {**{f"m{i}": 10.0 for i in range(4)}, "flat": 0.0}
    spike = {**usual, "m3": 40.0}
    c0, s0, _ = d._scores("h", usual, 1e6)
    c1, s1, _ = d._scores("h", spike, 1e6)
    thr = d.threshold("h")
    assert d.report_score(c1, s1, thr) > d.report_score(c0, s0, thr)
    assert s1 < c1  # the smoothed score moves a fifth of the way on one report
    raw, thr, top = d.observe("h", spike, 1e6)  # the report's own score is judged too: flagged at once
    assert thr is not None and raw >= thr and top is not None and top.metric == "m3"


def test_peer_statistics_match_numpy_median_and_mad() -> None:
    rng = random.Random(3)
    p = PeerDeviation()
    hosts = [f"h{i}" for i in range(9)]
    for k in range(3):
        for h in hosts:
            p.observe(h, "img", 60.0 * k, {"cpu": rng.uniform(0, 100)})
    med, scale, n = p.stats("img", "cpu", 200.0, "h0")
    others = [p.recent["img"][h][-1][1]["cpu"] for h in hosts[1:]]
    assert n == 8 and med == statistics.median(others)
    assert abs(scale - 1.4826 * statistics.median([abs(x - med) for x in others])) < 1e-9
