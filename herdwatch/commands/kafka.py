"""`herdwatch kafka start|stop|status`: the local Apache Kafka broker under ./var/kafka."""

from __future__ import annotations

import argparse
from pathlib import Path

from contract.settings import default_var_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kafka", help="start, stop or check the local Kafka broker (KRaft, plain java)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    p.add_argument("--controller-port", type=int, default=9093, help="KRaft controller port (default 9093)")
    p.add_argument("--root", type=Path, default=None, help="data/log folder (default ./var/kafka)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herdwatch.kafka_local import LocalKafka

    root = args.root or default_var_dir() / "kafka"
    broker = LocalKafka.from_root(root, args.port, args.controller_port) if args.action != "start" \
        else LocalKafka(root, args.port, args.controller_port)
    if args.action == "start":
        broker.start()
        print(f"kafka {broker.status()} (data and logs in {root})")
    elif args.action == "stop":
        broker.stop()
        print("kafka stopped")
    else:
        print(f"kafka {broker.status()}")
        return 0 if broker.is_running() else 3
    return 0
