"""Backtest: replay recorded telemetry through the same detectors, offline.

Input format (anything that can write JSON lines can feed it): one JSON value per line, either one event
envelope or a JSON array of envelopes (a telemetry message as sent to Kafka). An envelope is

    {"schema_version": 1, "event_id": "...", "kind": "metrics", "time": "2026-03-02T09:00:10Z",
     "host_id": "i-0abc", "boot_id": "b1", "image_id": "ami-0abc", "image_family": "web", "seq": 17,
     "tags": {}, "payload": {"values": {"cpu_pct": 12.5, "my_custom_metric": 3}}}

with the payload of its kind as in docs/contract.md. From other tools: `metrics` events carry any named
numeric values (the metric detectors take whatever names they get); `process.inventory`,
`net.inventory`, `config.inventory`, `package.inventory`, ... carry set-valued state. `seq` may simply
count a host's lines; `boot_id` may be constant. Blank lines and lines starting with # are skipped; bad
lines are reported (line number and reason), never silently dropped.

Rows from the ClickHouse `events` table convert with `row_to_envelope`. The replay itself (`replay`) is
pure: events in, findings, rollout events and per-observation scores out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from detectors.engine import FamilyEngine, Output
from detectors.host_state import HostState
from detectors.sequence import SequenceGap
from detectors.types import Finding, Observation, RolloutEvent
from herdwatch.contract import ContractError, Event, decode_event, format_time

EVENT_COLUMNS = (
    "event_id",
    "kind",
    "time",
    "host_id",
    "boot_id",
    "image_id",
    "image_family",
    "seq",
    "tags",
    "payload",
    "schema_version",
)
"""The columns of the ClickHouse `events` table a backtest query must return."""


class Model(Protocol):
    def process(self, obs: Observation) -> list[Output]: ...

    def tick(self, now: Any) -> list[Output]: ...


@dataclass
class BadLine:
    where: str
    reason: str


@dataclass
class BacktestResult:
    findings: list[Finding] = field(default_factory=list)
    rollouts: list[RolloutEvent] = field(default_factory=list)
    events: int = 0
    observations: int = 0
    hosts: int = 0
    host_hours: float = 0.0
    bad: list[BadLine] = field(default_factory=list)
    family_of_host: dict[str, str] = field(default_factory=dict)

    @property
    def outputs(self) -> list[Output]:
        return [*self.findings, *self.rollouts]


def parse_lines(lines: Iterable[str | bytes], source: str = "input") -> Iterator[Event | BadLine]:
    """Events (or BadLine records) from JSON lines: one envelope or an array of envelopes per line."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if isinstance(text, str):
            text = text.encode()
        if not text or text.startswith(b"#"):
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            yield BadLine(f"{source}:{number}", f"not JSON ({e})")
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            try:
                yield decode_event(item)
            except ContractError as e:
                yield BadLine(f"{source}:{number}", str(e))


def row_to_envelope(row: dict[str, Any]) -> dict[str, Any]:
    """An `events` table row (column -> value, as clickhouse-connect returns them) as an envelope dict."""
    payload = row["payload"]
    t = row["time"]
    if isinstance(t, datetime) and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)  # the column is DateTime64(6, 'UTC'); some clients return naive values
    return {
        "schema_version": int(row.get("schema_version", 1)),
        "event_id": str(row["event_id"]),
        "kind": row["kind"],
        "time": format_time(t) if isinstance(t, datetime) else str(t),
        "host_id": row["host_id"],
        "boot_id": row["boot_id"],
        "image_id": row["image_id"],
        "image_family": row["image_family"],
        "seq": int(row["seq"]),
        "tags": dict(row.get("tags") or {}),
        "payload": orjson.loads(payload) if isinstance(payload, (str, bytes)) else dict(payload),
    }


def replay(
    events: Iterable[Event],
    model: Model | None = None,
    *,
    tick_s: float = 10.0,
    sort: bool = True,
    sequence_gaps: bool = True,
    on_scores: Callable[[dict[str, Any]], None] | None = None,
    linger_s: float = 900.0,
) -> BacktestResult:
    """Run events through HostState + the model (a FamilyEngine by default) in event-time order.

    `on_scores` receives one record per observation with every detector's score (FamilyEngine models).
    """
    if model is None:
        model = FamilyEngine(record_scores=on_scores is not None)
    elif on_scores is not None and isinstance(model, FamilyEngine):
        model.record_scores = True
    result = BacktestResult()
    ordered = sorted(events, key=lambda e: (e.time, e.host_id, e.seq)) if sort else events
    states: dict[str, HostState] = {}
    span: dict[str, list[float]] = {}
    gaps = SequenceGap()
    next_tick: float | None = None
    out: list[Output] = []
    for event in ordered:
        result.events += 1
        t = event.time.timestamp()
        if next_tick is None:
            next_tick = t + tick_s
        while t >= next_tick:
            out += model.tick(next_tick)
            next_tick += tick_s
        if sequence_gaps:
            gap = gaps.check(event)
            if gap is not None:
                out.append(gap)
        hs = states.get(event.host_id)
        if hs is None:
            hs = states[event.host_id] = HostState(event.host_id, event.image_id, event.image_family, linger_s)
        s = span.get(event.host_id)
        if s is None:
            span[event.host_id] = [t, t]
        else:
            s[1] = t
        result.family_of_host[event.host_id] = event.image_family
        obs = hs.apply(event)
        if obs is None:
            continue
        result.observations += 1
        out += model.process(obs)
        if on_scores is not None and isinstance(model, FamilyEngine):
            on_scores(
                {
                    "time": obs.time.isoformat(),
                    "host_id": obs.host_id,
                    "image_id": obs.image_id,
                    "image_family": obs.image_family,
                    **model.last_scores,
                }
            )
    if next_tick is not None:
        out += model.tick(next_tick)
    for o in out:
        (result.findings if isinstance(o, Finding) else result.rollouts).append(o)  # type: ignore[arg-type]
    result.hosts = len(states)
    result.host_hours = sum(b - a for a, b in span.values()) / 3600.0
    return result


SCORE_FIELDS = (
    "time",
    "host_id",
    "image_id",
    "image_family",
    "rarity",
    "drift",
    "policy",
    "peers",
    "multivariate",
    "rollout",
)
"""Columns of the `--scores` output (JSONL objects or CSV)."""
