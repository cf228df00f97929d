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

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from contract.events import ContractError, Event, Kind, decode_event, format_time
from contract.findings import Finding, RolloutEvent
from detectors.engine import FamilyEngine, Output
from detectors.engine_config import EngineConfig
from detectors.hardening import Library, OsvData
from detectors.host_state import HostState
from detectors.policy import Rule
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

    def __init__(self, config: EngineConfig | None = None, osv: OsvData = None, checks: Library | None = None,
                 rules: Iterable[Rule] | None = None) -> None:
        """`osv`, `checks`, `rules`: passed to every FamilyEngine (parsed; streams/checks_data.py reads them)."""
        self.config = EngineConfig() if config is None else config
        self.osv = osv
        self.checks, self.rules = checks, None if rules is None else tuple(rules)
        """OSV data in memory for every engine (detectors.hardening.OsvData)."""
        self.record_scores = self.config.record_scores
        self.engines: dict[str, FamilyEngine] = {}
        self.last_scores: dict[str, float] = {}
        """The scores of the engine that processed the last observation."""

    def process(self, obs: Observation) -> list[Output]:
        engine = self.engines.get(obs.image_family)
        if engine is None:
            engine = self.engines[obs.image_family] = FamilyEngine(
                config=self.config, osv=self.osv, checks=self.checks, rules=self.rules
            )
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
    "history",
    "metric",
)
"""Columns of the `--scores` output (JSONL objects or CSV); `history` is the host against its own past,
`metric` the metric view that judged (the larger of peers and history)."""


# ---- metrics users already keep: a wide CSV, a Prometheus range-query export -----------------------------
class FormatError(ValueError):
    """An input file that cannot be read at all (wrong layout); the message says what was expected."""


def parse_time(text: str) -> datetime:
    """ISO-8601 (naive = UTC) or epoch seconds (milliseconds when > 1e11) as an aware UTC datetime."""
    text = text.strip()
    try:
        x = float(text)
    except ValueError:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if x > 1e11:
        x /= 1000.0
    return datetime.fromtimestamp(x, UTC)


def metrics_event(host: str, image: str, t: datetime, seq: int, values: dict[str, float]) -> Event:
    """One `metrics` event of an imported host (constant boot, family = image)."""
    return Event(
        kind=Kind.METRICS,
        time=t,
        host_id=host,
        boot_id="import",
        image_id=image,
        image_family=image,
        seq=seq,
        payload={"values": values},
    )


def parse_wide_csv(
    lines: Iterable[str], source: str = "input", image: str | None = None
) -> Iterator[Event | BadLine]:
    """Metrics events from a wide CSV: columns time, host (or host_id), optionally image (or image_id),
    then one column per metric. Without an image column every row takes `image`, or with none given each
    host is its own image (no peers). Empty cells are missing values; a bad row is a BadLine."""
    rows = csv.reader(iter(lines))
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        raise FormatError(
            f"{source}: empty file (a wide CSV starts with a header: time,host,[image,]metric...)"
        ) from None
    lower = [h.lower() for h in header]

    def column(*names: str) -> int | None:
        for n in names:
            if n in lower:
                return lower.index(n)
        return None

    tcol, hcol, icol = column("time", "timestamp"), column("host", "host_id"), column("image", "image_id")
    if tcol is None or hcol is None:
        raise FormatError(
            f"{source}: the header needs a 'time' and a 'host' column, got {', '.join(header) or 'nothing'} "
            "(a wide CSV is time,host,[image,]metric1,metric2,...)"
        )
    metric_cols = [i for i in range(len(header)) if i not in (tcol, hcol, icol)]
    if not metric_cols:
        raise FormatError(f"{source}: no metric columns after time and host")
    seqs: dict[str, int] = {}
    for number, row in enumerate(rows, 2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"{source}:{number}"
        if len(row) != len(header):
            yield BadLine(where, f"{len(row)} fields, the header has {len(header)}")
            continue
        host = row[hcol].strip()
        if not host:
            yield BadLine(where, "empty host")
            continue
        try:
            t = parse_time(row[tcol])
        except (ValueError, OverflowError, OSError):
            yield BadLine(where, f"time {row[tcol]!r} is neither ISO-8601 nor epoch seconds")
            continue
        values: dict[str, float] = {}
        bad = None
        for i in metric_cols:
            cell = row[i].strip()
            if not cell:
                continue
            try:
                x = float(cell)
            except ValueError:
                bad = f"{header[i]} = {cell!r} is not a number"
                break
            if math.isfinite(x):
                values[header[i]] = x
        if bad:
            yield BadLine(where, bad)
            continue
        if not values:
            continue
        img = (row[icol].strip() if icol is not None else "") or image or host
        seq = seqs[host] = seqs.get(host, -1) + 1
        yield metrics_event(host, img, t, seq, values)


def parse_prometheus(
    text: str | bytes,
    source: str = "input",
    image_label: str | None = None,
    image: str | None = None,
    host_label: str = "instance",
) -> list[Event]:
    """Metrics events from a Prometheus range query's JSON (`/api/v1/query_range`, resultType matrix).

    Host from the `host_label` label (instance), image from `image_label` (else `image`, else the host).
    A series is named after __name__ and its other labels (`node_load1`, `cpu{mode=idle}`); the values of
    one host at one timestamp form one metrics event. NaN and infinite samples are skipped."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise FormatError(f"{source}: not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("status") != "success" or not isinstance(doc.get("data"), dict):
        raise FormatError(f'{source}: not a Prometheus API answer with "status": "success" and "data"')
    data = doc["data"]
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise FormatError(
            f"{source}: resultType {data.get('resultType')!r}; export a range query (query_range, resultType matrix)"
        )
    skip = {"__name__", host_label, *([image_label] if image_label else [])}
    by_host: dict[str, dict[float, dict[str, float]]] = {}
    images: dict[str, str] = {}
    for k, series in enumerate(data["result"]):
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
            raise FormatError(f"{source}: result[{k}] has no 'metric' labels")
        labels = {str(a): str(b) for a, b in series["metric"].items()}
        host = labels.get(host_label)
        if not host:
            raise FormatError(f"{source}: result[{k}] has no {host_label!r} label to name its host")
        extra = ",".join(f"{a}={b}" for a, b in sorted(labels.items()) if a not in skip)
        name = labels.get("__name__", "value") + (f"{{{extra}}}" if extra else "")
        images[host] = (labels.get(image_label, "") if image_label else "") or image or host
        values = series.get("values")
        if not isinstance(values, list):
            raise FormatError(f"{source}: result[{k}] has no 'values' list of [time, \"value\"] pairs")
        per_time = by_host.setdefault(host, {})
        for pair in values:
            try:
                t, x = float(pair[0]), float(pair[1])
            except (TypeError, ValueError, IndexError) as e:
                raise FormatError(f"{source}: result[{k}] has a sample {pair!r} that is not [time, \"value\"]") from e
            if math.isfinite(x):
                per_time.setdefault(t, {})[name] = x
    events: list[Event] = []
    for host, per_time in by_host.items():
        for seq, t in enumerate(sorted(per_time)):
            events.append(metrics_event(host, images[host], datetime.fromtimestamp(t, UTC), seq, per_time[t]))
    return events
