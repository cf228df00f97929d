"""`herdwatch kafka start|stop|status|env|acls|rotate`: the local Apache Kafka broker under ./var/kafka.

`start --secure` runs it with SASL_SSL (SCRAM-SHA-512), one user per role and least-privilege ACLs;
`env --role ROLE` prints that role's HERDWATCH_KAFKA_* settings, `rotate --role ROLE` gives it a new
password, `acls` lists what each role may do.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from contract.settings import default_var_dir

ACTIONS = ["start", "stop", "status", "env", "acls", "rotate"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kafka", help="start, stop or check the local Kafka broker (KRaft, plain java)")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    p.add_argument("--controller-port", type=int, default=9093, help="KRaft controller port (default 9093)")
    p.add_argument("--root", type=Path, default=None,
                   help="data/log folder (default ./var/kafka, with --secure ./var/kafka-secure)")
    p.add_argument("--secure", action="store_true",
                   help="SASL_SSL listener (SCRAM-SHA-512), one user per role, ACLs; passwords in "
                        "<root>/credentials.env (mode 0600)")
    p.add_argument("--listen", default=None, metavar="ADDR[:PORT]",
                   help="start: also listen (plaintext) on this address, advertised as itself, e.g. a lab bridge "
                        "address 10.213.47.1 (port default: --port + 2); loopback clients are unchanged")
    p.add_argument("--role", default="worker",
                   help="for env and rotate (with --secure or --root): agent, worker, sink, subscriber or "
                        "admin (default worker)")
    p.add_argument("--topic-prefix", default=None,
                   help="topics to create and grant on start --secure (default HERDWATCH_KAFKA_TOPIC_PREFIX)")
    p.add_argument("--osquery", action="store_true",
                   help="start --secure and acls: also grant what osquery as a source needs (docs/osquery.md)")
    p.set_defaults(func=run)


def _default_root(args: argparse.Namespace) -> Path:
    if args.root:
        return Path(args.root)
    return default_var_dir() / ("kafka-secure" if args.secure else "kafka")


def run(args: argparse.Namespace) -> int:
    from contract.settings import KafkaSettings
    from herdwatch.kafka_local import LocalKafka, role_acls

    root = _default_root(args)

    def prefix() -> str:
        return str(args.topic_prefix or KafkaSettings().topic_prefix)

    if args.action == "start":
        broker = LocalKafka(root, args.port, args.controller_port, secure=args.secure, listen=args.listen)
        broker.start()
        print(f"kafka {broker.status()} (data and logs in {root})")
        if broker.secure:
            specs = broker.provision(prefix(), osquery=args.osquery)
            print(f"SASL_SSL ({len(specs)} ACLs for topic prefix {prefix()!r}); passwords in "
                  f"{broker.credentials_file}, CA {broker.ca_file}\n"
                  f"settings of one role: herdwatch kafka env --secure --role worker")
        return 0
    broker = LocalKafka.from_root(root, args.port, args.controller_port)
    if args.action == "stop":
        broker.stop()
        print("kafka stopped")
    elif args.action == "status":
        print(f"kafka {broker.status()}" + (" (SASL_SSL)" if broker.secure else ""))
        return 0 if broker.is_running() else 3
    elif args.action == "acls":
        for spec in role_acls(prefix(), osquery=args.osquery):
            print(spec.describe())
    elif not broker.secure:
        print(f"kafka at {root} runs without authentication: `{args.action}` needs a broker started with "
              f"`herdwatch kafka start --secure`")
        return 2
    elif args.action == "env":
        for key, value in broker.role_env(args.role, prefix()).items():
            print(f"export {key}={shlex.quote(value)}")
    else:  # rotate
        broker.rotate(args.role)
        print(f"new password for {args.role} written to {broker.credentials_file}; restart its processes "
              f"with the new settings (herdwatch kafka env --secure --role {args.role})")
    return 0
