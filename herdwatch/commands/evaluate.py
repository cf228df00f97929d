"""`herdwatch evaluate SCENARIO`: the detection report for a scenario (JSON + an HTML chart), offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from herdwatch.settings import default_var_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run the detectors over a simulated scenario; write a report",
        description="Simulate a scenario offline (no Kafka), feed it through the detectors as "
        "the stream workers do, and score the findings against the ground truth: "
        "precision, recall, time to detect, false alarms per 1,000 host-hours.",
    )
    p.add_argument("scenario", help="scenario YAML file, or a bundled name (demo, ci, normal)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the file's)")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default ./var/evaluate/<name>-<seed>)"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=300.0,
        help="seconds after an injected window in which findings still count as detections",
    )
    p.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herdwatch.evaluation import evaluate_scenario, write_outputs

    result = evaluate_scenario(args.scenario, seed=args.seed, grace_s=args.grace)
    rep = result.report
    out = args.out or default_var_dir() / "evaluate" / f"{rep['scenario']}-{rep['seed']}"
    json_path, html_path = write_outputs(result, out)
    s = rep["summary"]
    print(
        f"scenario {rep['scenario']} (seed {rep['seed']}): {rep['run']['hosts']} hosts, "
        f"{rep['run']['events']:,} events in {rep['run']['seconds']} s"
    )
    print(
        f"detected {s['detected']}/{s['injected']} (recall {s['recall']}), precision {s['precision']}, "
        f"mean time to detect {s['mean_time_to_detect_s']} s"
    )
    print(
        f"false alarms {s['false_alarms']} "
        f"({s['false_alarms_per_1000_host_hours']} per 1,000 host-hours over "
        f"{s['host_hours_after_warmup']} host-hours), rollout host anomalies {s['rollout_host_anomalies']}, "
        f"warm-up findings {s['warmup_findings']}"
    )
    for sc in rep["scenarios"]:
        mark = f"detected after {sc['time_to_detect_s']} s" if sc["detected"] else "MISSED"
        print(f"  {sc['scenario']:<24} {sc['attack']:<15} {sc['host_id']}  {mark}")
    for r in rep["rollouts"]:
        print(
            f"  {r['scenario']:<24} {r['kind']:<15} {r['image_family']:<19}  host anomalies "
            f"{r['host_anomalies']}, reported: {', '.join(r['statuses_reported']) or 'nothing'}"
        )
    for name, met in rep["targets"].items():
        verdict = "n/a" if met is None else "met" if met else "MISSED"
        print(f"  target {name.replace('_', ' ')}: {verdict}")
    print(f"wrote {json_path} and {html_path}")
    return 3 if args.strict and False in rep["targets"].values() else 0
