"""Hardening decay of a simulated run: per image, the share of hosts still matching the image's hardening check
results by host age, and the hosts that drifted (destroyed ones included).

It is `herdwatch hardening`'s assessment (herdwatch/commands/hardening.py: the image's view is per key the value
most of its hosts had at their first snapshot; a host matches at an age when no check the image passes fails on
its configuration at that age; hosts that did not live that long are not counted), over the configuration and
package rows the run's events would have stored, with age buckets that fit the run: 1 h, 1 day and 1 week
when it is that long, shorter ones otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from contract.events import Event, Kind
from detectors.backtest import HostSeen

_KINDS = {Kind.CONFIG_INVENTORY, Kind.CONFIG_CHANGE, Kind.PACKAGE_INVENTORY, Kind.PACKAGE_CHANGE}
CANDIDATE_AGES = (
    ("10m", timedelta(minutes=10)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
    ("3h", timedelta(hours=3)), ("6h", timedelta(hours=6)), ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1)),
)
MAX_AGES = 5


def decay_ages(span: timedelta) -> tuple[tuple[str, timedelta], ...]:
    """Age buckets a run of length `span` can show: 1 h, 1 day and 1 week when it is that long; else the
    longest buckets up to the span (at most MAX_AGES), or quarters of a run shorter than 10 minutes."""
    if span >= timedelta(weeks=1):
        return (CANDIDATE_AGES[2], CANDIDATE_AGES[5], CANDIDATE_AGES[6])
    fit = [a for a in CANDIDATE_AGES if a[1] < span]  # a host as old as the run itself is never seen
    if fit:
        return tuple(fit[-MAX_AGES:])
    quarter = span / 4
    return tuple((f"{int((quarter * k).total_seconds())}s", quarter * k) for k in (1, 2, 3))


def config_rows(event: Event) -> list[dict[str, Any]]:
    """The `config` table rows one event gives (storage/schema.py config_mv), config and package families."""
    if event.kind not in _KINDS:
        return []
    base = {"host_id": event.host_id, "image_id": event.image_id, "image_family": event.image_family,
            "time": event.time, "seq": event.seq, "family": event.kind.value.partition(".")[0]}
    if event.kind in (Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY):
        return [{**base, "key": str(k), "snapshot": 1, "value": None if v is None else str(v)}
                for k, v in (event.payload.get("items") or {}).items()]
    after = event.payload.get("after")
    return [{**base, "key": str(event.payload.get("key", "")), "snapshot": 0,
             "value": None if after is None else str(after)}]


class ConfigHistory:
    """The configuration and package rows of a run's hosts that report hardening inputs (others are dropped at
    their first configuration inventory); a periodic inventory that repeats the host's values is not kept."""

    def __init__(self) -> None:
        self.by_host: dict[str, list[dict[str, Any]]] = {}
        self.state: dict[tuple[str, str], dict[str, str | None]] = {}
        self.skip: set[str] = set()
        self.judged: set[str] = set()

    def add(self, event: Event) -> None:
        if event.kind not in _KINDS or event.host_id in self.skip:
            return
        rows = config_rows(event)
        if event.kind == Kind.CONFIG_INVENTORY and event.host_id not in self.judged:
            self.judged.add(event.host_id)
            if "hardening.inputs" not in (event.payload.get("items") or {}):
                self.skip.add(event.host_id)
                self.by_host.pop(event.host_id, None)
                self.state.pop((event.host_id, "package"), None)
                return
        key = (event.host_id, event.kind.value.partition(".")[0])
        if event.kind in (Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY):
            values = {r["key"]: r["value"] for r in rows}
            if self.state.get(key) == values:
                return
            self.state[key] = values
        else:
            values = self.state.setdefault(key, {})
            for r in rows:
                if r["value"] is None:
                    values.pop(r["key"], None)
                else:
                    values[r["key"]] = r["value"]
        self.by_host.setdefault(event.host_id, []).extend(rows)

    def rows(self) -> list[dict[str, Any]]:
        return [r for host, rows in self.by_host.items() if host not in self.skip for r in rows]


def lifecycle(hosts: Iterable[HostSeen], gone: dict[str, datetime]) -> list[dict[str, Any]]:
    """host_lifecycle rows: first and last event; gone at its goodbye, or at its last event when it fell silent."""
    return [{"host_id": h.host_id, "first_seen": h.first, "last_seen": h.last, "gone_at": gone.get(h.host_id)}
            for h in hosts]


def hardening_decay(rows: list[dict[str, Any]], hosts: Iterable[HostSeen], gone: dict[str, datetime],
                    start: datetime, end: datetime, checks: str | None = None) -> dict[str, Any]:
    """The report's `hardening_decay` section: the age buckets and, per image whose hosts report hardening
    inputs, hosts, destroyed hosts, failing checks, compliance per bucket and the drifted hosts."""
    from herdwatch.commands.hardening import assess

    ages = decay_ages(end - start)
    images = []
    for r in assess(rows, lifecycle(hosts, gone), end, checks, ages):
        if not r["passing"] and not r["failing"]:
            continue  # no hardening inputs: nothing was judged
        images.append({
            "image_id": r["image_id"],
            "image_family": r["image_family"],
            "hosts": r["hosts"],
            "gone": r["gone"],
            "failing": r["failing"],
            "passing": r["passing"],
            "compliance": {label: {"matching": m, "eligible": e, "share": round(m / e, 4) if e else None}
                           for label, (m, e) in r["compliance"].items()},
            "drifted": r["drifted"],
        })
    return {"ages": [label for label, _ in ages], "age_s": [age.total_seconds() for _, age in ages],
            "images": images}
