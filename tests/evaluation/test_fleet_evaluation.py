"""End to end on the simulator's demo fleet: compromises found, clean rollout and fleet life quiet."""

import pytest

from detectors import EngineConfig, FamilyEngine, RolloutStatus
from detectors.backtest import replay
from detectors.reference import GlobalModel, HostHistoryModel
from herdwatch.evaluation.scoring import evaluate
from simulator import presets
from simulator.fleet import Fleet
from streams.checks_data import engine_inputs

CHECKS = engine_inputs(EngineConfig())
"""The parsed hardening checks and policy rules every engine of the worker gets."""


@pytest.fixture(scope="module")
def fleet() -> presets.Run:
    """Six compromises, a clean rollout leaving one host behind, a rollback, a traffic spike, a config push."""
    return presets.run(Fleet.from_scenario("demo"))


def test_cohort_engine_finds_every_compromise_and_stays_quiet_through_the_rollout(fleet) -> None:
    result = replay(fleet.events, FamilyEngine(**CHECKS))
    report = evaluate(result.outputs, fleet.truth, host_hours=result.host_hours, family_of_host=result.family_of_host)
    compromises = {t["scenario"] for t in fleet.truth if t["kind"] == "compromise"}
    assert len(compromises) == 6
    assert {t["scenario"] for t in report["per_truth"]} == compromises | {"api-stale-host"}
    assert report["recall"] == 1.0, report["per_truth"]
    assert report["rollout_host_anomalies"] == 0
    assert report["false_positives"] == 0, report["false_positive_examples"]
    statuses = [r.status for r in result.rollouts if r.image_family == "api"]
    assert statuses[0] == RolloutStatus.STARTED and RolloutStatus.COMPLETED in statuses
    assert sum(1 for r in result.rollouts if r.diff and r.image_family == "api") == 1
    assert all(p["ttd_s"] <= 180 for p in report["per_truth"] if p["scenario"] in compromises)


def test_reference_methods_pay_for_ignoring_cohorts(fleet) -> None:
    per_host = replay(fleet.events, HostHistoryModel(**CHECKS))
    global_ = replay(fleet.events, GlobalModel(**CHECKS))
    r_host = evaluate(per_host.outputs, fleet.truth, family_of_host=per_host.family_of_host)
    r_global = evaluate(global_.outputs, fleet.truth, family_of_host=global_.family_of_host)
    # Per-host history alarms on cohort-wide spikes and pushes; one global model on the rollout.
    assert r_host["noise_false_alarms"].get("traffic_spike", 0) + r_host["noise_false_alarms"].get("config_push", 0) > 0
    assert r_global["rollout_host_anomalies"] > 0
