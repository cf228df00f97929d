"""Scoring findings against ground truth: matches, false alarms, fleet-life windows, image-level findings."""

from datetime import UTC, datetime, timedelta

from contract.findings import Finding, FindingKind, RolloutEvent, RolloutStatus, Severity
from herdwatch.evaluation.scoring import evaluate, format_comparison

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def finding(host: str, s: float, family: str = "web", scope: str | None = None) -> Finding:
    return Finding(
        FindingKind.RARE_FEATURE,
        host,
        "ami-1",
        family,
        at(s),
        0.9,
        Severity.HIGH,
        "proc:x",
        "x",
        {"scope": scope} if scope else {},
    )


TRUTH = [
    {"host_id": "h1", "scenario": "cryptominer", "start": at(100).isoformat(), "end": at(1000).isoformat()},
    {"host_id": "h2", "scenario": "reverse_shell", "start": at(200), "end": at(1000)},
    {
        "host_id": None,
        "scenario": "rollout",
        "kind": "rollout",
        "image_family": "api",
        "start": at(0),
        "end": at(500),
    },
]


def test_precision_recall_ttd_and_attribution() -> None:
    out = [
        finding("h1", 130),
        finding("h1", 140),
        finding("h3", 50, family="api"),
        finding("h4", 2000),
        finding("h9", 300, scope="image"),
        RolloutEvent("api", "a", "b", RolloutStatus.STARTED, 0.1, at(0), "x"),
    ]
    r = evaluate(out, TRUTH, host_hours=10.0)
    assert r["true_positives"] == 2 and r["false_positives"] == 2 and r["findings"] == 4
    assert r["precision"] == 0.5 and r["recall"] == 0.5
    assert r["per_truth"][0] == {"host_id": "h1", "scenario": "cryptominer", "detected": True, "ttd_s": 30.0}
    assert r["per_truth"][1]["detected"] is False
    assert r["rollout_host_anomalies"] == 1 and r["rollout_events"] == 1 and r["image_findings"] == 1
    assert r["false_alarms_per_1000_host_hours"] == 200.0
    table = format_comparison({"cohort": r, "global": r})
    assert "precision" in table and "1/2" in table


def test_a_row_with_evidence_is_credited_only_with_a_finding_that_names_it() -> None:
    truth = [{"host_id": "h1", "scenario": "dropper", "start": at(100), "end": at(400),
              "details": {"evidence": ["update.sh", ":8000"]}}]
    unrelated = Finding(FindingKind.RARE_FEATURE, "h1", "ami-1", "web", at(150), 0.9, Severity.HIGH,
                        "proc:/usr/bin/find|find /var/log -name *.gz|root", "log rotation's find", {})
    r = evaluate([unrelated], truth)
    assert (r["detected"], r["false_positives"], r["during_attack"]) == (0, 0, 1)
    assert evaluate([unrelated], [{**truth[0], "host_id": "h2"}])["false_positives"] == 1  # not its host
    named = Finding(FindingKind.RARE_FEATURE, "h1", "ami-1", "web", at(160), 0.9, Severity.HIGH,
                    "proc:/usr/bin/curl|curl -fsS http://#.#.#.#:#/UPDATE.SH|root", "x", {})
    in_details = Finding(FindingKind.RARE_FEATURE, "h1", "ami-1", "web", at(170), 0.9, Severity.HIGH,
                         "dest:tcp/8000@10.9.0.0/24", "x", {"instance": {"remote": "10.9.0.2:8000"}})
    r = evaluate([unrelated, named, in_details], truth)
    assert (r["detected"], r["true_positives"], r["false_positives"], r["during_attack"]) == (1, 2, 0, 1)
    assert r["per_truth"][0]["ttd_s"] == 60.0


def test_the_report_labels_a_finding_that_names_no_evidence_apart_from_false_alarms() -> None:
    from herdwatch.evaluation.report import DURING_ATTACK, RunInfo, build_report, is_false_alarm
    from herdwatch.evaluation.runner import DetectionRun, HostSeen
    from simulator.scenarios import GroundTruth

    row = GroundTruth("dropper", "compromise", "dropper", "h1", "web", at(100), at(400),
                      details={"evidence": ["update.sh"]})
    shell_init = Finding(FindingKind.RARE_FEATURE, "h1", "ami-1", "web", at(150), 0.9, Severity.HIGH,
                         "proc:/root/.pyenv/libexec/pyenv|pyenv init -|root", "x", {})
    named = Finding(FindingKind.RARE_FEATURE, "h1", "ami-1", "web", at(160), 0.9, Severity.HIGH,
                    "proc:/usr/bin/curl|curl http://#.#.#.#:#/update.sh|root", "x", {})
    elsewhere = Finding(FindingKind.RARE_FEATURE, "h2", "ami-1", "web", at(160), 0.9, Severity.HIGH,
                        "proc:/usr/bin/find|find|root", "x", {})
    hosts = {h: HostSeen(h, "ami-1", "web", at(0), at(3600)) for h in ("h1", "h2")}
    run = DetectionRun(findings=[shell_init, named, elsewhere], rollouts=[], hosts=hosts, start=at(0), end=at(3600))
    info = RunInfo(scenario="lab", seed=0, start=at(0), end=at(3600), warmup_end=at(60), cycle_s=10.0,
                   host_cohort={"h1": "ami-1", "h2": "ami-1"})
    rep = build_report(run, [row], info)
    labels = {a["subject"]: a["label"] for a in rep["anomalies"]}
    assert labels[shell_init.subject] == DURING_ATTACK + "dropper" and not is_false_alarm(labels[shell_init.subject])
    assert labels[named.subject] == "dropper" and labels[elsewhere.subject] == "false_alarm"
    s = rep["summary"]
    assert (s["detected"], s["false_alarms"], s["during_attack_findings"], s["precision"]) == (1, 1, 1, 0.5)
    assert rep["scenarios"][0]["time_to_detect_s"] == 60.0


def test_a_drifted_hosts_other_findings_in_its_window_are_false_alarms() -> None:
    truth = [{"host_id": "h1", "scenario": "drift-x11", "kind": "drift", "start": at(100), "end": at(400),
              "details": {"changes": ["sshd.x11forwarding"], "evidence": ["sshd"]}}]
    other = Finding(FindingKind.CONFIG_DRIFT, "h1", "ami-1", "web", at(150), 0.9, Severity.HIGH,
                    "cfg:file.sha256:/etc/hosts=aa11", "x", {})
    r = evaluate([other], truth)
    assert (r["detected"], r["false_positives"], r["during_attack"]) == (0, 1, 0)


def test_a_campaign_finding_detects_the_hosts_it_names_only_with_their_evidence_in_table_and_summary() -> None:
    from herdwatch.evaluation.report import RunInfo, build_report
    from herdwatch.evaluation.runner import DetectionRun, HostSeen
    from simulator.scenarios import GroundTruth

    rows = [GroundTruth(f"campaign-{h}", "compromise", "cryptominer", h, "web", at(100), at(400),
                        details={"evidence": ["kworkerds"]}) for h in ("h1", "h2")]
    hosts = {h: HostSeen(h, "ami-1", "web", at(0), at(3600)) for h in ("h1", "h2", "h3")}
    info = RunInfo(scenario="lab", seed=0, start=at(0), end=at(3600), warmup_end=at(60), cycle_s=10.0,
                   host_cohort={h: "ami-1" for h in hosts})

    def campaign(subject: str) -> Finding:
        return Finding(FindingKind.CAMPAIGN, "h1", "ami-1", "web", at(170), 0.9, Severity.HIGH, subject, "x",
                       {"hosts": ["h1", "h2"], "scope": "cohort"})

    for subject, found in (("proc:/usr/bin/mkdir|mkdir -p /tmp/.cache|root", False),
                           ("proc:/tmp/.cache/kworkerds|kworkerds /dev/zero|root", True)):
        rep = build_report(DetectionRun(findings=[campaign(subject)], rollouts=[], hosts=hosts, start=at(0),
                                        end=at(3600)), rows, info)
        table = [s["detected"] for s in rep["scenarios"]]
        assert table == [found, found]
        assert rep["summary"]["detected"] == sum(table)
