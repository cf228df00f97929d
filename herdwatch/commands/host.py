"""`herdwatch host HOST --at TIME`: what a host was running, listening on, connected to and configured
with at a past moment (rebuilt from snapshots plus changes; works long after the host is gone)."""

from __future__ import annotations

import argparse
import json
import sys

from herdwatch.commands.options import add_output_args, add_time_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host", help="a host's state (processes, ports, connections, config...) at a time")
    p.add_argument("host", help="host id, e.g. i-0abc")
    add_time_arg(p, "--at", default="now", help="the moment to show (default now)")
    p.add_argument("--only", default="", help="comma-separated sections: processes,sockets,config,"
                                               "packages,modules,logins")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import state
    from storage.output import render
    from storage.query_client import QueryError, open_query_client
    from storage.when import parse_when, sql_time

    at = parse_when(args.at)
    client = open_query_client()
    params = {"host": args.host, "at": sql_time(at)}
    wanted = {s for s in args.only.split(",") if s}
    try:
        host = client.query(state.HOST_ROW, params)
        if not host.rows:
            print(f"herdwatch host: no events stored for host {args.host!r} "
                  "(list known hosts with `herdwatch hosts`)", file=sys.stderr)
            return 3
        sections = {}
        for s in state.SECTIONS:
            if wanted and s.name not in wanted:
                continue
            sections[s] = client.query(s.sql, {**params, **dict(s.extra_params)})
    except QueryError as e:
        print(f"herdwatch host: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        out: dict[str, object] = {"host": host.dicts()[0], "at": at.isoformat()}
        out.update({s.name: r.dicts() for s, r in sections.items()})
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    h = host.dicts()[0]
    print(f"host {h['host_id']}  image {h['image_id']} ({h['image_family']})  first seen {h['first_seen']}  "
          f"last seen {h['last_seen']}  gone {h['gone_at'] or '-'} {h['gone_reason']}".rstrip())
    print(f"state at {at.isoformat()}: {'alive' if h['alive_at'] else 'NOT ALIVE at that time'}")
    for s, result in sections.items():
        print(f"\n== {s.title} ==")
        print(render(result, args.format, args.max_width))
    return 0
