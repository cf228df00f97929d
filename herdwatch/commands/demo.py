"""`herdwatch demo`: a simulated clone fleet through Kafka, the stream worker and ClickHouse."""

from __future__ import annotations

import argparse
from pathlib import Path

from contract.settings import default_var_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run a simulated fleet through the whole pipeline and print the detection report",
        description="Starts Kafka (unless --bootstrap is given), a stream worker and the sink, publishes a "
        "scenario's fleet, waits for the pipeline to catch up, then prints anomalies, rollout events, the "
        "detection report against the ground truth and forensic answers about destroyed hosts.")
    p.add_argument("--scenario", default="demo", help="scenario file or bundled name (default: demo)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--var", type=Path, default=None, help="data folder (default ./var)")
    p.add_argument("--bootstrap", default=None, help="use this Kafka instead of starting the local one "
                                                    "(default: HERDWATCH_KAFKA_BOOTSTRAP when set)")
    p.add_argument("--port", type=int, default=None,
                   help="local Kafka client port (default 9092, or a free one when 9092 is taken)")
    p.add_argument("--controller-port", type=int, default=None,
                   help="local Kafka controller port (default 9093, or a free one when taken)")
    p.add_argument("--speed", type=float, default=20.0,
                   help="fleet seconds per wall-clock second (default 20; 0 = as fast as possible)")
    p.add_argument("--drain-timeout", type=float, default=180.0,
                   help="seconds to wait for the worker and sink to catch up (default 180)")
    p.add_argument("--keep-kafka", action="store_true", help="leave the local Kafka running afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herdwatch.demo import DemoOptions, run_demo

    opts = DemoOptions(scenario=args.scenario, seed=args.seed, var_dir=args.var or default_var_dir(),
                       kafka_port=args.port, controller_port=args.controller_port, bootstrap=args.bootstrap,
                       speed=args.speed or None, drain_timeout_s=args.drain_timeout, keep_running=args.keep_kafka)
    report = run_demo(opts)
    return 0 if all(v is not False for v in report.get("targets", {}).values()) else 3
