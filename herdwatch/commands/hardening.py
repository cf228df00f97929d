"""`herdwatch hardening`: hardening decay from storage, destroyed hosts included.

    herdwatch hardening                       every image: hosts, checks it fails, compliance by host age
    herdwatch hardening --image ami-web-7     one image: its failing checks, compliance, drifted hosts
    herdwatch hardening --family web --format json

An image's results are the checks (detectors/checks) on its view: per key the value most of its hosts had
at their first configuration snapshot (ties: the earliest host's). A host matches its image at an age
(1 h, 1 day, 1 week after it was first seen) when no check the image passes fails on the host's
configuration at that age; hosts that did not live that long are not counted for it. Drifted hosts are
those whose latest configuration fails a check the image passes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from herdwatch.commands.options import add_output_args, add_time_arg

AGES = (("1h", timedelta(hours=1)), ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1)))

LIFE_SQL = """
SELECT host_id, image_id, image_family, first_seen, last_seen, gone_at FROM host_lifecycle
WHERE ({image:String} = '' OR image_id = {image:String})
  AND ({family:String} = '' OR image_family = {family:String})"""


@dataclass
class HostHistory:
    """One host's configuration and package changes, to rebuild its values at any time."""

    host_id: str
    image_id: str
    image_family: str
    rows: list[tuple[datetime, int, str, bool, str, str | None]] = field(default_factory=list)
    """(time, seq, family, snapshot, key, value) in (time, seq) order."""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    gone_at: datetime | None = None

    def values_at(self, at: datetime) -> dict[str, dict[str, str]] | None:
        """{"config": {...}, "package": {...}} as of `at` (None before the first snapshot)."""
        state: dict[str, dict[str, str]] = {}
        snap: dict[str, tuple[datetime, int]] = {}
        for t, seq, fam, snapshot, key, value in self.rows:
            if t > at:
                break
            if snapshot:
                if snap.get(fam) != (t, seq):  # a new snapshot replaces the family's values
                    snap[fam] = (t, seq)
                    state[fam] = {}
                if value is not None:
                    state[fam][key] = value
            elif fam in state:
                if value is None:
                    state[fam].pop(key, None)
                else:
                    state[fam][key] = value
        return state if "config" in state else None

    @property
    def end(self) -> datetime | None:
        return self.gone_at or self.last_seen


def features(values: dict[str, dict[str, str]]) -> list[str]:
    from detectors.features import config_feature, package_feature

    return ([config_feature(k, v) for k, v in values.get("config", {}).items()]
            + [package_feature(k, v) for k, v in values.get("package", {}).items()])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hardening", help="hardening checks per image, compliance by host age, drifted hosts",
                       description="Images with their hardening check results (from the latest configuration "
                                   "stored for their hosts, destroyed hosts included), how many hosts still "
                                   "match their image at 1 h, 1 day and 1 week of age, and the hosts that "
                                   "drifted (a check the image passes fails on the host).")
    p.add_argument("--image", default="", help="only this image (also lists its failing checks and drifted hosts)")
    p.add_argument("--family", default="", help="only images of this family")
    p.add_argument("--checks", default=None, help="folder of check files (default: the shipped checks)")
    add_time_arg(p, "--until", default="now", help="as of (default now)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.queries import run_named
    from storage.query_client import QueryError, open_query_client
    from storage.when import parse_when

    until = parse_when(args.until)
    client = open_query_client()
    try:
        rows = run_named(client, "hardening_inputs", image=args.image, family=args.family, until=until).dicts()
        life = client.query(LIFE_SQL, {"image": args.image, "family": args.family}).dicts()
    except QueryError as e:
        print(f"herdwatch hardening: {e}", file=sys.stderr)
        return 2
    report = assess(rows, life, until, args.checks)
    if not report:
        print("herdwatch hardening: no configuration stored for these hosts (agents with the config probe report it)",
              file=sys.stderr)
        return 3
    if args.format == "json":
        print(json.dumps(report, indent=2, default=str))
    elif args.format == "csv":
        print("image_id,image_family,hosts,gone,checks_failing," + ",".join(f"match_{a}" for a, _ in AGES)
              + ",drifted_hosts")
        for r in report:
            print(",".join([r["image_id"], r["image_family"], str(r["hosts"]), str(r["gone"]),
                            str(len(r["failing"]))] + [_ratio(r["compliance"][a]) for a, _ in AGES]
                           + [str(len(r["drifted"]))]))
    else:
        print(text(report, detail=bool(args.image), width=args.max_width))
    return 0


def _time(v: Any) -> datetime | None:
    from storage.when import parse_when

    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=parse_when("now").tzinfo)
    return parse_when(str(v))


def assess(rows: list[dict[str, Any]], life: list[dict[str, Any]], until: datetime,
           checks: str | None = None, ages: tuple[tuple[str, timedelta], ...] = AGES) -> list[dict[str, Any]]:
    """Per image: hosts, the checks its view fails, compliance by age (`ages`: (label, host age)) and the
    drifted hosts. `rows`: the `hardening_inputs` query's rows; `life`: host_id, first_seen, last_seen,
    gone_at per host (hosts without a row count from their first configuration row, as live)."""
    from detectors.hardening import HostView, image_features
    from streams.checks_data import hardening_library

    library = hardening_library(checks)
    hosts: dict[str, HostHistory] = {}
    for r in rows:
        h = hosts.setdefault(r["host_id"], HostHistory(r["host_id"], r["image_id"], r["image_family"]))
        t = _time(r["time"])
        assert t is not None
        h.rows.append((t, int(r["seq"]), r["family"], bool(r["snapshot"]), r["key"], r["value"]))
    for r in life:
        found = hosts.get(r["host_id"])
        if found is not None:
            found.first_seen, found.last_seen = _time(r["first_seen"]), _time(r["last_seen"])
            found.gone_at = _time(r["gone_at"])
    by_image: dict[str, list[HostHistory]] = {}
    for h in hosts.values():
        h.rows.sort(key=lambda x: (x[0], x[1]))
        by_image.setdefault(h.image_id, []).append(h)
    report = []
    for image, members in sorted(by_image.items()):
        members.sort(key=lambda h: (h.first_seen or h.rows[0][0], h.host_id))
        first_values = [v for h in members if (v := h.values_at(_first_snapshot(h))) is not None]
        if not first_values:
            continue
        counts: dict[str, list[float]] = {}
        for i, v in enumerate(first_values):
            for f in features(v):
                e = counts.setdefault(f, [0, float(i)])
                e[0] += 1
        view = HostView.from_features(image_features(counts, len(first_values), 0.5))
        image_results = library.evaluate(view)
        failing = [c.id for c in library.checks if image_results[c.id].status == "fail"]
        passing = {c.id for c in library.checks if image_results[c.id].status == "pass"}

        def drift(values: dict[str, dict[str, str]] | None, passing: set[str] = passing) -> list[str]:
            if values is None:
                return []
            r = library.evaluate(HostView.from_features(features(values)))
            return sorted(k for k in passing if r[k].status == "fail")

        compliance = {}
        for label, age in ages:
            eligible = matching = 0
            for h in members:
                start = h.first_seen or h.rows[0][0]
                at = start + age
                if at > min(until, h.end or until):
                    continue  # the host did not live (or has not lived) that long
                eligible += 1
                matching += not drift(h.values_at(at))
            compliance[label] = (matching, eligible)
        drifted = []
        for h in members:
            latest = drift(h.values_at(min(until, h.end or until)))
            if latest:
                drifted.append({"host_id": h.host_id, "gone": h.gone_at is not None, "checks": latest})
        report.append({
            "image_id": image, "image_family": members[0].image_family, "hosts": len(members),
            "gone": sum(h.gone_at is not None for h in members), "failing": failing,
            "failing_by_family": dict(Counter(library.by_id[c].family for c in failing)),
            "passing": len(passing), "compliance": compliance, "drifted": drifted,
        })
    return report


def _first_snapshot(h: HostHistory) -> datetime:
    """When the host's first configuration and first package snapshots had both arrived."""
    firsts: dict[str, datetime] = {}
    for t, _, fam, snapshot, _, _ in h.rows:
        if snapshot:
            firsts.setdefault(fam, t)
    return max(firsts.values()) if firsts else h.rows[0][0]


def _ratio(pair: tuple[int, int]) -> str:
    matching, eligible = pair
    return f"{matching}/{eligible}" if eligible else "-"


def text(report: list[dict[str, Any]], detail: bool, width: int = 80) -> str:
    lines = [f"{'image':<24} {'family':<12} {'hosts':>5} {'gone':>4} {'failing':>7}  "
             + "  ".join(f"match@{a:<3}" for a, _ in AGES) + "  drifted"]
    for r in report:
        lines.append(f"{r['image_id'][:24]:<24} {r['image_family'][:12]:<12} {r['hosts']:>5} {r['gone']:>4} "
                     f"{len(r['failing']):>7}  " + "  ".join(f"{_ratio(r['compliance'][a]):<9}" for a, _ in AGES)
                     + f"  {len(r['drifted'])}")
    if detail:
        for r in report:
            lines.append("")
            lines.append(f"image {r['image_id']}: {r['passing']} checks pass, {len(r['failing'])} fail "
                         f"(fix them in the image's bake pipeline)")
            for c in r["failing"]:
                lines.append(f"  fail  {c}"[:width])
            lines.append(f"drifted hosts ({len(r['drifted'])}):")
            for d in r["drifted"]:
                gone = " (gone)" if d["gone"] else ""
                lines.append(f"  {d['host_id']}{gone}: {', '.join(d['checks'])}"[:width])
    return "\n".join(lines)
