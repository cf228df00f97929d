"""`herdwatch lab report`: the simulator's report (herdwatch/evaluation) over a lab run: the findings
and rollout events on the lab's topics, matched against the lab's ground truth, host-hours from the
lab's own host records, forensic answers about destroyed lab hosts from the lab's store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from herdwatch.lab.state import LabState, now

Say = Callable[[str], None]


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def wait_for_pipeline(state: LabState, say: Say, timeout: float = 120.0) -> bool:
    """Until the worker and the sink have committed everything on their topics (three times in a row)."""
    from contract.kafka_admin import group_lag
    from contract.settings import KafkaSettings

    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{state.kafka_port}", topic_prefix=state.topic_prefix)
    t = kafka.topics
    groups = {f"{state.topic_prefix}-streams": [t.telemetry, t.observations],
              f"{state.topic_prefix}-sink": [t.telemetry, t.anomalies, t.rollouts, t.lifecycle]}
    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        lags = {g: group_lag(kafka, g, topics) for g, topics in groups.items()}
        quiet = quiet + 1 if all(v == 0 for v in lags.values()) else 0
        if quiet >= 3:
            return True
        time.sleep(1.0)
    say(f"  the pipeline did not catch up within {timeout:.0f} s; the report covers what was processed")
    return False


def stored_decay(client: Any, hosts: dict[str, Any], gone: dict[str, datetime], start: datetime,
                 end: datetime) -> dict[str, Any]:
    """The report's hardening decay (herdwatch/evaluation/decay.py) over the configuration history the lab's
    sink stored, as `herdwatch hardening` reads it; `gone`: when destroyed hosts were destroyed."""
    from herdwatch.evaluation.decay import hardening_decay
    from storage.queries import run_named

    rows = run_named(client, "hardening_inputs", image="", family="", until=end).dicts()
    return hardening_decay([r for r in rows if r["host_id"] in hosts], hosts.values(), gone, start, end)


def build_lab_report(state: LabState, say: Say = print, forensics: bool = True) -> dict[str, Any]:
    """The report from the lab's anomaly and rollout topics (its Kafka must be up)."""
    from contract.findings import Finding, RolloutEvent
    from contract.settings import KafkaSettings
    from herdwatch.demo import read_topic

    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{state.kafka_port}", topic_prefix=state.topic_prefix)
    findings = [Finding.from_dict(json.loads(v)) for v in read_topic(kafka, kafka.topics.anomalies)]
    rollouts = [RolloutEvent.from_dict(json.loads(v)) for v in read_topic(kafka, kafka.topics.rollouts)]
    return score_lab(state, findings, rollouts, say, forensics)


def rescore_lab_report(lab_dir: Path, say: Say = print) -> dict[str, Any]:
    """The report of a finished lab again, from its report.json's findings and rollout events, its state and
    ground truth, with today's evaluation rules (no Kafka needed; the hardening decay and forensic answers
    are taken from the lab's store when it can be opened). The previous report is kept as
    report.previous.json."""
    from contract.findings import Finding, RolloutEvent

    lab_dir = Path(lab_dir)
    old_path = lab_dir / "report.json"
    if not old_path.exists() or not (lab_dir / "state.json").exists():
        raise FileNotFoundError(f"{lab_dir} has no report.json and state.json: give a lab's folder, "
                                f"var/lab/<lab id>")
    old = json.loads(old_path.read_text())
    state = LabState.load(lab_dir / "state.json")
    findings = [Finding.from_dict({k: v for k, v in a.items() if k != "label"}) for a in old.get("anomalies", [])]
    rollouts = [RolloutEvent.from_dict(e) for e in old.get("rollout_events", [])]
    old_path.replace(lab_dir / "report.previous.json")
    return score_lab(state, findings, rollouts, say, forensics=True)


def score_lab(state: LabState, findings: list[Any], rollouts: list[Any], say: Say = print,
              forensics: bool = True) -> dict[str, Any]:
    """Match a lab's findings and rollout events against its ground truth; print and write the report."""
    from contract.settings import StorageSettings
    from herdwatch.demo import forensics as ask_forensics
    from herdwatch.demo import print_findings
    from herdwatch.evaluation.chart import render_html
    from herdwatch.evaluation.report import DURING_ATTACK, RunInfo, build_report, is_false_alarm
    from herdwatch.evaluation.runner import DetectionRun, HostSeen
    from herdwatch.evaluation.text import report_lines
    from simulator.scenarios import GroundTruth

    start = _t(state.started)
    end = _t(state.ended) if state.ended else now()
    hosts = {h.host_id: HostSeen(h.host_id, h.image_id, h.family, _t(h.first), _t(h.last) if h.last else end)
             for h in state.hosts if h.first}
    truth = [GroundTruth.from_dict(r) for r in state.truth]
    run = DetectionRun(findings=findings, rollouts=rollouts, hosts=hosts, start=start, end=end)
    host_cohort = {h.host_id: h.image_id for h in state.hosts}
    info = RunInfo(scenario=f"lab {state.lab_id}", seed=0, start=start, end=end,
                   warmup_end=start + timedelta(seconds=state.warmup_s), cycle_s=10.0, host_cohort=host_cohort)
    report = build_report(run, truth, info)
    client = None
    if forensics:
        try:
            from storage.query_client import open_query_client

            client = open_query_client(StorageSettings(var_dir=Path(state.lab_dir)))
            gone = {h.host_id: _t(h.last) for h in state.hosts if h.first and h.last and not h.alive}
            report["hardening_decay"] = stored_decay(client, hosts, gone, start, end)
        except Exception as e:  # the store is the sink's; without it the report still stands
            say(f"\nhardening decay skipped: {e}")
    report["lab"] = {"lab_id": state.lab_id, "subnet": f"{state.subnet}.0/24", "life": state.life,
                     "hosts": [{"host_id": h.host_id, "slot": h.slot, "image_id": h.image_id, "ip": h.ip,
                                "first": h.first, "last": h.last} for h in state.hosts]}
    print_findings(findings, rollouts, say)
    for line in report_lines(report):
        say(line)
    false_alarms = [f for f in report["anomalies"] if is_false_alarm(f["label"])]
    during = [f for f in report["anomalies"] if f["label"].startswith(DURING_ATTACK)]
    for title, listed in (("False alarms", false_alarms),
                          ("On attacked hosts during their attacks, naming no attack evidence", during)):
        if listed:
            say(f"\n{title} ({len(listed)}):")
            for f in listed:
                say(f"  {f['time']} {f['kind']:<18} {f['host_id']:<20} {f['subject']}: {f['explanation']}")
    if client is not None:
        try:
            report["forensics"] = ask_forensics(client, SimpleNamespace(ground_truth=truth), say)
        except Exception as e:  # the store is the sink's; without it the report still stands
            say(f"\nforensics skipped: {e}")
    out = Path(state.lab_dir)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.html").write_text(render_html(report, host_cohort))
    (out / "ground_truth.json").write_text(json.dumps(state.truth, indent=2))
    say(f"\nreport: {out / 'report.json'}, chart: {out / 'report.html'}")
    return report
