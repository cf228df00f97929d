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
pure: events in, findings, rollout events and per-observation scores out. `Replay` is its loop for
callers that choose their own tick times (the simulator's evaluation ticks once per collector cycle), and
`FamilyEngines` keeps one engine per image family, as the stream workers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from contract.events import ContractError, Event, decode_event, format_time
from contract.findings import Finding, RolloutEvent
from detectors.engine import FamilyEngine, Output
from detectors.engine_config import EngineConfig
from detectors.host_state import HostState
from detectors.sequence import SequenceGap
from detectors.types import Observation

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
class HostSeen:
    """A host as the replay saw it: its latest image and the times of its first and last event."""

    host_id: str
    image_id: str
    image_family: str
    first: datetime
    last: datetime


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
    seen: dict[str, HostSeen] = field(default_factory=dict)

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


class FamilyEngines:
    """One FamilyEngine per image family, created on the family's first observation (a `Model`).

    The stream workers keep engines this way; `replay` defaults to one FamilyEngine for every family.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = EngineConfig() if config is None else config
        self.record_scores = self.config.record_scores
        self.engines: dict[str, FamilyEngine] = {}
        self.last_scores: dict[str, float] = {}
        """The scores of the engine that processed the last observation."""

    def process(self, obs: Observation) -> list[Output]:
        engine = self.engines.get(obs.image_family)
        if engine is None:
            engine = self.engines[obs.image_family] = FamilyEngine(config=self.config)
            engine.record_scores = self.record_scores
        out = engine.process(obs)
        self.last_scores = engine.last_scores
        return out

    def tick(self, now: Any) -> list[Output]:
        out: list[Output] = []
        for engine in self.engines.values():
            out += engine.tick(now)
        return out


class Replay:
    """The replay loop, one event at a time: SequenceGap, a HostState per host, then the model.

    The caller decides when the model ticks: `replay` every `tick_s` seconds of event time, the
    simulator's evaluation at the end of each collector cycle. `finish` returns the result.
    """

    def __init__(
        self,
        model: Model | None = None,
        *,
        sequence_gaps: bool = True,
        on_scores: Callable[[dict[str, Any]], None] | None = None,
        linger_s: float = 900.0,
    ) -> None:
        self.model: Model = FamilyEngine() if model is None else model
        self.on_scores = on_scores
        self.scoring: FamilyEngine | FamilyEngines | None = None
        """The model whose per-observation scores go to `on_scores` (FamilyEngine models only)."""
        if on_scores is not None and isinstance(self.model, (FamilyEngine, FamilyEngines)):
            self.scoring = self.model
            self.scoring.record_scores = True
        self.linger_s = linger_s
        self.gaps = SequenceGap() if sequence_gaps else None
        self.states: dict[str, HostState] = {}
        self.result = BacktestResult()

    def feed(self, event: Event) -> None:
        """Run one event (in per-host order) through the sequence check, its host's state and the model."""
        result = self.result
        result.events += 1
        if self.gaps is not None:
            gap = self.gaps.check(event)
            if gap is not None:
                result.findings.append(gap)
        hs = self.states.get(event.host_id)
        if hs is None:
            hs = self.states[event.host_id] = HostState(
                event.host_id, event.image_id, event.image_family, self.linger_s
            )
        seen = result.seen.get(event.host_id)
        if seen is None:
            result.seen[event.host_id] = HostSeen(
                event.host_id, event.image_id, event.image_family, event.time, event.time
            )
        else:
            seen.image_id, seen.image_family, seen.last = event.image_id, event.image_family, event.time
        result.family_of_host[event.host_id] = event.image_family
        obs = hs.apply(event)
        if obs is None:
            return
        result.observations += 1
        self._collect(self.model.process(obs))
        if self.scoring is not None and self.on_scores is not None:
            self.on_scores(
                {
                    "time": obs.time.isoformat(),
                    "host_id": obs.host_id,
                    "image_id": obs.image_id,
                    "image_family": obs.image_family,
                    **self.scoring.last_scores,
                }
            )

    def tick(self, now: Any) -> None:
        """The model's periodic work at event time `now` (datetime or epoch seconds)."""
        self._collect(self.model.tick(now))

    def finish(self) -> BacktestResult:
        result = self.result
        result.hosts = len(self.states)
        result.host_hours = sum(s.last.timestamp() - s.first.timestamp() for s in result.seen.values()) / 3600.0
        return result

    def _collect(self, out: list[Output]) -> None:
        for o in out:
            if isinstance(o, Finding):
                self.result.findings.append(o)
            else:
                self.result.rollouts.append(o)


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

    The model ticks every `tick_s` seconds of event time from the first event, and once more at the end.
    `on_scores` receives one record per observation with every detector's score (FamilyEngine models).
    """
    run = Replay(model, sequence_gaps=sequence_gaps, on_scores=on_scores, linger_s=linger_s)
    ordered = sorted(events, key=lambda e: (e.time, e.host_id, e.seq)) if sort else events
    next_tick: float | None = None
    for event in ordered:
        t = event.time.timestamp()
        if next_tick is None:
            next_tick = t + tick_s
        while t >= next_tick:
            run.tick(next_tick)
            next_tick += tick_s
        run.feed(event)
    if next_tick is not None:
        run.tick(next_tick)
    return run.finish()


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
