"""`herdwatch sql "SELECT ..."` or `herdwatch sql NAME -p name=value`: any read-only query on the event store,
or one of the named forensic queries (storage/queries.py), as a table, JSON or CSV.

What may run is decided by storage.readonly (the engine's own parser; readonly = 1 set by the code), the
same check whether the store is opened here or the sink answers through its query endpoint.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from herdwatch.commands.options import add_output_args as add_output_args  # re-exported for older imports

_PLACEHOLDER = re.compile(r"\{(\w+):\s*([^}]+)\}")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run a read-only SQL query or a named forensic query on the event store",
                       description="Runs one read statement (SELECT with WITH/UNION/subqueries, DESCRIBE, "
                                   "SHOW, EXISTS, EXPLAIN) read-only; writes, DDL, SET, SETTINGS, INTO "
                                   "OUTFILE and table functions that reach files, processes or the network "
                                   "are refused. Named parameters are bound by the engine: write {name:Type} "
                                   "in the SQL and pass -p name=value (a DateTime parameter takes any time "
                                   "herdwatch reads: -30d, '2h ago', ISO-8601, epoch). `herdwatch sql NAME` "
                                   "runs a named forensic query (--list shows them). Works while the sink "
                                   "runs (it answers through its local query endpoint).")
    p.add_argument("query", nargs="?", help='SQL, e.g. "SELECT kind, count() FROM events GROUP BY kind", '
                                            "or the name of a forensic query, e.g. sequence_gaps")
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
            raise ValueError(f"--param {pair!r}: write NAME=VALUE, e.g. -p host=i-0abc")
        out[name] = value
    return out


def placeholders(sql: str) -> dict[str, str]:
    """{name: ClickHouse type} of every bound parameter the SQL names."""
    return {m.group(1): m.group(2).strip() for m in _PLACEHOLDER.finditer(sql)}


def bind(sql: str, values: dict[str, str]) -> dict[str, Any]:
    """The parameters, with every value of a DateTime parameter read as a herdwatch time (-30d, 2h ago, ...)."""
    from storage.when import parse_when, sql_time

    types = placeholders(sql)
    out: dict[str, Any] = {}
    for name, value in values.items():
        if "DateTime" in types.get(name, ""):
            try:
                out[name] = sql_time(parse_when(value))
            except ValueError as e:
                raise ValueError(f"-p {name}={value}: {e}") from None
        else:
            out[name] = value
    return out


def named_hint(sql: str) -> str:
    """A fix for a query that names a forensic query instead of being SQL ("" when it names none)."""
    from storage.queries import QUERIES

    words = _WORD.findall(sql)
    if not words or words[0] not in QUERIES:  # SQL starts with a keyword; "rollouts" may well be a table name
        return ""
    q = QUERIES[words[0]]
    params = " ".join(f"-p {p}=..." for p in q.params)
    return (f"; {q.name!r} is a named forensic query: run it as `herdwatch sql {q.name} {params}`"
            f" (or --named {q.name}); `herdwatch sql --list` shows them all")


def run(args: argparse.Namespace) -> int:
    from storage.output import render
    from storage.queries import QUERIES
    from storage.query_client import QueryError, open_query_client
    from storage.readonly import UnsafeQuery

    if args.list:
        for q in QUERIES.values():
            print(f"{q.name:<22} {q.question}  params: {', '.join(q.params)}")
        return 0
    name = args.named or (args.query.strip() if args.query and args.query.strip() in QUERIES else None)
    if name is not None:
        named = QUERIES.get(name)
        if named is None:
            print(f"herdwatch sql: no named query {name!r}; `herdwatch sql --list` shows the names", file=sys.stderr)
            return 2
        sql = named.sql
        given = parse_params(args.param)
        missing = [p for p in named.params if p not in given]
        if missing:
            print(f"herdwatch sql: {name} needs " + " ".join(f"-p {p}=VALUE" for p in missing)
                  + f" ({named.question})", file=sys.stderr)
            return 2
    elif args.query:
        sql = args.query
    else:
        print("herdwatch sql: give a query (\"SELECT ...\"), the name of a forensic query, or --list",
              file=sys.stderr)
        return 2
    try:
        params = bind(sql, parse_params(args.param))
    except ValueError as e:
        print(f"herdwatch sql: {e}", file=sys.stderr)
        return 2
    client = open_query_client()
    try:
        result = client.query(sql, params)
    except (QueryError, UnsafeQuery) as e:
        print(f"herdwatch sql: {e}{named_hint(sql) if name is None else ''}", file=sys.stderr)
        return 2
    print(render(result, args.format, args.max_width))
    return 0
