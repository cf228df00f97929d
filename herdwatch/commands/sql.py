"""`herdwatch sql "SELECT ..."`: any read-only query on the event store (table, JSON or CSV output).

What may run is decided by storage.readonly (the engine's own parser; readonly = 1 set by the code), the
same check whether the store is opened here or the sink answers through its query endpoint.
"""

from __future__ import annotations

import argparse
import sys


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format")
    p.add_argument("--max-width", type=int, default=80, help="truncate table cells to this width")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run a read-only SQL query on the event store",
                       description="Runs one read statement (SELECT with WITH/UNION/subqueries, DESCRIBE, "
                                   "SHOW, EXISTS, EXPLAIN) read-only; writes, DDL, SET, SETTINGS, INTO "
                                   "OUTFILE and table functions that reach files, processes or the network "
                                   "are refused. Named parameters are bound by the engine: write {name:Type} "
                                   "in the SQL and pass --param name=value. Works while the sink runs (it "
                                   "answers through its local query endpoint).")
    p.add_argument("query", nargs="?", help='e.g. "SELECT kind, count() FROM events GROUP BY kind"')
    p.add_argument("--named", metavar="NAME", help="run a named forensic query from storage/queries.py "
                                                    "(its parameters with -p); --list shows them")
    p.add_argument("--list", action="store_true", help="list the named forensic queries and their parameters")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="bind a query parameter, e.g. -p host=i-0abc for {host:String}")
    add_output_args(p)
    p.set_defaults(func=run)


def parse_params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: write NAME=VALUE")
        out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    from storage.output import render
    from storage.queries import QUERIES
    from storage.query_client import QueryError, open_query_client
    from storage.readonly import UnsafeQuery

    if args.list:
        for q in QUERIES.values():
            print(f"{q.name:<22} {q.question}  params: {', '.join(q.params)}")
        return 0
    if args.named:
        named = QUERIES.get(args.named)
        if named is None:
            print(f"herdwatch sql: no named query {args.named!r} (see `herdwatch sql --list`)", file=sys.stderr)
            return 2
        sql = named.sql
    elif args.query:
        sql = args.query
    else:
        print("herdwatch sql: give a query, --named NAME or --list", file=sys.stderr)
        return 2
    client = open_query_client()
    try:
        result = client.query(sql, parse_params(args.param))
    except (QueryError, UnsafeQuery) as e:
        print(f"herdwatch sql: {e}", file=sys.stderr)
        return 2
    print(render(result, args.format, args.max_width))
    return 0
