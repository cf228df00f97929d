"""Scoring detections against ground truth: precision, recall, time to detect, false alarms.

Ground truth is a list of dicts: {host_id, scenario, start, end} (ISO-8601 strings or aware datetimes),
optionally with `kind` and `image_family`. A row with a host_id is a host compromise that must be
reported on that host between start and end (+ `slack_s`); if its details list `evidence` (strings), the
finding must also name one of them (in its subject, explanation or details, any case): a lab attack is not
credited with an unrelated false alarm that happens to fall on its host in its window. A finding on an
attacked host (kind compromise) in the window that names none of them is counted apart (`during_attack`: the
attack's own process tree, e.g. an interactive shell's start-up files, or something unrelated), neither a
detection nor a false alarm, and listed; on a drifted host it is a false alarm. A row without a
host_id is normal fleet life (kind/scenario rollout, rollback, traffic_spike, config_push) over image_family:
findings on its hosts in that window are false alarms attributed to it. Scenario "stale_image" rows expect
a STALE_IMAGE finding.

A campaign finding (kind "campaign") names every host it is about in details.hosts: it detects each of
them (it is one finding, counted once as true or false).

Image-level findings (a policy violation the whole image shares, details.scope == "image") are about the
image, not a host: they are counted apart and are neither true nor false host alarms.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from statistics import median
from typing import Any

from contract.findings import Finding, RolloutEvent

NOISE_KINDS = ("rollout", "rollback", "traffic_spike", "config_push")


def _t(v: Any) -> float:
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, (int, float)):
        return float(v)
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def _as_dict(o: Any) -> dict[str, Any] | None:
    if isinstance(o, Finding):
        return o.to_dict()
    if isinstance(o, RolloutEvent):
        return None
    if isinstance(o, dict) and "kind" in o and "host_id" in o and "status" not in o:
        return o
    return None


def names_evidence(finding: dict[str, Any], evidence: Any) -> bool:
    """True if the finding names one of `evidence` (or there is no evidence to name)."""
    if not evidence:
        return True
    text = " ".join((str(finding.get("subject", "")), str(finding.get("explanation", "")),
                     json.dumps(finding.get("details") or {}, default=str))).lower()
    return any(str(e).lower() in text for e in evidence)


def evaluate(
    outputs: Iterable[Any],
    truth: Iterable[dict[str, Any]],
    *,
    host_hours: float | None = None,
    slack_s: float = 300.0,
    family_of_host: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A report dict for findings (Finding objects or their dicts; RolloutEvents are counted) vs truth.

    family_of_host lets findings of baselines that rename cohorts be matched to fleet-life windows.
    """
    outputs = list(outputs)
    truth = list(truth)
    findings = [d for d in (_as_dict(o) for o in outputs) if d is not None]
    rollout_events = sum(
        1
        for o in outputs
        if isinstance(o, RolloutEvent) or (isinstance(o, dict) and "status" in o and "new_image" in o)
    )
    hosts_truth = [r for r in truth if r.get("host_id")]
    noise = [r for r in truth if not r.get("host_id")]
    image_level = [f for f in findings if (f.get("details") or {}).get("scope") == "image"]
    host_findings = [f for f in findings if (f.get("details") or {}).get("scope") != "image"]
    tp = 0
    fp_list: list[dict[str, Any]] = []
    during: list[dict[str, Any]] = []
    first_hit: dict[int, float] = {}
    for f in host_findings:
        ft = _t(f["time"])
        named = {f["host_id"]}
        if f["kind"] == "campaign":
            named.update(str(h) for h in (f.get("details") or {}).get("hosts") or ())
        hits: list[int] = []
        in_attack = False
        for i, r in enumerate(hosts_truth):
            if r["host_id"] not in named or not (_t(r["start"]) <= ft <= _t(r["end"]) + slack_s):
                continue
            if (r.get("kind") or r["scenario"]) == "stale_image" and f["kind"] != "stale_image":
                continue
            if not names_evidence(f, (r.get("details") or {}).get("evidence")):
                # an attack's own process tree is neither a detection nor a false alarm; a drift's host's
                # other changes are false alarms
                in_attack = in_attack or (r.get("kind") or "compromise") == "compromise"
                continue
            same = [j for j in hits if hosts_truth[j]["host_id"] == r["host_id"]]
            if same:  # one truth row per host: one still undetected (a second drift of the host) before one that is
                if same[0] in first_hit and i not in first_hit:
                    hits[hits.index(same[0])] = i
                continue
            hits.append(i)
        if not hits:
            (during if in_attack else fp_list).append(f)
            continue
        tp += 1
        for hit in hits:
            first_hit[hit] = min(first_hit.get(hit, ft), ft)
    noise_fp: dict[str, int] = {}
    for f in fp_list:
        ft = _t(f["time"])
        fam = (family_of_host or {}).get(f["host_id"], f.get("image_family"))
        for r in noise:
            if r.get("image_family") in (None, fam) and _t(r["start"]) <= ft <= _t(r["end"]) + slack_s:
                key = str(r.get("kind") or r["scenario"])
                noise_fp[key] = noise_fp.get(key, 0) + 1
                break
    per_truth = []
    for i, r in enumerate(hosts_truth):
        ttd = first_hit[i] - _t(r["start"]) if i in first_hit else None
        per_truth.append(
            {
                "host_id": r["host_id"],
                "scenario": r["scenario"],
                "detected": i in first_hit,
                "ttd_s": None if ttd is None else round(ttd, 1),
            }
        )
    ttds = [p["ttd_s"] for p in per_truth if p["ttd_s"] is not None]
    n_host = len(host_findings)
    return {
        "findings": n_host,
        "true_positives": tp,
        "false_positives": len(fp_list),
        "precision": round(tp / (tp + len(fp_list)), 4) if tp + len(fp_list) else None,
        "recall": round(len(first_hit) / len(hosts_truth), 4) if hosts_truth else None,
        "detected": sum(1 for p in per_truth if p["detected"]),
        "scenarios": len(hosts_truth),
        "ttd_median_s": round(median(ttds), 1) if ttds else None,
        "ttd_max_s": max(ttds) if ttds else None,
        "per_truth": per_truth,
        "false_alarms_per_1000_host_hours": (round(1000.0 * len(fp_list) / host_hours, 2) if host_hours else None),
        "noise_false_alarms": noise_fp,
        "rollout_host_anomalies": noise_fp.get("rollout", 0),
        "rollout_events": rollout_events,
        "image_findings": len(image_level),
        "false_positive_examples": [f"{f['host_id']} {f['kind']} {f['subject']}" for f in fp_list[:5]],
        "during_attack": len(during),
        "during_attack_examples": [f"{f['host_id']} {f['kind']} {f['subject']}" for f in during[:5]],
    }


def format_comparison(reports: dict[str, dict[str, Any]]) -> str:
    """A side-by-side table of several methods' reports."""
    rows = [
        ("findings", "findings"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("detected", "compromises found"),
        ("ttd_median_s", "time to detect, median s"),
        ("ttd_max_s", "time to detect, max s"),
        ("false_positives", "false alarms"),
        ("false_alarms_per_1000_host_hours", "false alarms / 1000 host-hours"),
        ("rollout_host_anomalies", "host anomalies during the rollout"),
        ("rollout_events", "rollout events"),
    ]
    names = list(reports)
    width = max(len(label) for _, label in rows) + 2
    col = max(14, *(len(n) + 2 for n in names))
    lines = ["".ljust(width) + "".join(n.rjust(col) for n in names)]
    for key, label in rows:
        cells = []
        for n in names:
            v = reports[n].get(key)
            if key == "detected":
                v = f"{v}/{reports[n].get('scenarios')}"
            cells.append(("-" if v is None else str(v)).rjust(col))
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)
