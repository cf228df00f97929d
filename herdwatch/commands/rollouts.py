"""`herdwatch rollouts`: the image rollouts the stream workers recognised, from storage.

`herdwatch rollouts` lists them (one row per family, old image -> new image: its latest status, largest
share, first and last event); `herdwatch rollouts show ID|FAMILY` prints each event of one rollout (or of
every rollout of a family) and the new image's diff (features it added and removed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from herdwatch.commands.options import add_output_args, add_time_arg

ROLLOUT_ID = "lower(substring(hex(sipHash64(image_family, old_image, new_image)), 1, 10))"
"""A short stable id of one rollout (family, old image, new image)."""

LIST_SQL = f"""
SELECT {ROLLOUT_ID} AS rollout_id, image_family, argMax(status, time) AS status, old_image, new_image,
       round(max(share), 2) AS share, min(time) AS started, max(time) AS last_event, count() AS events
FROM rollouts FINAL
WHERE time >= {{since:DateTime64(6, 'UTC')}} AND time <= {{until:DateTime64(6, 'UTC')}}
  AND ({{family:String}} = '' OR image_family = {{family:String}})
GROUP BY image_family, old_image, new_image
ORDER BY started, image_family"""

SHOW_SQL = f"""
SELECT {ROLLOUT_ID} AS rollout_id, image_family, time, status, old_image, new_image, round(share, 2) AS share,
       explanation, diff
FROM rollouts FINAL
WHERE {ROLLOUT_ID} = {{key:String}} OR image_family = {{key:String}}
ORDER BY image_family, old_image, new_image, time"""

STATUSES = ["started", "progress", "completed", "rolled_back"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollouts", help="image rollouts: list them, or `rollouts show ID|FAMILY` with the image diff",
                       description="Lists the rollouts the stream workers recognised (stored by the sink): "
                                   "family, old -> new image, latest status, share of the family on the new "
                                   "image, first and last event. `rollouts show ID|FAMILY` prints the events "
                                   "of one rollout (or every rollout of a family) and the image diff.")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show")
    p.add_argument("key", nargs="?", metavar="ID|FAMILY", help="for show: a rollout id from the list, or a family")
    p.add_argument("--family", default="", help="list: only this image family")
    p.add_argument("--status", choices=STATUSES, default="", help="list: only rollouts whose latest status is this")
    add_time_arg(p, "--since", default="1970-01-01", help="list: rollouts with events from (default: all)")
    add_time_arg(p, "--until", default="now", help="list: ... until (default now)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.output import render
    from storage.query_client import QueryError, open_query_client
    from storage.when import parse_when, sql_time

    if args.action == "show" and not args.key:
        print("herdwatch rollouts: show needs a rollout id or a family, e.g. `herdwatch rollouts show web` "
              "(`herdwatch rollouts` lists the ids)", file=sys.stderr)
        return 2
    client = open_query_client()
    try:
        if args.action == "list":
            result = client.query(LIST_SQL, {"since": sql_time(parse_when(args.since)),
                                             "until": sql_time(parse_when(args.until)),
                                             "family": args.family})
            if args.status:  # rollouts whose *latest* status is this
                keep = result.columns.index("status")
                result.rows = [r for r in result.rows if r[keep] == args.status]
            print(render(result, args.format, args.max_width))
            return 0
        result = client.query(SHOW_SQL, {"key": args.key})
    except QueryError as e:
        print(f"herdwatch rollouts: {e}", file=sys.stderr)
        return 2
    if not result.rows:
        print(f"herdwatch rollouts: no rollout with id or family {args.key!r}; `herdwatch rollouts` lists them",
              file=sys.stderr)
        return 3
    rows = result.dicts()
    for r in rows:
        r["diff"] = _diff(r.get("diff"))
    if args.format == "json":
        print(json.dumps(_grouped(rows), indent=2, ensure_ascii=False, default=str))
        return 0
    if args.format == "csv":
        result.rows = [[json.dumps(v) if isinstance(v, dict) else v for v in r.values()] for r in rows]
        print(render(result, "csv"))
        return 0
    for g in _grouped(rows):
        print(f"rollout {g['rollout_id']}  family {g['image_family']}: {g['old_image']} -> {g['new_image']}  "
              f"status {g['status']}  share {g['share']:.0%}")
        for event in g["events"]:
            print(f"  {event['time']}  {event['status']:<12} {event['share']:>5.0%}  {event['explanation']}")
        added, removed = g["diff"].get("added", []), g["diff"].get("removed", [])
        print(f"  image diff: {len(added)} added, {len(removed)} removed")
        for feature in added:
            print(f"    + {feature}")
        for feature in removed:
            print(f"    - {feature}")
        print()
    return 0


def _diff(value: Any) -> dict[str, list[str]]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per rollout: its latest status and share, its events, and the union of their diffs."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = out.setdefault(r["rollout_id"], {k: r[k] for k in ("rollout_id", "image_family", "old_image",
                                                               "new_image")} | {"events": [], "diff": {}})
        g["events"].append({k: r[k] for k in ("time", "status", "share", "explanation")})
        g["status"], g["share"] = r["status"], float(r["share"])
        for side in ("added", "removed"):
            merged = g["diff"].setdefault(side, [])
            merged += [f for f in r["diff"].get(side, []) if f not in merged]
    return list(out.values())
