"""`herdwatch simulate SCENARIO`: a simulated fleet's telemetry to Kafka, with its ground truth on disk."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from contract.settings import default_var_dir

log = logging.getLogger("herdwatch.simulate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="publish a simulated fleet's telemetry (scenario file) to Kafka",
        description="Generate telemetry for many hosts from a scenario file (or a bundled "
        "scenario: demo, ci) and publish it like the real collector does.",
    )
    p.add_argument("scenario", help="scenario YAML file, or a bundled name (demo, ci, normal, campaign, decay)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the file's)")
    p.add_argument(
        "--speed",
        default="1",
        help="fleet seconds per wall-clock second (1 = real time, 10 = ten times faster), "
        "or 'max' for as fast as possible (default 1)",
    )
    p.add_argument(
        "--start",
        default="now",
        help="event time of the first cycle: 'now' (default), 'scenario' (the file's start, "
        "reproducible to the byte), or an ISO-8601 UTC time",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for ground_truth.json and hosts.json (default ./var/simulate/<name>-<seed>)",
    )
    p.add_argument("--cycles", type=int, default=None, help="stop after this many cycles")
    p.add_argument("--no-create-topics", action="store_true", help="do not create missing topics")
    p.set_defaults(func=run)


def parse_start(value: str) -> datetime | None:
    """None for 'scenario' (the file's start), else an aware UTC datetime."""
    if value == "scenario":
        return None
    if value == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"--start {value!r}: write 'now', 'scenario' or e.g. 2026-03-01T12:00:00Z") from e
    if t.tzinfo is None:
        raise ValueError(f"--start {value!r} has no timezone; add a trailing Z for UTC")
    return t.astimezone(UTC)


def parse_speed(value: str) -> float | None:
    if value in ("max", "fast", "0"):
        return None
    try:
        speed = float(value)
    except ValueError as e:
        raise ValueError(f"--speed {value!r}: give a number like 1 or 10, or 'max'") from e
    if speed <= 0:
        raise ValueError("--speed must be > 0 (or 'max')")
    return speed


def write_run_files(out: Path, fleet_ground_truth: list[dict], hosts: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps({**meta, "ground_truth": fleet_ground_truth}, indent=2))
    (out / "hosts.json").write_text(json.dumps(hosts, indent=1))


def run(args: argparse.Namespace) -> int:
    from collectors.publisher import Publisher
    from contract.kafka_admin import ensure_topics
    from contract.settings import KafkaSettings
    from simulator import Fleet, SimClock
    from simulator.keys import SIMULATED
    from simulator.publish import PublishStats, publish_fleet
    from simulator.scenarios import load_scenario

    speed = parse_speed(args.speed)
    scenario = load_scenario(args.scenario, seed=args.seed, start=parse_start(args.start))
    fleet = Fleet(scenario)
    out = args.out or default_var_dir() / "simulate" / f"{scenario.name}-{scenario.seed}"
    meta = {
        "scenario": scenario.name,
        "file": str(scenario.path),
        "seed": scenario.seed,
        "start": scenario.start.isoformat(),
        "end": scenario.end.isoformat(),
        "cycle_s": scenario.cycle,
    }
    write_run_files(out, fleet.ground_truth_dicts(), fleet.host_table(), meta)
    injected = sum(1 for g in fleet.ground_truth if g.kind not in ("traffic_spike", "config_push"))
    print(
        f"scenario {scenario.name} (seed {scenario.seed}): {len(fleet.plans)} hosts over "
        f"{scenario.duration / 60:.1f} min of fleet time, {injected} scenarios injected, "
        f"{len(fleet.ground_truth) - injected} fleet events; ground truth in {out / 'ground_truth.json'}"
    )

    settings = KafkaSettings()
    if not args.no_create_topics:
        ensure_topics(settings)
    publisher = Publisher(settings, SIMULATED)
    clock = SimClock(scenario.start, speed)
    every = max(1, int(60 / scenario.cycle))

    def progress(cycle: object, stats: PublishStats) -> None:
        if stats.cycles % every == 0:
            log.info(
                "cycle %d/%d: %d messages, %d events",
                stats.cycles,
                fleet.n_cycles,
                stats.messages,
                stats.events,
            )

    stats = publish_fleet(fleet, publisher, clock, max_cycles=args.cycles, on_cycle=progress)
    print(
        f"published {stats.events} events in {stats.messages} messages to {settings.topics.telemetry} "
        f"in {stats.seconds:.1f} s ({stats.events_per_s:,.0f} events/s); {stats.failed} not acknowledged"
    )
    return 0 if stats.failed == 0 else 2
