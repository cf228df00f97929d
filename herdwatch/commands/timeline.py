"""`herdwatch timeline HOST`: everything a host did, in order (one line per event)."""

from __future__ import annotations

import argparse
import sys

from herdwatch.commands.options import add_output_args, add_time_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="everything one host did, in order")
    p.add_argument("host", help="host id")
    add_time_arg(p, "--since", default="1970-01-01", help="start time (default: the beginning)")
    add_time_arg(p, "--until", default="now", help="end time (default: now)")
    p.add_argument("--kinds", default="", help="only these kinds, e.g. process.start,net.open")
    p.add_argument("--limit", type=int, default=1000, help="at most this many events (default 1000)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.output import render
    from storage.queries import QUERIES
    from storage.query_client import QueryError, open_query_client
    from storage.when import parse_when, sql_time

    params = {"host": args.host, "since": sql_time(parse_when(args.since)),
              "until": sql_time(parse_when(args.until)), "kinds": args.kinds, "limit": args.limit}
    try:
        result = open_query_client().query(QUERIES["host_timeline"].sql, params)
    except QueryError as e:
        print(f"herdwatch timeline: {e}", file=sys.stderr)
        return 2
    print(render(result, args.format, args.max_width))
    return 0
