"""The detection report as text lines (used by `herdwatch evaluate` and the demo)."""

from __future__ import annotations

from typing import Any


def report_lines(rep: dict[str, Any]) -> list[str]:
    s = rep["summary"]
    lines = [
        f"\nDetection report for scenario {rep['scenario']} (seed {rep['seed']}): {rep['run']['hosts']} hosts, "
        f"{rep['run']['events']:,} events",
        f"  detected {s['detected']}/{s['injected']} (recall {s['recall']}), precision {s['precision']}, "
        f"mean time to detect {s['mean_time_to_detect_s']} s",
        f"  false alarms {s['false_alarms']} ({s['false_alarms_per_1000_host_hours']} per 1,000 host-hours "
        f"over {s['host_hours_after_warmup']} host-hours), rollout host anomalies "
        f"{s['rollout_host_anomalies']}, warm-up findings {s['warmup_findings']}",
    ]
    if s.get("during_attack_findings"):
        lines.append(f"  findings on attacked hosts during their attacks naming no attack evidence (neither detections "
                     f"nor false alarms): {s['during_attack_findings']}")
    for sc in rep["scenarios"]:
        mark = f"detected after {sc['time_to_detect_s']} s" if sc["detected"] else "MISSED"
        lines.append(f"  {sc['scenario']:<24} {sc['attack']:<15} {sc['host_id']}  {mark}")
    for r in rep["rollouts"]:
        lines.append(
            f"  {r['scenario']:<24} {r['kind']:<15} {r['image_family']:<19}  host anomalies "
            f"{r['host_anomalies']}, reported: {', '.join(r['statuses_reported']) or 'nothing'}"
        )
    decay = rep.get("hardening_decay") or {}
    for img in decay.get("images", []):
        shares = ", ".join(f"{a} {_share(img['compliance'].get(a))}" for a in decay["ages"])
        lines.append(f"  hardening decay {img['image_family']} {img['image_id']}: hosts matching the image by age "
                     f"{shares}; {len(img['drifted'])} drifted, {len(img['failing'])} checks fail on the image")
    for name, met in rep["targets"].items():
        verdict = "n/a" if met is None else "met" if met else "MISSED"
        lines.append(f"  target {name.replace('_', ' ')}: {verdict}")
    return lines


def _share(c: dict[str, Any] | None) -> str:
    return "-" if not c or c.get("share") is None else f"{c['matching']}/{c['eligible']}"
