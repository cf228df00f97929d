"""`herdwatch hosts`: fleet-wide questions. Filters combine (AND); every value is a bound parameter."""

from __future__ import annotations

import argparse
import sys

from herdwatch.commands.options import add_output_args, add_time_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hosts", help="find hosts: alive at T, image, ran a process, connected to, config")
    add_time_arg(p, "--alive-at", default=None, help="alive at this time (seen before it, not gone)")
    p.add_argument("--image", help="launched from this image id")
    p.add_argument("--family", help="of this image family")
    p.add_argument("--ran", metavar="EXE", help="ran this executable (full path) between --since/--until")
    p.add_argument("--connected-to", metavar="ADDR", help="connected to this remote address")
    p.add_argument("--config", metavar="KEY=VALUE",
                   help="had this configuration value at --config-at, e.g. sshd.permitrootlogin=yes")
    add_time_arg(p, "--config-at", default=None, help="time for --config (default: --alive-at or now)")
    add_time_arg(p, "--since", default="-7d", help="start of the window for --ran/--connected-to (default -7d)")
    add_time_arg(p, "--until", default="now", help="end of that window (default now)")
    p.add_argument("--silence", type=int, default=600,
                   help="a host silent this many seconds without a goodbye counts as gone (default 600)")
    add_output_args(p)
    p.set_defaults(func=run)


def build(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    """The SQL and its parameters for the given filters (exposed for tests)."""
    from storage.queries import QUERIES
    from storage.when import parse_when, sql_time

    where: list[str] = []
    params: dict[str, object] = {}
    if args.alive_at:
        where.append("host_id IN (SELECT host_id FROM (" + QUERIES["hosts_alive_at"].sql + "))")
        params.update(at=sql_time(parse_when(args.alive_at)), silence_s=args.silence)
    if args.image:
        where.append("image_id = {image:String}")
        params["image"] = args.image
    if args.family:
        where.append("image_family = {family:String}")
        params["family"] = args.family
    if args.ran or args.connected_to:
        params.update(since=sql_time(parse_when(args.since)), until=sql_time(parse_when(args.until)))
    if args.ran:
        where.append("host_id IN (SELECT host_id FROM (" + QUERIES["hosts_ran_exe"].sql + "))")
        params["exe"] = args.ran
    if args.connected_to:
        where.append("host_id IN (SELECT host_id FROM (" + QUERIES["hosts_connected_to"].sql + "))")
        params["raddr"] = args.connected_to
    if args.config:
        key, sep, value = args.config.partition("=")
        if not sep:
            raise ValueError(f"--config {args.config!r}: write KEY=VALUE, e.g. sshd.permitrootlogin=yes")
        sql = QUERIES["hosts_with_config"].sql.replace("{at:", "{config_at:")
        where.append("host_id IN (SELECT host_id FROM (" + sql + "))")
        params.update(key=key, value=value,
                      config_at=sql_time(parse_when(args.config_at or args.alive_at or "now")))
    sql = ("SELECT host_id, image_id, image_family, first_seen, last_seen, gone_at, gone_reason\n"
           "FROM host_lifecycle\n" + ("WHERE " + "\n  AND ".join(where) + "\n" if where else "")
           + "ORDER BY first_seen, host_id")
    return sql, params


def run(args: argparse.Namespace) -> int:
    from storage.output import render
    from storage.query_client import QueryError, open_query_client

    sql, params = build(args)
    try:
        result = open_query_client().query(sql, params)
    except QueryError as e:
        print(f"herdwatch hosts: {e}", file=sys.stderr)
        return 2
    print(render(result, args.format, args.max_width))
    return 0
