"""`herdwatch sink`: store every event from Kafka in ClickHouse (and serve local queries)."""

from __future__ import annotations

import argparse
import signal
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sink", help="consume telemetry, anomalies, rollouts and lifecycle into ClickHouse",
                       description="Batches events into ClickHouse, committing Kafka offsets only after "
                                   "the insert. With the embedded store it also answers `herdwatch sql` "
                                   "from other local processes. Settings: HERDWATCH_SINK_*.")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="stop once no message arrived for this long (everything read is stored)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per insert (default 50000)")
    p.add_argument("--batch-timeout", type=float, default=None, help="max seconds a row waits (default 1)")
    p.add_argument("--no-endpoint", action="store_true", help="do not serve local queries")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0 = off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contract.kafka_admin import ensure_topics
    from contract.observability import serve_metrics
    from contract.settings import KafkaSettings, StorageSettings
    from storage.client import connect, is_embedded
    from storage.endpoint import QueryEndpoint
    from storage.schema import migrate
    from storage.settings import SinkSettings
    from storage.sink import Sink

    overrides: dict[str, Any] = {}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.batch_timeout:
        overrides["batch_timeout"] = args.batch_timeout
    settings = SinkSettings(**overrides)
    storage = StorageSettings()
    kafka = KafkaSettings()
    ensure_topics(kafka)
    client = connect(storage)
    migrate(client, settings)
    serve_metrics(args.metrics_port)
    endpoint = None
    if is_embedded(storage.resolved_dsn()) and settings.endpoint and not args.no_endpoint:
        endpoint = QueryEndpoint(client, storage, settings.endpoint_port).start()
    sink = Sink(client, kafka, settings)

    def on_signal(signum: int, frame: object) -> None:
        if sink.stopping:  # second signal: leave now; uncommitted messages are simply read again
            raise KeyboardInterrupt
        print("sink: stopping (storing what was read; signal again to leave at once)", flush=True)
        sink.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"sink: {', '.join(sink.topics)} -> {storage.resolved_dsn()} database {storage.database}"
          + (f"; queries via {endpoint.url}" if endpoint else ""), flush=True)
    try:
        stats = sink.run(duration=args.duration, until_idle=args.until_idle)
    finally:
        if endpoint:
            endpoint.stop()
    print(f"sink: stored {stats.rows} rows from {stats.messages} messages in {stats.batches} batches; "
          f"dead-lettered {stats.dead_lettered}, duplicates skipped {stats.duplicates}, "
          f"paused {stats.pauses} times", flush=True)
    return 0
