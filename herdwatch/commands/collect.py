"""`herdwatch collect`: run the host agent (probes -> spool -> Kafka)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="run the host agent: probes -> on-disk spool -> Kafka telemetry topic",
                       description="Run the herdwatch host agent. Settings come from HERDWATCH_COLLECTOR_* "
                                   "and HERDWATCH_KAFKA_* variables, then --config, then these flags.")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly after this many seconds (sends agent.goodbye)")
    p.add_argument("--once", action="store_true",
                   help="one full cycle (hello and every inventory), then exit")
    p.add_argument("--config", type=Path, default=None, help="YAML file of collector settings")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="seq, spool and identity (default /var/lib/herdwatch as root, else the XDG state folder)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port (0 = off)")
    p.add_argument("--host-id", default=None, help="override the host id")
    p.add_argument("--image-id", default=None, help="override the image id (cohort)")
    p.add_argument("--image-family", default=None, help="override the image family")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from collectors.agent import Agent
    from collectors.settings import AgentKafkaSettings, load_settings
    from contract.observability import serve_metrics

    settings = load_settings(args.config, state_dir=args.state_dir, metrics_port=args.metrics_port,
                             host_id=args.host_id, image_id=args.image_id, image_family=args.image_family)
    kafka = AgentKafkaSettings()  # HERDWATCH_KAFKA_*, HERDWATCH_DEPLOYMENT; without pydantic (its memory)
    if settings.metrics_port:
        try:
            serve_metrics(settings.metrics_port, settings.metrics_addr)
        except OSError as e:
            print(f"herdwatch collect: metrics endpoint not started ({e}); set "
                  f"HERDWATCH_COLLECTOR_METRICS_PORT to a free port or 0")
    agent = Agent(settings, kafka)
    agent.install_signal_handlers()
    h = agent.identity.host
    print(f"herdwatch collect: host {h.host_id} image {h.image_id} ({h.image_family}) -> "
          f"{kafka.bootstrap} topic {kafka.topics.telemetry}; state in {settings.state_dir}", flush=True)
    left = agent.run(duration=args.duration, once=args.once)
    print(f"herdwatch collect: stopped ({agent.stop_reason}); events acknowledged {agent.delivery.sent}, "
          f"waiting in spool {left}, dropped {agent.dropped_total()}", flush=True)
    return 0
