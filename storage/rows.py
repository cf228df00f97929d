"""Turning Kafka messages into table rows (JSON lines), or into dead-letter reasons.

Errors are data here: every function returns the good rows and the rejected inputs with a reason, and
never raises on bad input. A row carries the Kafka partition/offset it came from and a dedup key
(see KEY_SQL), so the sink can skip rows that a crash left stored but uncommitted.

Telemetry rows are JSON arrays in EVENT_COLUMNS order (insert format JSONCompactEachRow: no repeated
keys for Python to write or for the engine to read); the other tables' rows are JSON objects
(JSONEachRow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from contract.events import ContractError, Rejected, batch_items, check_envelope, format_time, raw_of

EVENT_COLUMNS = ["event_id", "kind", "time", "host_id", "boot_id", "image_id", "image_family", "seq", "tags",
                 "payload", "schema_version", "kafka_partition", "kafka_offset"]
"""The columns of a telemetry row, in order."""
EVENTS_FORMAT = "JSONCompactEachRow"


@dataclass
class TableRows:
    """Rows buffered for one table, with where each came from.

    The rows of one Kafka message are kept joined into one block (orjson never writes a raw newline):
    tens of thousands of separate row objects cost more in memory allocation than building them."""

    table: str
    blocks: list[bytes] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def add(self, line: bytes, partition: int, offset: int, key: str) -> None:
        self.add_message([(key, line)], partition, offset)

    def add_message(self, rows: list[tuple[str, bytes]], partition: int, offset: int) -> None:
        """The (key, line) rows of one Kafka message."""
        if not rows:
            return
        self.blocks.append(b"\n".join([line for _, line in rows]))
        self.keys.extend([key for key, _ in rows])
        self.partitions.extend([partition] * len(rows))
        self.offsets.extend([offset] * len(rows))

    def lines(self) -> list[bytes]:
        return self.block().split(b"\n") if self.blocks else []

    def __len__(self) -> int:
        return len(self.keys)

    def prepend(self, other: TableRows) -> None:
        self.blocks[:0] = other.blocks
        self.partitions[:0] = other.partitions
        self.offsets[:0] = other.offsets
        self.keys[:0] = other.keys

    def clear(self) -> None:
        self.blocks.clear()
        self.partitions.clear()
        self.offsets.clear()
        self.keys.clear()

    def block(self) -> bytes:
        return b"\n".join(self.blocks)


def cause_of(reason: str) -> str:
    """A short category for a dead-letter reason (the metric label; the full reason goes in a header)."""
    r = reason.lower()
    if "schema_version" in r:
        return "schema_version"
    if "exceeds" in r or "oversized" in r:
        return "oversized"
    if "not json" in r or "must be a json object" in r or "empty message" in r:
        return "malformed"
    return "invalid"


def telemetry_rows(value: bytes | None, partition: int, offset: int, max_row_bytes: int, *,
                   key: bytes | None = None, received: datetime | None = None,
                   ) -> tuple[list[tuple[str, bytes]], list[Rejected]]:
    """(event_id, JSON row for `events`) for each valid event of one telemetry message.

    Runs the contract's own check (`contract.events.check_envelope`, the same as the stream worker's) on
    the decoded JSON without building Event objects, plus the row size limit; `key` and `received` are the
    message's key and arrival time. Never raises on bad input.
    """
    items, rejected = batch_items(value)
    host = key.decode("utf-8", "replace") if key is not None else None
    out: list[tuple[str, bytes]] = []
    same: list[Any] = [None]  # the events of one message: identity and tags checked once (check_envelope)
    for item in items:
        try:
            t = check_envelope(item, key=host, received=received, same=same)
        except ContractError as err:
            rejected.append(Rejected(str(err), raw_of(item)))
            continue
        event_id = item["event_id"]
        line = orjson.dumps([
            event_id, item["kind"], t, item["host_id"], item["boot_id"], item["image_id"],
            item["image_family"], item["seq"], item["tags"], item["payload"], item["schema_version"],
            partition, offset])  # orjson writes the time as RFC 3339 UTC
        if len(line) > max_row_bytes:
            rejected.append(Rejected(f"event {event_id} is oversized: its row is {len(line)} bytes, "
                                     f"the limit is {max_row_bytes} (HERDWATCH_SINK_MAX_ROW_BYTES)",
                                     line[:4096]))
            continue
        out.append((event_id, line))
    return out, rejected


def _obj(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise ValueError("empty message (null value)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"must be a JSON object, got {type(obj).__name__}")
    return obj


def _need(obj: dict[str, Any], name: str, types: tuple[type, ...] = (str,)) -> Any:
    if name not in obj:
        raise ValueError(f"field {name!r} is missing")
    if not isinstance(obj[name], types) or isinstance(obj[name], bool):
        raise ValueError(f"field {name!r} must be {types[0].__name__}, got {type(obj[name]).__name__}")
    return obj[name]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

KEY_SQL = {
    "events": "toString(event_id)",
    "anomalies": "finding_id",
    "rollouts": "concat(image_family, '|', status, '|', new_image, '|', toString(toUnixTimestamp64Micro(time)))",
    "lifecycle": "concat(host_id, '|', status, '|', toString(toUnixTimestamp64Micro(time)))",
}
"""Per table, the SQL of the dedup key of a stored row; the row makers below compute the same key, so a
re-read message whose row is already stored is recognised by its content (not only by its offset)."""


def _micros(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


def _time(obj: dict[str, Any], name: str) -> str:
    """An ISO-8601 time field as the stored UTC text (a time without zone is taken as UTC)."""
    text = _need(obj, name)
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"field {name!r}: {text[:64]!r} is not an ISO-8601 time") from e
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    if not 1970 <= t.year <= 2200:
        raise ValueError(f"field {name!r}: year {t.year} is outside 1970..2200")
    return format_time(t)


def anomaly_row(value: bytes | None, partition: int, offset: int) -> tuple[str, bytes]:
    """(dedup key, row) for `anomalies` from a Finding.to_dict() message; ValueError says what is wrong."""
    from contract.findings import Finding

    obj = _obj(value)
    try:
        f = Finding.from_dict(obj)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a finding: {type(e).__name__}: {e}") from e
    if not math.isfinite(f.score):
        raise ValueError(f"finding score {f.score} is not a finite number")
    finding_id = str(obj.get("finding_id") or f.finding_id)
    return finding_id, orjson.dumps({
        "finding_id": finding_id, "kind": f.kind.value,
        "host_id": f.host_id, "image_id": f.image_id, "image_family": f.image_family,
        "time": _time(obj, "time"), "score": f.score, "severity": f.severity.value, "subject": f.subject,
        "explanation": f.explanation, "details": orjson.dumps(f.details).decode(),
        "kafka_partition": partition, "kafka_offset": offset})


def rollout_row(value: bytes | None, partition: int, offset: int) -> tuple[str, bytes]:
    from contract.findings import RolloutEvent

    obj = _obj(value)
    try:
        r = RolloutEvent.from_dict(obj)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a rollout event: {type(e).__name__}: {e}") from e
    if not math.isfinite(r.share):
        raise ValueError(f"rollout share {r.share} is not a finite number")
    time = _time(obj, "time")
    key = f"{r.image_family}|{r.status.value}|{r.new_image}|{_micros(time)}"
    return key, orjson.dumps({
        "image_family": r.image_family, "time": time, "status": r.status.value,
        "old_image": r.old_image, "new_image": r.new_image, "share": r.share,
        "explanation": r.explanation, "diff": orjson.dumps(r.diff).decode(),
        "kafka_partition": partition, "kafka_offset": offset})


def lifecycle_row(value: bytes | None, partition: int, offset: int) -> tuple[str, bytes]:
    obj = _obj(value)
    host_id = _need(obj, "host_id")
    if not host_id:
        raise ValueError("host_id is empty")
    status = _need(obj, "status")
    if status not in ("up", "gone"):
        raise ValueError(f"status must be 'up' or 'gone', got {status!r}")
    time = _time(obj, "time")
    row: dict[str, Any] = {
        "host_id": host_id, "status": status, "time": time,
        "image_id": str(obj.get("image_id") or ""), "image_family": str(obj.get("image_family") or ""),
        "reason": str(obj.get("reason") or ""), "kafka_partition": partition, "kafka_offset": offset,
        "first_seen": _time(obj, "first_seen") if obj.get("first_seen") else None,
        "last_seen": _time(obj, "last_seen") if obj.get("last_seen") else None,
        "missing_events": _count(obj.get("missing_events")),
    }
    return f"{host_id}|{status}|{_micros(time)}", orjson.dumps(row)


def _count(value: Any) -> int:
    """A non-negative event count from a message (absent: 0); ValueError for anything else."""
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(f"field 'missing_events' must be a non-negative int, got {str(value)[:32]!r}")
    return value
