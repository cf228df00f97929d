"""The detection report: detector output matched against a scenario's ground truth.

The headline numbers come from `scoring.evaluate` (the same scoring `herdwatch backtest --truth` uses), run
over the findings after the warm-up. Its rules (documented in docs/simulator.md):
- a finding *detects* an injected host scenario when it names that host and falls in
  [start, end + grace]; a stale-image scenario needs a stale_image finding; time to detect = first such
  finding - start;
- image-level findings (details.scope == "image": the whole image shares the problem) are counted apart;
- every other host finding is a false alarm; one inside a normal fleet-life window (rollout, rollback,
  traffic spike, config push) of its family is also attributed to that window (a finding in the clean
  rollout's window is a *rollout host anomaly*, target zero);
- a scenario that lists `evidence` (the lab's attacks and drifts) is detected only by a finding naming one of
  it; an attacked host's other findings in the attack's window are labelled "during_attack:<scenario>",
  neither detections nor false alarms, and counted apart (a drifted host's are judged as any host's);
- precision = matched findings / (matched findings + false alarms); recall = detected / injected host scenarios;
  false alarms per 1,000 host-hours = false alarms / host-hours observed after the warm-up x 1,000.
Findings during the warm-up (cohort baselines still forming) are counted apart. This module adds the
per-finding labels, the per-scenario explanations, false alarms per cohort and the chart data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contract.findings import Finding
from herdwatch.evaluation.decay import hardening_decay
from herdwatch.evaluation.runner import DetectionRun
from herdwatch.evaluation.scoring import evaluate, names_evidence
from simulator.scenarios import GroundTruth

HOST_KINDS = ("compromise", "stale_image", "drift")
"""Ground truth about one host: a finding on it in its window is expected (drift: a host changed by hand after
it was cloned, from a scenario's drift events)."""
ROLLOUT_KINDS = ("rollout", "rollback")
DURING_ATTACK = "during_attack:"
"""Label prefix of a finding on an attacked host in the attack's window that names none of its evidence."""
TARGET_FALSE_ALARMS_PER_1000_HOST_HOURS = 1.0


@dataclass(frozen=True)
class RunInfo:
    """What the report needs to know about the run besides the detector output."""

    scenario: str
    seed: int
    start: datetime
    end: datetime
    warmup_end: datetime
    cycle_s: float
    host_cohort: dict[str, str]


def classify(f: Finding, truth: list[GroundTruth], info: RunInfo, grace: timedelta) -> str:
    """A finding's label: the scenario it detects, "image", "warmup", "<fleet event kind>:<name>" (a false
    alarm inside a normal fleet-life window) or "false_alarm"."""
    if f.details.get("scope") == "image":
        return "image"
    matches = [
        g for g in truth
        if g.kind in HOST_KINDS
        and f.host_id == g.host_id
        and g.start <= f.time <= g.end + grace
        and (g.kind != "stale_image" or f.kind.value == "stale_image")
    ]
    if matches:
        as_dict = f.to_dict()
        named_evidence = [g for g in matches if names_evidence(as_dict, g.details.get("evidence"))]
        attacked = [g for g in matches if g.kind == "compromise"]
        if named_evidence:
            # a host with several drifts: the one whose changed keys the finding names
            about = f"{f.subject} {f.details.get('after') or ''} {f.details.get('feature') or ''}"
            named = [g for g in named_evidence if any(k in about for k in g.details.get("changes") or ())]
            return (named or named_evidence)[0].scenario
        if attacked:
            return DURING_ATTACK + attacked[0].scenario
        # a drifted host's other findings: judged as any host's below
    if f.time < info.warmup_end:
        return "warmup"
    for g in truth:
        if g.host_id is None and g.image_family in (None, f.image_family) and g.start <= f.time <= g.end + grace:
            return f"{g.kind}:{g.scenario}"
    return "false_alarm"


def names_host(f: Finding, g: GroundTruth, grace: timedelta) -> bool:
    """A campaign finding detects every host it names (details.hosts), within the host's window, when it
    names the scenario's evidence (the rule the summary counts by, scoring.evaluate)."""
    return (
        f.kind.value == "campaign"
        and g.kind in HOST_KINDS
        and g.kind != "stale_image"
        and g.host_id in (f.details.get("hosts") or ())
        and g.start <= f.time <= g.end + grace
        and names_evidence(f.to_dict(), g.details.get("evidence"))
    )


def is_false_alarm(label: str) -> bool:
    return label == "false_alarm" or (":" in label and not label.startswith(DURING_ATTACK))


def host_hours(run: DetectionRun, since: datetime, host_cohort: dict[str, str]) -> dict[str, float]:
    """Observed host-hours after `since`, per cohort (hosts seen but not planned count as 'unknown')."""
    out: dict[str, float] = defaultdict(float)
    for h in run.hosts.values():
        first = max(h.first, since)
        if h.last > first:
            out[host_cohort.get(h.host_id, "unknown")] += (h.last - first).total_seconds() / 3600.0
    return dict(out)


def build_report(run: DetectionRun, truth: list[GroundTruth], info: RunInfo, grace_s: float = 300.0) -> dict[str, Any]:
    grace = timedelta(seconds=grace_s)
    labelled = [(f, classify(f, truth, info, grace)) for f in sorted(run.findings, key=lambda f: f.time)]
    after = [f for f, lab in labelled if lab != "warmup"]
    false_alarms = [(f, lab) for f, lab in labelled if is_false_alarm(lab)]
    hours = host_hours(run, info.warmup_end, info.host_cohort)
    total_hours = sum(hours.values())
    ev = evaluate(
        [*run.rollouts, *after],
        [g.to_dict() for g in truth],
        host_hours=total_hours,
        slack_s=grace_s,
        family_of_host={h.host_id: h.image_family for h in run.hosts.values()},
    )

    scenarios = []
    for g in truth:
        if g.kind not in HOST_KINDS:
            continue
        hits = [f for f, lab in labelled if lab == g.scenario or names_host(f, g, grace)]
        first = hits[0] if hits else None
        scenarios.append(
            {
                **g.to_dict(),
                "detected": first is not None,
                "time_to_detect_s": round((first.time - g.start).total_seconds(), 1) if first else None,
                "findings": len(hits),
                "finding_kinds": sorted({f.kind.value for f in hits}),
                "first_finding": first.to_dict() if first else None,
                "explanations": _unique([f.explanation for f in hits])[:8],
            }
        )

    rollouts = []
    for g in truth:
        if g.kind not in ROLLOUT_KINDS:
            continue
        host_anoms = [f for f, lab in labelled if lab == f"{g.kind}:{g.scenario}"]
        events = [e.to_dict() for e in run.rollouts if e.image_family == g.image_family]
        rollouts.append(
            {
                **g.to_dict(),
                "host_anomalies": len(host_anoms),
                "anomalies": [f.to_dict() for f in host_anoms][:20],
                "rollout_events": events,
                "statuses_reported": _unique([e["status"] for e in events]),
            }
        )

    fa_by_cohort: dict[str, dict[str, float | None]] = {}
    fa_count = Counter(info.host_cohort.get(f.host_id, "unknown") for f, _ in false_alarms)
    for cohort in sorted(set(hours) | set(fa_count)):
        hh = hours.get(cohort, 0.0)
        fa_by_cohort[cohort] = {
            "false_alarms": fa_count.get(cohort, 0),
            "host_hours": round(hh, 3),
            "per_1000_host_hours": _rate(fa_count.get(cohort, 0), hh),
        }
    ttds = [s["time_to_detect_s"] for s in scenarios if s["time_to_detect_s"] is not None]
    fa_rate = ev["false_alarms_per_1000_host_hours"]
    if fa_rate is None and total_hours > 0:
        fa_rate = 0.0
    summary = {
        "injected": ev["scenarios"],
        "detected": ev["detected"],
        "recall": ev["recall"],
        "precision": ev["precision"],
        "findings": len(labelled),
        "findings_after_warmup": len(after),
        "matched_findings": ev["true_positives"],
        "false_alarms": ev["false_positives"],
        "during_attack_findings": ev["during_attack"],
        "image_findings": ev["image_findings"],
        "warmup_findings": len(labelled) - len(after),
        "host_hours_after_warmup": round(total_hours, 3),
        "false_alarms_per_1000_host_hours": fa_rate,
        "rollout_host_anomalies": ev["rollout_host_anomalies"],
        "false_alarms_in_fleet_events": ev["noise_false_alarms"],
        "mean_time_to_detect_s": round(sum(ttds) / len(ttds), 1) if ttds else None,
        "median_time_to_detect_s": ev["ttd_median_s"],
        "max_time_to_detect_s": ev["ttd_max_s"],
        "rollout_events": ev["rollout_events"],
    }
    clean = [r for r in rollouts if r["kind"] == "rollout"]
    targets = {  # None: nothing in this scenario to judge the target on
        "every_compromise_reported_on_its_host": summary["detected"] == summary["injected"] if scenarios else None,
        "clean_rollout_zero_host_anomalies": all(r["host_anomalies"] == 0 for r in clean) if clean else None,
        "false_alarms_below_1_per_1000_host_hours": (
            fa_rate < TARGET_FALSE_ALARMS_PER_1000_HOST_HOURS if fa_rate is not None else None
        ),
    }
    interesting = {g.host_id for g in truth if g.host_id} | {f.host_id for f, _ in labelled}
    reference: dict[str, str] = {}  # one quiet host per cohort, to compare against
    for host in sorted(run.hosts, key=lambda x: (run.hosts[x].first, x)):
        cohort = info.host_cohort.get(host, "unknown")
        if host not in interesting and cohort not in reference:
            reference[cohort] = host
    series = {
        h: {
            "first": run.hosts[h].first.isoformat(),
            "last": run.hosts[h].last.isoformat(),
            "points": sorted([k, round(v, 4)] for k, v in run.scores.get(h, {}).items()),
            "reference": h not in interesting,
        }
        for h in sorted(interesting | set(reference.values()))
        if h in run.hosts
    }
    return {
        "scenario": info.scenario,
        "seed": info.seed,
        "start": info.start.isoformat(),
        "end": info.end.isoformat(),
        "warmup_end": info.warmup_end.isoformat(),
        "cycle_s": info.cycle_s,
        "grace_s": grace_s,
        "run": {
            "events": run.events,
            "batches": run.batches,
            "observations": run.observations,
            "cycles": run.cycles,
            "hosts": len(run.hosts),
            "seconds": round(run.seconds, 2),
            "events_per_s": round(run.events / run.seconds) if run.seconds else None,
        },
        "summary": summary,
        "targets": targets,
        "scenarios": scenarios,
        "rollouts": rollouts,
        "false_alarms_by_cohort": fa_by_cohort,
        "false_alarm_subjects": Counter(f"{f.kind.value}: {f.subject}" for f, _ in false_alarms).most_common(20),
        "rollout_events": [e.to_dict() for e in run.rollouts],
        "anomalies": [{**f.to_dict(), "label": lab} for f, lab in labelled],
        "score_series": series,
        "hardening_decay": decay(run, info),
    }


def decay(run: DetectionRun, info: RunInfo) -> dict[str, Any]:
    """Hardening decay by host age per image (herdwatch/evaluation/decay.py); a host that fell silent more
    than two cycles before the end counts as destroyed then."""
    end = run.end or info.end
    gone = dict(run.goodbyes)
    for h in run.hosts.values():
        if h.host_id not in gone and (end - h.last).total_seconds() > 2 * info.cycle_s:
            gone[h.host_id] = h.last
    return hardening_decay(run.config.rows(), run.hosts.values(), gone, info.start, end)


def _rate(count: int, hours: float) -> float | None:
    return round(count / hours * 1000.0, 2) if hours > 0 else None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
