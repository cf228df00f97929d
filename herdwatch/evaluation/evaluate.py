"""One call from a scenario file to a report: simulate, detect, match against the ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from detectors import EngineConfig
from herdwatch.evaluation.chart import render_html
from herdwatch.evaluation.report import RunInfo, build_report
from herdwatch.evaluation.runner import DetectionRun, run_detectors
from simulator.fleet import Fleet
from simulator.scenarios import load_scenario


@dataclass
class EvaluationResult:
    report: dict[str, Any]
    run: DetectionRun
    fleet: Fleet
    host_cohort: dict[str, str]


def evaluate_scenario(
    scenario: str | Path,
    seed: int | None = None,
    start: datetime | None = None,
    engine_config: EngineConfig | None = None,
    grace_s: float = 300.0,
) -> EvaluationResult:
    """Simulate `scenario` (file or bundled name), run the detectors offline, build the report."""
    sc = load_scenario(scenario, seed=seed, start=start)
    fleet = Fleet(sc)
    run = run_detectors(fleet.cycles(), engine_config)
    host_cohort = {p.host_id: p.cohort for p in fleet.plans.values()}
    info = RunInfo(
        scenario=sc.name,
        seed=sc.seed,
        start=sc.start,
        end=sc.end,
        warmup_end=sc.start + timedelta(seconds=sc.warmup),
        cycle_s=sc.cycle,
        host_cohort=host_cohort,
    )
    report = build_report(run, fleet.ground_truth, info, grace_s=grace_s)
    report["file"] = str(sc.path)
    return EvaluationResult(report=report, run=run, fleet=fleet, host_cohort=host_cohort)


def write_outputs(result: EvaluationResult, out: Path) -> tuple[Path, Path]:
    """report.json, report.html and ground_truth.json into `out`; returns the report paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(result.report, indent=2, default=str))
    html_path.write_text(render_html(result.report, result.host_cohort))
    (out / "ground_truth.json").write_text(json.dumps(result.fleet.ground_truth_dicts(), indent=2))
    return json_path, html_path
