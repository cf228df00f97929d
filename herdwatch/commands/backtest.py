"""`herdwatch backtest`: replay recorded telemetry through the detectors offline and report the findings.

Input: JSON-lines files of event envelopes (one envelope or one array of envelopes per line; format in
docs/detection.md and detectors/backtest.py), metrics users already keep (a wide CSV: time, host,
[image,] one column per metric; a Prometheus range-query JSON export), or a query against the
ClickHouse `events` table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay recorded telemetry through the detectors and report findings",
        description="Replay telemetry (JSONL files or a ClickHouse query) through the same "
        "detectors offline. JSONL: one event envelope, or an array of envelopes, "
        "per line ('-' reads stdin).",
    )
    p.add_argument(
        "files",
        nargs="*",
        type=str,
        help="JSONL files of event envelopes ('-' = stdin), wide CSV files (time,host,[image,]metric...) or "
        "Prometheus range-query JSON exports",
    )
    p.add_argument(
        "--format",
        choices=("auto", "jsonl", "csv", "prometheus"),
        default="auto",
        help="input format (auto: .csv is a wide CSV, a .json file holding a Prometheus API answer is one, "
        "anything else JSONL)",
    )
    p.add_argument("--image", help="CSV/Prometheus: image of hosts without one (default: each host its own)")
    p.add_argument("--image-label", help="Prometheus: the label that names a host's image (e.g. job)")
    p.add_argument("--host-label", default="instance", help="Prometheus: the label that names a host")
    p.add_argument(
        "--query",
        help="SQL returning the events table's columns (event_id, kind, time, host_id, "
        "boot_id, image_id, image_family, seq, tags, payload, schema_version)",
    )
    p.add_argument(
        "--from-storage",
        action="store_true",
        help="read the `events` table of the configured storage (HERDWATCH_STORAGE_*)",
    )
    p.add_argument("--where", default="", help="with --from-storage: a SQL condition, e.g. \"image_family='web'\"")
    p.add_argument(
        "--scores",
        type=Path,
        help="write every observation's score per detector here (.csv for CSV, anything else JSONL)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="ground truth (JSON list or JSONL of {host_id, scenario, start, "
        "end}): also print precision, recall and time to detect",
    )
    p.add_argument("--json", action="store_true", help="print findings and rollout events as JSON lines")
    p.add_argument("--tick", type=float, default=10.0, help="seconds of event time between engine ticks")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="detector setting, e.g. --set confirm_s=60 --set rare_fraction=0.05 (see docs/detection.md)",
    )
    p.set_defaults(func=run)


def _knobs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KNOB=VALUE, e.g. --set confirm_s=60")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _format_of(path: Path, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".json":
        with path.open("rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"{") and b'"status"' in head:
            return "prometheus"
    return "jsonl"


def _read_files(
    names: list[str],
    fmt: str = "auto",
    image: str | None = None,
    image_label: str | None = None,
    host_label: str = "instance",
) -> tuple[list[Any], list[Any]]:
    from detectors.backtest import BadLine, parse_lines, parse_prometheus, parse_wide_csv

    events: list[Any] = []
    bad: list[Any] = []
    for name in names:
        if name == "-":
            items = parse_lines(sys.stdin, "stdin")
            for x in items:
                (bad if isinstance(x, BadLine) else events).append(x)
            continue
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"{name} does not exist (give JSONL files of event envelopes, or --query)")
        kind = _format_of(path, fmt)
        if kind == "prometheus":
            events += parse_prometheus(path.read_bytes(), name, image_label, image, host_label)
            continue
        if kind == "csv":
            with path.open(newline="") as text:
                for x in parse_wide_csv(text, name, image):
                    (bad if isinstance(x, BadLine) else events).append(x)
            continue
        with path.open("rb") as f:
            for x in parse_lines(f, name):
                (bad if isinstance(x, BadLine) else events).append(x)
    return events, bad


def _read_storage(query: str | None, where: str) -> tuple[list[Any], list[Any]]:
    from contract.events import ContractError, decode_event
    from contract.settings import StorageSettings
    from detectors.backtest import EVENT_COLUMNS, BadLine, row_to_envelope
    from storage.query_client import open_query_client

    sql = query or (
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
        + (f" WHERE {where}" if where else "")
        + " ORDER BY time, host_id, seq"
    )
    # read-only, and through the sink's local endpoint when a sink owns the embedded store
    client = open_query_client(StorageSettings())
    events, bad = [], []
    for i, row in enumerate(client.query(sql).dicts(), 1):
        missing = [c for c in EVENT_COLUMNS if c not in row and c != "schema_version"]
        if missing:
            raise ValueError(f"the query must return the events table's columns; missing: {', '.join(missing)}")
        try:
            events.append(decode_event(row_to_envelope(row)))
        except (ContractError, ValueError) as e:
            bad.append(BadLine(f"row {i}", str(e)))
    return events, bad


def _load_truth(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    try:
        data = json.loads(text)
        return list(data if isinstance(data, list) else data.get("truth", []))
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class _ScoreWriter:
    def __init__(self, path: Path) -> None:
        from detectors.backtest import SCORE_FIELDS

        self.file: TextIO = path.open("w", newline="")
        self.csv = path.suffix.lower() == ".csv"
        self.writer = csv.DictWriter(self.file, fieldnames=SCORE_FIELDS, extrasaction="ignore") if self.csv else None
        if self.writer:
            self.writer.writeheader()
        self.rows = 0

    def __call__(self, record: dict[str, Any]) -> None:
        self.rows += 1
        if self.writer:
            self.writer.writerow(record)
        else:
            self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def run(args: argparse.Namespace) -> int:
    from detectors import EngineConfig, EngineConfigError, FamilyEngine, Finding
    from detectors.backtest import replay
    from herdwatch.evaluation.scoring import evaluate, format_comparison
    from streams.checks_data import engine_inputs
    from streams.osv_data import osv_source

    if not args.files and not (args.query or args.from_storage):
        raise ValueError("nothing to replay: give JSONL files (or '-'), --query SQL or --from-storage")
    events, bad = (
        _read_files(args.files, args.format, args.image, args.image_label, args.host_label)
        if args.files
        else ([], [])
    )
    if args.query or args.from_storage:
        more, more_bad = _read_storage(args.query, args.where)
        events += more
        bad += more_bad
    try:
        config = EngineConfig.from_mapping(_knobs(args.set))
    except EngineConfigError as e:
        raise ValueError(f"--set: {e} (see docs/detection.md)") from e
    engine = FamilyEngine(config=config, osv=osv_source(config), **engine_inputs(config))
    writer = _ScoreWriter(args.scores) if args.scores else None
    try:
        result = replay(events, engine, tick_s=args.tick, on_scores=writer)
    finally:
        if writer:
            writer.close()
    outputs = sorted(result.outputs, key=lambda o: o.time)
    for o in outputs:
        if args.json:
            print(json.dumps({"type": "finding" if isinstance(o, Finding) else "rollout", **o.to_dict()}))
        elif isinstance(o, Finding):
            print(
                f"{o.time:%Y-%m-%d %H:%M:%S} {o.severity.value.upper():8} {o.kind.value:20} {o.host_id}: "
                f"{o.explanation}"
            )
        else:
            print(f"{o.time:%Y-%m-%d %H:%M:%S} ROLLOUT  {o.status.value:20} {o.image_family}: {o.explanation}")
    for b in bad[:10]:
        print(f"skipped {b.where}: {b.reason}", file=sys.stderr)
    if len(bad) > 10:
        print(f"... and {len(bad) - 10} more bad lines", file=sys.stderr)
    by_kind: dict[str, int] = {}
    for f in result.findings:
        by_kind[f.kind.value] = by_kind.get(f.kind.value, 0) + 1
    summary = (
        f"replayed {result.events} events from {result.hosts} hosts ({result.host_hours:.1f} host-hours), "
        f"{result.observations} observations: {len(result.findings)} findings "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items())) or 'none'}), "
        f"{len(result.rollouts)} rollout events, {len(bad)} bad lines skipped"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    if writer:
        print(f"wrote {writer.rows} observation scores to {args.scores}", file=sys.stderr)
    if args.truth:
        report = evaluate(
            result.outputs,
            _load_truth(args.truth),
            host_hours=result.host_hours,
            family_of_host=result.family_of_host,
        )
        print(format_comparison({"cohort": report}))
    return 0
