"""The event contract: one versioned envelope for every telemetry event.

A Kafka message on the telemetry topic carries a *batch*: a JSON array of envelopes from one host
(one collector cycle). A batch of one is fine. See docs/contract.md for the full description.

Decoding never raises on bad input: it returns the good events and a list of `Rejected` items
(errors as data), so callers can send the bad ones to the dead-letter topic.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from contract.ids import new_event_id

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""A telemetry message larger than this is rejected whole (the broker default is 1 MiB)."""


class Kind(StrEnum):
    """Every kind of telemetry event. The payload of each is described in PAYLOAD_FIELDS."""

    HELLO = "agent.hello"
    HEARTBEAT = "agent.heartbeat"
    GOODBYE = "agent.goodbye"
    PROCESS_INVENTORY = "process.inventory"
    PROCESS_START = "process.start"
    PROCESS_EXIT = "process.exit"
    NET_INVENTORY = "net.inventory"
    NET_OPEN = "net.open"
    NET_CLOSE = "net.close"
    LOGIN_INVENTORY = "login.inventory"
    AUTH_ATTEMPT = "auth.attempt"
    METRICS = "metrics"
    CONFIG_INVENTORY = "config.inventory"
    CONFIG_CHANGE = "config.change"
    PACKAGE_INVENTORY = "package.inventory"
    PACKAGE_CHANGE = "package.change"
    MODULE_INVENTORY = "module.inventory"
    MODULE_CHANGE = "module.change"


# Payload field -> accepted JSON types. Extra fields are allowed (forward compatible); listed ones are
# required. Item shapes inside lists/maps are described in docs/contract.md.
_NUM = (int, float)
_OPT_STR = (str, type(None))
PAYLOAD_FIELDS: dict[Kind, dict[str, tuple[type, ...]]] = {
    Kind.HELLO: {"agent_version": (str,), "boot_time": _NUM},
    Kind.HEARTBEAT: {"events_sent": (int,), "events_dropped": (int,)},
    Kind.GOODBYE: {"reason": (str,)},
    Kind.PROCESS_INVENTORY: {"items": (list,)},
    Kind.PROCESS_START: {"pid": (int,), "exe": (str,), "cmdline": (str,), "user": (str,)},
    Kind.PROCESS_EXIT: {"pid": (int,), "exe": (str,), "cmdline": (str,), "user": (str,)},
    Kind.NET_INVENTORY: {"items": (list,)},
    Kind.NET_OPEN: {"state": (str,), "proto": (str,), "laddr": (str,), "lport": (int,)},
    Kind.NET_CLOSE: {"state": (str,), "proto": (str,), "laddr": (str,), "lport": (int,)},
    Kind.LOGIN_INVENTORY: {"items": (list,)},
    Kind.AUTH_ATTEMPT: {"user": (str,), "outcome": (str,)},
    Kind.METRICS: {"values": (dict,)},
    Kind.CONFIG_INVENTORY: {"items": (dict,)},
    Kind.CONFIG_CHANGE: {"key": (str,), "before": _OPT_STR, "after": _OPT_STR},
    Kind.PACKAGE_INVENTORY: {"items": (dict,)},
    Kind.PACKAGE_CHANGE: {"key": (str,), "before": _OPT_STR, "after": _OPT_STR},
    Kind.MODULE_INVENTORY: {"items": (dict,)},
    Kind.MODULE_CHANGE: {"key": (str,), "before": _OPT_STR, "after": _OPT_STR},
}

_KINDS = {k.value: k for k in Kind}


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Who sent an event. image_id names the cohort (hosts cloned from one image)."""

    host_id: str
    boot_id: str
    image_id: str
    image_family: str
    tags: dict[str, str] = field(default_factory=dict)
    """Cloud and container tags, e.g. cloud.provider, cloud.region, container.image."""


@dataclass(frozen=True, slots=True)
class Event:
    """One telemetry event. `time` is always timezone-aware UTC."""

    kind: Kind
    time: datetime
    host_id: str
    boot_id: str
    image_id: str
    image_family: str
    seq: int
    payload: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, host: HostIdentity, kind: Kind, seq: int, payload: dict[str, Any],
            time: datetime | None = None) -> Event:
        return cls(kind=kind, time=time or datetime.now(UTC), host_id=host.host_id,
                   boot_id=host.boot_id, image_id=host.image_id, image_family=host.image_family,
                   seq=seq, payload=payload, tags=host.tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "kind": self.kind.value,
            "time": format_time(self.time),
            "host_id": self.host_id,
            "boot_id": self.boot_id,
            "image_id": self.image_id,
            "image_family": self.image_family,
            "seq": self.seq,
            "tags": self.tags,
            "payload": self.payload,
        }

    def replace(self, **changes: Any) -> Event:
        return dataclasses.replace(self, **changes)


ENVELOPE_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "event_id": (str,),
    "kind": (str,),
    "time": (str,),
    "host_id": (str,),
    "boot_id": (str,),
    "image_id": (str,),
    "image_family": (str,),
    "seq": (int,),
    "tags": (dict,),
    "payload": (dict,),
}
"""Every envelope field and its JSON type. storage/ checks its raw table against this."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that could not be decoded: the raw bytes (or the offending item) and why."""

    reason: str
    raw: bytes


class ContractError(ValueError):
    """Raised by `decode_event` for a single malformed envelope; the message says how to fix it."""


def format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise ContractError("event time must be timezone-aware (use datetime.now(UTC))")
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=4096)
def parse_time(s: str) -> datetime:
    """An ISO-8601 time with a zone, as UTC. Cached: the events of one collector cycle share a time."""
    try:
        t = datetime.fromisoformat(s)
    except ValueError as e:
        raise ContractError(f"time {s!r} is not ISO-8601 (expected e.g. 2026-03-01T12:00:00.000000Z)") from e
    if t.tzinfo is None:
        raise ContractError(f"time {s!r} has no timezone; send UTC with a trailing Z")
    return t.astimezone(UTC)


def encode_batch(events: list[Event]) -> bytes:
    """Serialise events (normally all from one host) into one Kafka message value."""
    return orjson.dumps([e.to_dict() for e in events])


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


def decode_event(obj: Any) -> Event:
    """Validate one decoded JSON envelope and build an Event, or raise ContractError."""
    if not isinstance(obj, dict):
        raise ContractError(f"an event must be a JSON object, got {type(obj).__name__}")
    for name, types in ENVELOPE_FIELDS.items():
        value = obj.get(name)
        if name not in obj:
            raise ContractError(f"envelope field {name!r} is missing")
        if not isinstance(value, types) or isinstance(value, bool):
            raise ContractError(f"envelope field {name!r} must be {types[0].__name__}, "
                                f"got {type(value).__name__}")
    if obj["schema_version"] != SCHEMA_VERSION:
        raise ContractError(f"schema_version {obj['schema_version']} is not supported "
                            f"(this build reads version {SCHEMA_VERSION}); upgrade herdwatch")
    kind = _KINDS.get(obj["kind"])
    if kind is None:
        raise ContractError(f"unknown kind {obj['kind']!r}; known kinds: {', '.join(_KINDS)}")
    if not obj["host_id"]:
        raise ContractError("host_id is empty")
    if obj["seq"] < 0:
        raise ContractError("seq must be >= 0")
    payload = obj["payload"]
    for name, types in PAYLOAD_FIELDS[kind].items():
        if name not in payload:
            raise ContractError(f"{kind.value} payload field {name!r} is missing")
        value = payload[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ContractError(f"{kind.value} payload field {name!r} has type {type(value).__name__}")
    return Event(kind=kind, time=parse_time(obj["time"]), host_id=obj["host_id"], boot_id=obj["boot_id"],
                 image_id=obj["image_id"], image_family=obj["image_family"], seq=obj["seq"],
                 payload=payload, tags=obj["tags"], event_id=obj["event_id"],
                 schema_version=obj["schema_version"])


_PAYLOAD_CHECKS = {kind.value: tuple(fields.items()) for kind, fields in PAYLOAD_FIELDS.items()}
_MISSING = object()


def accepted_time(obj: Any) -> datetime | None:
    """The UTC time of a decoded JSON envelope that `decode_event` accepts, else None.

    The checks of `decode_event` without building an Event, for readers of many events (the storage
    sink). Only exact JSON types pass, as orjson produces them, so this never accepts what decode_event
    refuses; on None, call decode_event for the reason.
    """
    if type(obj) is not dict:
        return None
    get = obj.get
    version, seq, kind, host_id = get("schema_version"), get("seq"), get("kind"), get("host_id")
    payload = get("payload")
    if not (type(version) is int and version == SCHEMA_VERSION and type(seq) is int and seq >= 0
            and type(kind) is str and type(host_id) is str and host_id and type(payload) is dict
            and type(get("tags")) is dict and type(get("event_id")) is str and type(get("time")) is str
            and type(get("boot_id")) is str and type(get("image_id")) is str
            and type(get("image_family")) is str):
        return None
    fields = _PAYLOAD_CHECKS.get(kind)
    if fields is None:
        return None
    for name, types in fields:
        if type(payload.get(name, _MISSING)) not in types:
            return None
    try:
        return parse_time(obj["time"])
    except ContractError:
        return None


def batch_items(value: bytes | None) -> tuple[list[Any], list[Rejected]]:
    """The envelopes (not yet checked) of one telemetry message, or the whole message rejected."""
    if value is None:
        return [], [Rejected("empty message (null value)", b"")]
    if len(value) > MAX_MESSAGE_BYTES:
        return [], [Rejected(f"message of {len(value)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit",
                             value[:1024])]
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        return [], [Rejected(f"not JSON: {e}", value)]
    return (obj if isinstance(obj, list) else [obj]), []


def decode_batch(value: bytes | None) -> tuple[list[Event], list[Rejected]]:
    """Decode one telemetry message (a JSON array of envelopes, or one envelope).

    Returns the valid events and the rejected parts; a message that is not JSON at all is rejected whole.
    """
    items, rejected = batch_items(value)
    events: list[Event] = []
    for item in items:
        try:
            events.append(decode_event(item))
        except ContractError as e:
            rejected.append(Rejected(str(e), orjson.dumps(item)))
    return events, rejected
