"""A whole lab run: up, the plan's hosts and schedule, the report, down (also after a failure)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from herdwatch.lab.fleet import DEFAULT_SUBNET, Lab
from herdwatch.lab.report import Say, build_lab_report, wait_for_pipeline
from herdwatch.lab.schedule import Plan, run_schedule, start_hosts
from herdwatch.lab.state import iso, now


def run_plan(var: Path, plan: Plan, say: Say = print, subnet: str = DEFAULT_SUBNET) -> tuple[dict[str, Any], Lab]:
    """Run `plan` on a new lab; returns the report and the (removed) lab, whose state lists what it made."""
    t_start = time.monotonic()
    say(f"[1/5] lab up: bridge on {subnet}.0/24, Kafka listening on {subnet}.1, a stream worker and the sink")
    lab = Lab.up(var, subnet=subnet, warmup_s=plan.warmup_s)
    try:
        say(f"[2/5] {sum(plan.hosts.values())} hosts ({', '.join(f'{n} {i}' for i, n in plan.hosts.items())}), "
            f"each with its own network, PID, mount and UTS namespaces and a real `herdwatch collect`")
        t0 = time.monotonic()
        start_hosts(lab, plan, say)
        say(f"[3/5] schedule '{plan.name}': {plan.duration_s / 60:.1f} min of fleet life and attacks "
            f"(warm-up {plan.warmup_s:.0f} s)")
        run_schedule(lab, plan, say, t0=t0)
        say("[4/5] waiting for the worker to score and the sink to store everything ...")
        wait_for_pipeline(lab.state, say)
        lab.state.ended = lab.state.ended or iso(now())
        say("[5/5] report")
        report = build_lab_report(lab.state, say)
    finally:
        removed = lab.down()
        say(f"lab down: removed {len(removed)} namespaces, links, hosts and processes "
            f"({time.monotonic() - t_start:.0f} s in all); data and report stay in {lab.lab_dir}")
    return report, lab
