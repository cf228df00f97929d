"""`herdwatch anomalies [--follow]`: print findings from the anomaly topic, optionally filtered."""

from __future__ import annotations

import argparse
import sys

SEVERITIES = ["info", "low", "medium", "high", "critical"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="print anomalies from Kafka (--follow: live, as they arrive)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new findings until Ctrl-C")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest finding kept (default: without --follow, from the beginning; "
                        "with --follow, only new ones)")
    p.add_argument("--group", help="consumer group (shared, committed progress); default: a private one")
    p.add_argument("--image", action="append", default=[], help="only this image cohort (repeatable)")
    p.add_argument("--family", action="append", default=[], help="only this image family (repeatable)")
    p.add_argument("--host", action="append", default=[], help="only this host (repeatable)")
    p.add_argument("--kind", action="append", default=[], help="only this finding kind (repeatable)")
    p.add_argument("--severity", choices=SEVERITIES, default="info", help="minimum severity")
    p.add_argument("--json", action="store_true", help="print each finding as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from contract.settings import KafkaSettings
    from streams.follow import AnomalyFilter, follow, render

    flt = AnomalyFilter(set(args.image), set(args.family), set(args.host), set(args.kind), args.severity)
    start = args.from_beginning or not args.follow
    shown = 0
    try:
        for f in follow(KafkaSettings(), group=args.group, from_beginning=start, forever=args.follow):
            if flt.matches(f):
                print(orjson.dumps(f).decode() if args.json else render(f), flush=True)
                shown += 1
    except KeyboardInterrupt:
        pass
    if not args.follow:
        print(f"{shown} finding(s)", file=sys.stderr)
    return 0
