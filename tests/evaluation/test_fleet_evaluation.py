"""End to end on the synthetic clone fleet: compromises found, clean rollout and fleet life quiet."""

import pytest

from detectors import FamilyEngine, RolloutStatus
from detectors.backtest import replay
from detectors.reference import GlobalModel, HostHistoryModel
from detectors.synthetic import COMPROMISES, build_fleet
from herdwatch.evaluation.scoring import evaluate


@pytest.fixture(scope="module")
def fleet():
    return build_fleet(duration_s=3600.0, seed=7)


def test_cohort_engine_finds_every_compromise_and_stays_quiet_through_the_rollout(fleet) -> None:
    result = replay(fleet.events, FamilyEngine())
    report = evaluate(result.outputs, fleet.truth, host_hours=result.host_hours, family_of_host=result.family_of_host)
    assert {t["scenario"] for t in report["per_truth"]} == set(COMPROMISES)
    assert report["recall"] == 1.0, report["per_truth"]
    assert report["rollout_host_anomalies"] == 0
    assert report["false_positives"] == 0, report["false_positive_examples"]
    statuses = [r.status for r in result.rollouts]
    assert statuses[0] == RolloutStatus.STARTED and RolloutStatus.COMPLETED in statuses
    assert sum(1 for r in result.rollouts if r.diff) == 1
    assert all(p["ttd_s"] <= 180 for p in report["per_truth"])


def test_reference_methods_pay_for_ignoring_cohorts(fleet) -> None:
    per_host = replay(fleet.events, HostHistoryModel())
    global_ = replay(fleet.events, GlobalModel())
    r_host = evaluate(per_host.outputs, fleet.truth, family_of_host=per_host.family_of_host)
    r_global = evaluate(global_.outputs, fleet.truth, family_of_host=global_.family_of_host)
    # Per-host history alarms on cohort-wide spikes and pushes; one global model on the rollout.
    assert r_host["noise_false_alarms"].get("traffic_spike", 0) + r_host["noise_false_alarms"].get("config_push", 0) > 0
    assert r_global["rollout_host_anomalies"] > 0
