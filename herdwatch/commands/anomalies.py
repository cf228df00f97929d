"""`herdwatch anomalies [--follow]`: print findings from the anomaly topic, optionally filtered.

--format table (default: one line per finding), json (an array; with --follow one object a line), csv, or
ocsf (OCSF Detection Finding events, one JSON object a line; contract/ocsf.py, docs/ocsf.md). --json prints
one JSON object a line in both modes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

SEVERITIES = ["info", "low", "medium", "high", "critical"]
FORMATS = ["table", "json", "csv", "ocsf"]
COLUMNS = ["time", "severity", "kind", "host_id", "image_id", "image_family", "score", "subject", "explanation",
           "finding_id"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="print anomalies from Kafka (--follow: live, as they arrive)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new findings until Ctrl-C")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest finding kept (default: without --follow, from the beginning; "
                        "with --follow, only new ones)")
    p.add_argument("--group", help="consumer group (shared, committed progress); default: a private one "
                                   "named <deployment>-anomalies-*")
    p.add_argument("--image", action="append", default=[], help="only this image cohort (repeatable)")
    p.add_argument("--family", action="append", default=[], help="only this image family (repeatable)")
    p.add_argument("--host", action="append", default=[], help="only this host (repeatable)")
    p.add_argument("--kind", action="append", default=[], help="only this finding kind (repeatable)")
    p.add_argument("--severity", choices=SEVERITIES, default="info", help="minimum severity")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default), json, csv, or ocsf (OCSF Detection Finding, one JSON object a line)")
    p.add_argument("--max-width", type=int, default=80, help="truncate table cells to this width")
    p.add_argument("--json", action="store_true", help="print each finding as one JSON line (as --format json "
                                                       "with --follow)")
    p.set_defaults(func=run)


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def _row(f: dict[str, Any]) -> list[Any]:
    return [f.get(c) for c in COLUMNS]


def run(args: argparse.Namespace) -> int:
    import orjson

    from contract.ocsf import detection_finding
    from contract.settings import KafkaSettings
    from herdwatch import __version__
    from storage.output import render as render_table
    from storage.query_client import QueryResult
    from streams.follow import AnomalyFilter, follow, render

    fmt = args.format or ("jsonl" if args.json else "table")
    flt = AnomalyFilter(set(args.image), set(args.family), set(args.host), set(args.kind), args.severity)
    start = args.from_beginning or not args.follow
    found: list[dict[str, Any]] = []
    shown = 0
    try:
        for f in follow(KafkaSettings(), group=args.group, from_beginning=start, forever=args.follow):
            if not flt.matches(f):
                continue
            shown += 1
            if fmt == "ocsf":
                print(json.dumps(detection_finding(f, __version__), ensure_ascii=False), flush=True)
            elif fmt == "jsonl" or (fmt == "json" and args.follow):  # --json: one JSON object a line
                print(orjson.dumps(f).decode(), flush=True)
            elif fmt == "table":
                print(render(f), flush=True)
            elif not args.follow:
                found.append(f)
            elif fmt == "csv":
                if shown == 1:
                    print(_csv_line(COLUMNS), flush=True)
                print(_csv_line(_row(f)), flush=True)
    except KeyboardInterrupt:
        pass
    if not args.follow and fmt == "json":
        print(json.dumps(found, ensure_ascii=False, indent=2))
    elif not args.follow and fmt == "csv":
        result = QueryResult(COLUMNS, ["String"] * len(COLUMNS), [_row(f) for f in found])
        print(render_table(result, "csv", args.max_width))
    if not args.follow:
        print(f"{shown} finding(s)", file=sys.stderr)
    return 0
