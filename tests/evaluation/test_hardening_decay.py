"""The evaluation report's hardening decay: per image, the share of hosts still matching the image's hardening
check results by host age, from a small simulated fleet whose hosts drift (a manual sshd change, a sysctl
change) as they age; the HTML report draws it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from detectors import EngineConfig
from herdwatch.evaluation.chart import render_html
from herdwatch.evaluation.decay import decay_ages
from herdwatch.evaluation.report import RunInfo, build_report
from herdwatch.evaluation.runner import run_detectors
from herdwatch.evaluation.text import report_lines
from simulator.fleet import Fleet
from simulator.scenarios import SCENARIO_DIR, parse_scenario

HARDENED = {"hardening.inputs": "1", "os.id": "ubuntu", "os.id_like": "debian", "os.version_id": "24.04"}
SCENARIO: dict[str, Any] = {
    "name": "decay-small",
    "seed": 3,
    "start": "2026-03-02T00:00:00Z",
    "duration": "40m",
    "cycle": "60s",
    "warmup": "5m",
    "inventory_every": 10,
    "bursts_per_hour": 0,
    "images": [{"name": "web-1", "role": "web", "family": "web", "config": HARDENED},
               {"name": "plain-1", "role": "app", "family": "app"}],  # an older agent: not judged
    "cohorts": [{"name": "web", "image": "web-1", "hosts": 6}, {"name": "app", "image": "plain-1", "hosts": 3}],
    "events": [
        {"kind": "drift", "cohort": "web", "set": {"sshd.permitrootlogin": "yes"}, "share": 0.6,
         "age": ["12m", "25m"]},  # a manual sshd change
        {"kind": "drift", "cohort": "web", "set": {"sysctl.net.ipv4.ip_forward": "1"}, "share": 0.3,
         "age": ["2m", "8m"]},  # a sysctl change by hand
        {"kind": "scale_in", "cohort": "web", "host": 5, "at": "20m"},
    ],
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    sc = parse_scenario(SCENARIO)
    fleet = Fleet(sc)
    run = run_detectors(fleet.cycles(), EngineConfig(mv_enabled=False, min_hosts=3))
    info = RunInfo(scenario=sc.name, seed=sc.seed, start=sc.start, end=sc.end,
                   warmup_end=sc.start + timedelta(seconds=sc.warmup), cycle_s=sc.cycle,
                   host_cohort={p.host_id: p.cohort for p in fleet.plans.values()})
    rep = build_report(run, fleet.ground_truth, info)
    rep["truth"] = fleet.ground_truth_dicts()
    return rep


def test_the_report_shows_decay_by_host_age_per_image(report: dict[str, Any]) -> None:
    decay = report["hardening_decay"]
    assert decay["ages"] == ["10m", "30m"]  # what a 40 minute run spans
    [img] = decay["images"]  # the image whose agent reports no hardening inputs is not judged
    assert (img["image_family"], img["hosts"], img["gone"]) == ("web", 6, 1)
    drifts = [t for t in report["truth"] if t["kind"] == "drift"]
    at = {lab: {t["host_id"] for t in drifts if t["details"]["age_s"] <= s}
          for lab, s in zip(decay["ages"], decay["age_s"], strict=True)}
    drifted_hosts = {t["host_id"] for t in drifts}
    assert drifted_hosts and {d["host_id"] for d in img["drifted"]} == drifted_hosts
    c = img["compliance"]
    assert c["10m"]["eligible"] == 6 and c["10m"]["matching"] == 6 - len(at["10m"])
    assert c["30m"]["eligible"] == 5  # the host scaled in at 20 minutes did not live 30
    assert c["30m"]["share"] < c["10m"]["share"] <= 1.0  # decay: fewer hosts match their image as they age
    checks = {ch for d in img["drifted"] for ch in d["checks"]}
    assert checks <= {"ssh-root-login", "ip-forward"} and checks


def test_drifted_hosts_are_reported_and_the_html_draws_the_decay(report: dict[str, Any]) -> None:
    drift_rows = [s for s in report["scenarios"] if s["kind"] == "drift"]
    assert drift_rows and all(s["detected"] for s in drift_rows), drift_rows
    html = render_html(report, {})
    assert "<h2>Hardening decay</h2>" in html and "host age" in html and "match at 30m" in html
    [line] = [x for x in report_lines(report) if "hardening decay" in x]
    assert line.startswith("  hardening decay web ") and " 30m " in line and " drifted" in line


def test_age_buckets_fit_the_run() -> None:
    assert [a for a, _ in decay_ages(timedelta(weeks=2))] == ["1h", "1d", "1w"]
    assert [a for a, _ in decay_ages(timedelta(hours=8))] == ["10m", "30m", "1h", "3h", "6h"]
    assert [a for a, _ in decay_ages(timedelta(minutes=8))] == ["120s", "240s", "360s"]


def test_the_bundled_decay_scenario_drifts_hosts_as_they_age() -> None:
    sc = parse_scenario(yaml.safe_load((SCENARIO_DIR / "decay.yaml").read_text()))
    fleet = Fleet(sc)
    drifts = [g for g in fleet.ground_truth if g.kind == "drift"]
    assert len({g.host_id for g in drifts}) >= 10
    assert {k for g in drifts for k in g.details["changes"]} >= {"sshd.permitrootlogin", "sysctl.net.ipv4.ip_forward"}
    assert all(img.config.get("hardening.inputs") == "1" for img in sc.images.values())
    assert max(g.details["age_s"] for g in drifts) > 3600 > min(g.details["age_s"] for g in drifts)




def test_a_finding_on_a_host_with_two_drifts_is_credited_to_the_drift_it_names() -> None:
    from contract.findings import Finding, FindingKind, Severity
    from herdwatch.evaluation.report import classify
    from simulator.scenarios import GroundTruth

    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    truth = [GroundTruth(f"drift-{i}-h1", "drift", "drift", "h1", "web", t0 + timedelta(minutes=i),
                         t0 + timedelta(hours=1), details={"changes": {key: "x"}})
             for i, key in enumerate(["sshd.permitrootlogin", "sysctl.net.ipv4.ip_forward"])]
    info = RunInfo(scenario="s", seed=1, start=t0, end=t0 + timedelta(hours=1), warmup_end=t0, cycle_s=60.0,
                   host_cohort={})
    f = Finding(kind=FindingKind.POLICY_VIOLATION, host_id="h1", image_id="img", image_family="web",
                time=t0 + timedelta(minutes=5), score=0.3, severity=Severity.LOW, subject="hardening:ip-forward",
                explanation="...", details={"scope": "host", "after": {"sysctl.net.ipv4.ip_forward": "1"}})
    assert classify(f, truth, info, timedelta(minutes=5)) == "drift-1-h1"
