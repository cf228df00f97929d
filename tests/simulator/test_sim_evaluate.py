"""`herdwatch evaluate`: the report arithmetic on hand-made findings, and the whole command on the CI
scenario (simulator -> detectors -> report JSON + HTML chart)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contract.findings import Finding, FindingKind, RolloutEvent, RolloutStatus, Severity
from herdwatch.cli import main
from herdwatch.evaluation import evaluate_scenario
from herdwatch.evaluation.chart import render_html
from herdwatch.evaluation.report import RunInfo, build_report
from herdwatch.evaluation.runner import DetectionRun, HostSeen
from simulator.scenarios import GroundTruth

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def finding(host: str, minute: float, family: str = "web", scope: str | None = None) -> Finding:
    return Finding(
        details={"scope": scope} if scope else {},
        kind=FindingKind.RARE_FEATURE,
        host_id=host,
        image_id="ami-01",
        image_family=family,
        time=at(minute),
        score=0.9,
        severity=Severity.HIGH,
        subject="proc:x",
        explanation=f"something odd on {host}",
    )


def synthetic() -> tuple[DetectionRun, list[GroundTruth], RunInfo]:
    truth = [
        GroundTruth("miner", "compromise", "cryptominer", "h1", "web", at(10), at(20)),
        GroundTruth("shell", "compromise", "reverse_shell", "h2", "web", at(15), at(25)),
        GroundTruth("roll", "rollout", "rollout", None, "api", at(12), at(30), hosts=("n1", "n2")),
    ]
    run = DetectionRun()
    for h, fam in [("h1", "web"), ("h2", "web"), ("h3", "web"), ("n1", "api"), ("n2", "api")]:
        run.hosts[h] = HostSeen(h, "ami-01", fam, at(0), at(60))
    run.findings = [
        finding("h1", 2),  # warm-up (before 5 min): counted apart
        finding("h1", 11),  # detects miner after 60 s
        finding("h1", 12),  # matched again
        finding("h3", 30),  # false alarm
        finding("h1", 40),  # after miner window + grace: false alarm
        finding("n1", 28, "api"),  # inside the rollout window: rollout host anomaly (and a false alarm)
        finding("h3", 50, scope="image"),  # the whole image has it: counted apart
    ]
    run.rollouts = [RolloutEvent("api", "ami-old", "ami-new", RolloutStatus.COMPLETED, 1.0, at(30), "done")]
    info = RunInfo("t", 1, T0, at(60), at(5), 10.0, {"h1": "web", "h2": "web", "h3": "web", "n1": "api", "n2": "api"})
    return run, truth, info


def test_report_arithmetic_on_hand_made_findings() -> None:
    run, truth, info = synthetic()
    rep = build_report(run, truth, info, grace_s=300)
    s = rep["summary"]
    assert (s["injected"], s["detected"], s["recall"]) == (2, 1, 0.5)
    assert s["warmup_findings"] == 1
    assert s["findings_after_warmup"] == 6 and s["image_findings"] == 1 and s["matched_findings"] == 2
    assert s["precision"] == pytest.approx(2 / 5, abs=1e-4)  # image-level findings are not host alarms
    assert s["false_alarms"] == 3 and s["rollout_host_anomalies"] == 1
    assert s["host_hours_after_warmup"] == pytest.approx(5 * 55 / 60, abs=1e-3)
    assert s["false_alarms_per_1000_host_hours"] == pytest.approx(3 / (5 * 55 / 60) * 1000, abs=0.01)
    miner = next(x for x in rep["scenarios"] if x["scenario"] == "miner")
    assert miner["detected"] and miner["time_to_detect_s"] == 60.0
    assert not next(x for x in rep["scenarios"] if x["scenario"] == "shell")["detected"]
    assert rep["rollouts"][0]["statuses_reported"] == ["completed"]
    assert rep["targets"] == {
        "every_compromise_reported_on_its_host": False,
        "clean_rollout_zero_host_anomalies": False,
        "false_alarms_below_1_per_1000_host_hours": False,
    }
    labels = [a["label"] for a in rep["anomalies"]]
    assert labels == ["warmup", "miner", "miner", "rollout:roll", "false_alarm", "false_alarm", "image"]


def test_html_is_self_contained_and_marks_windows_and_findings() -> None:
    run, truth, info = synthetic()
    page = render_html(build_report(run, truth, info), info.host_cohort)
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count("cryptominer") >= 2 and "something odd on h3" in page


@pytest.fixture(scope="module")
def ci_result():  # type: ignore[no-untyped-def]
    return evaluate_scenario("ci")


def test_ci_scenario_meets_the_detection_targets(ci_result) -> None:  # type: ignore[no-untyped-def]
    rep = ci_result.report
    missed = [s["scenario"] for s in rep["scenarios"] if not s["detected"]]
    assert missed == [], f"not reported on the right host: {missed}"
    assert rep["summary"]["rollout_host_anomalies"] == 0
    for s in rep["scenarios"]:
        assert s["first_finding"]["host_id"] == s["host_id"]
        assert s["time_to_detect_s"] >= 0
        assert s["explanations"]
    statuses = {r["kind"]: r["statuses_reported"] for r in rep["rollouts"]}
    assert "completed" in statuses["rollout"] and "rolled_back" in statuses["rollback"]


def test_ci_report_counts_everything_the_fleet_sent(ci_result) -> None:  # type: ignore[no-untyped-def]
    sent = sum(len(evs) for _, evs in ci_result.fleet.batches())
    assert ci_result.report["run"]["events"] == sent
    assert ci_result.report["run"]["hosts"] == len(ci_result.fleet.plans)
    rep = ci_result.report
    labels = Counter(a["label"] for a in rep["anomalies"])
    scenario_names = {s["scenario"] for s in rep["scenarios"]}
    assert sum(n for lab, n in labels.items() if lab in scenario_names) == rep["summary"]["matched_findings"]
    assert sum(n for lab, n in labels.items() if lab == "false_alarm" or ":" in lab) == rep["summary"]["false_alarms"]


def test_ci_run_knows_each_hosts_span_and_its_scores_per_cycle(ci_result) -> None:  # type: ignore[no-untyped-def]
    run = ci_result.run
    times: dict[str, list[datetime]] = {}
    for _, events in ci_result.fleet.batches():
        for e in events:
            times.setdefault(e.host_id, []).append(e.time)
    assert {h: (s.first, s.last) for h, s in run.hosts.items()} == {h: (min(t), max(t)) for h, t in times.items()}
    assert len(run.cycle_times) == run.cycles and (run.start, run.end) == (run.cycle_times[0], run.cycle_times[-1])
    assert run.scores and all(0 <= k < run.cycles and v > 0 for per in run.scores.values() for k, v in per.items())
    for s in ci_result.report["scenarios"]:
        if s["host_id"] in run.hosts:  # the chart shows each injected host scoring once its scenario began
            begun = datetime.fromisoformat(s["start"])
            assert any(run.cycle_times[k] >= begun for k in run.scores.get(s["host_id"], {})), s["scenario"]


def test_evaluate_command_writes_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", "ci", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["scenario"] == "ci" and rep["summary"]["injected"] == 7
    html = (out / "report.html").read_text()
    assert "<svg" in html and all(s["host_id"] in html for s in rep["scenarios"])
    truth = json.loads((out / "ground_truth.json").read_text())
    assert {g["scenario"] for g in truth} >= {s["scenario"] for s in rep["scenarios"]}
    assert "detected 7/7" in capsys.readouterr().out


def test_evaluate_command_reports_a_bad_scenario_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "no-such-scenario"]) == 1
    assert "not found" in capsys.readouterr().err
