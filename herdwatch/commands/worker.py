"""`herdwatch worker`: run one stream worker (Faust) against Kafka until SIGTERM/Ctrl-C.

Settings come from the environment (HERDWATCH_KAFKA_*, HERDWATCH_WORKER_*); flags override them.
Start more workers with the same app id to share the partitions.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a stream worker: score telemetry against clone cohorts (Faust)")
    p.add_argument("--app-id", help="consumer group / changelog prefix (HERDWATCH_WORKER_APP_ID)")
    p.add_argument("--partitions", type=int, help="partitions for topics it creates (default 8)")
    p.add_argument("--host-timeout", type=float, help="seconds of silence before a host is gone (default 300)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default off)")
    p.add_argument("--web-port", type=int, help="Faust web server port (default off)")
    p.add_argument("--loglevel", choices=["crit", "error", "warn", "info", "debug"], help="Faust log level")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contract.settings import KafkaSettings
    from streams.settings import WorkerSettings
    from streams.worker import run_worker

    overrides = {"app_id": args.app_id, "partitions": args.partitions, "host_timeout_s": args.host_timeout,
                 "metrics_port": args.metrics_port, "web_port": args.web_port, "loglevel": args.loglevel}
    ws = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    return run_worker(KafkaSettings(), ws)
