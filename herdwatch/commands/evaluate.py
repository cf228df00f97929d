"""`herdwatch evaluate SCENARIO`: the detection report for a scenario (JSON + an HTML chart), offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from contract.settings import default_var_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run the detectors over a simulated scenario; write a report",
        description="Simulate a scenario offline (no Kafka), feed it through the detectors as "
        "the stream workers do, and score the findings against the ground truth: "
        "precision, recall, time to detect, false alarms per 1,000 host-hours.",
    )
    p.add_argument("scenario", help="scenario YAML file, or a bundled name (demo, ci, normal, campaign, decay)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the file's)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default ./var/evaluate/<name>-<seed>)")
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
    from herdwatch.evaluation.text import report_lines

    result = evaluate_scenario(args.scenario, seed=args.seed, grace_s=args.grace)
    rep = result.report
    out = args.out or default_var_dir() / "evaluate" / f"{rep['scenario']}-{rep['seed']}"
    json_path, html_path = write_outputs(result, out)
    for line in report_lines(rep):
        print(line.lstrip("\n"))
    print(f"evaluated in {rep['run']['seconds']} s; wrote {json_path} and {html_path}")
    return 3 if args.strict and False in rep["targets"].values() else 0
