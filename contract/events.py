"""The event contract: one versioned envelope for every telemetry event.

A Kafka message on the telemetry topic carries a *batch*: a JSON array of envelopes from one host
(one collector cycle). A batch of one is fine. See docs/contract.md for the full description.

Decoding never raises on bad input: it returns the good events and a list of `Rejected` items
(errors as data), so callers can send the bad ones to the dead-letter topic.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from contract.ids import new_event_id

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""A telemetry message larger than this is rejected whole (the broker default is 1 MiB)."""

# Limits every consumer applies in the same way (docs/contract.md, "Limits").
MAX_ID_CHARS = 256
"""host_id, boot_id, image_id and image_family: 1..256 characters of SAFE_ID."""
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=~,-]*")
"""Identifier characters: what instance ids, container ids, image references and names use, and nothing a
terminal, a log line or a query string could misread (no spaces, quotes, control or bidi characters)."""
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._:/@+=~,-]")


def safe_id(text: str, fallback: str = "unknown") -> str:
    """An identifier the contract accepts, made from any text (a producer normalises its own identity with
    this): disallowed characters become `_`, a leading non-alphanumeric gets an `x` before it, at most
    MAX_ID_CHARS characters."""
    out = _UNSAFE_ID_CHARS.sub("_", text)[:MAX_ID_CHARS] or fallback
    return out if out[0].isascii() and out[0].isalnum() else ("x" + out)[:MAX_ID_CHARS]


MAX_TAGS = 64
TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
MAX_TAG_CHARS = 1024
MAX_SEQ = 2**63 - 1
MAX_PAYLOAD_DEPTH = 8
"""Nesting of objects and arrays inside a payload (inventories need 3)."""
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (but tab and newline) and bidirectional overrides: refused in tag values."""

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_PAST = timedelta(days=30)
MAX_FUTURE = timedelta(minutes=10)
"""The time window around a message's arrival (its Kafka timestamp). An event outside it comes from a host
whose clock is off: it is kept, re-timed to the arrival, with its own time in the ORIGINAL_TIME_TAG tag.
MAX_PAST covers what an agent spools through a long outage."""
ORIGINAL_TIME_TAG = "herdwatch.original_time"


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


def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _str_map(values: Any, ok: Any) -> str | None:
    for k, v in values.items():
        if not ok(v):
            return f"value of {str(k)[:64]!r} has type {type(v).__name__}"
    return None


def _numbers(values: Any) -> str | None:
    """`_str_map(values, _is_num)`, with the common case (every value a finite int or float) decided in C:
    a sum of finite numbers is finite unless it overflows, and then the exact check decides."""
    if _NUMBER_TYPES.issuperset(map(type, values.values())):
        try:
            if math.isfinite(math.fsum(values.values())):
                return None
        except OverflowError:
            pass
    return _str_map(values, _is_num)


def _typed_map(types: frozenset[type]) -> Any:
    """`_str_map` for values whose type must be one of `types` (the common case decided in C)."""
    def check(values: Any) -> str | None:
        if types.issuperset(map(type, values.values())):
            return None
        return _str_map(values, lambda x: type(x) in types)
    return check


_NUMBER_TYPES = frozenset((int, float))


def _dict_items(fields: Mapping[str, tuple[type, ...]]) -> Any:
    def check(items: list[Any]) -> str | None:
        for i, item in enumerate(items):
            if type(item) is not dict:
                return f"item {i} must be an object, got {type(item).__name__}"
            for name, types in fields.items():
                if name in item and type(item[name]) not in types:
                    return f"item {i} field {name!r} has type {type(item[name]).__name__}"
        return None
    return check


_PROC_ITEM = {"pid": (int,), "exe": (str,), "cmdline": (str,), "user": (str,)}
_SOCK_ITEM = {"state": (str,), "proto": (str,), "laddr": (str,), "lport": (int,)}
ITEM_CHECKS: dict[str, tuple[str, Any]] = {
    Kind.METRICS.value: ("values", _numbers),
    Kind.CONFIG_INVENTORY.value: ("items", _typed_map(frozenset((str, type(None))))),
    Kind.PACKAGE_INVENTORY.value: ("items", _typed_map(frozenset((str,)))),
    Kind.MODULE_INVENTORY.value: ("items", _typed_map(frozenset((str,)))),
    Kind.PROCESS_INVENTORY.value: ("items", _dict_items(_PROC_ITEM)),
    Kind.NET_INVENTORY.value: ("items", _dict_items(_SOCK_ITEM)),
    Kind.LOGIN_INVENTORY.value: ("items", _dict_items({"user": (str,)})),
}
"""Per kind, the payload field whose contents are checked beyond its own type, and the check."""


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
        raise ContractError(f"time {s[:64]!r} is not ISO-8601 (expected e.g. 2026-03-01T12:00:00.000000Z)") from e
    if t.tzinfo is None:
        raise ContractError(f"time {s[:64]!r} has no timezone; send UTC with a trailing Z")
    try:
        return t.astimezone(UTC)
    except OverflowError as e:
        raise ContractError(f"time {s[:64]!r} is out of range") from e


def encode_batch(events: list[Event]) -> bytes:
    """Serialise events (normally all from one host) into one Kafka message value."""
    return orjson.dumps([e.to_dict() for e in events])


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


_ENVELOPE_VALUES = operator.itemgetter(*ENVELOPE_FIELDS)
"""The envelope's values in ENVELOPE_FIELDS order (KeyError if one is missing)."""
_ENVELOPE_TYPES = tuple(types[0] for types in ENVELOPE_FIELDS.values())
"""Their exact types (each field has one)."""


def _payload_shape(fields: Mapping[str, tuple[type, ...]]) -> tuple[Any, frozenset[tuple[type, ...]]]:
    """A kind's required payload values (KeyError if one is missing) and every accepted tuple of their types."""
    names = list(fields)
    getter: Any = operator.itemgetter(*names) if len(names) > 1 else (lambda p, name=names[0]: (p[name],))
    return getter, frozenset(itertools.product(*fields.values()))


_PAYLOAD_SHAPES = {kind.value: _payload_shape(fields) for kind, fields in PAYLOAD_FIELDS.items()}
_CONTAINERS = frozenset((dict, list))
_MAX_KNOWN = 16384
"""The fast path remembers at most this many identifiers, tag names and tag values (each set) it has checked."""
_MAX_KNOWN_VALUE_CHARS = 128
"""...and only tag values up to this long (bounded memory)."""
_known_ids: set[str] = set()
_known_tag_keys: set[str] = set()
_known_tag_values: set[str] = set()


def _remember(known: set[str], value: str) -> None:
    if len(known) >= _MAX_KNOWN:
        known.clear()
    known.add(value)


def _fast_time(obj: dict[str, Any], key: str | None, received: datetime | None,
               same: list[Any] | None = None) -> datetime | None:
    """The envelope's time if it certainly passes every check of `check_envelope` and needs no re-timing;
    None if anything is unusual (the full check then decides, with its reason). Identifiers, tag names and
    tag values already checked are remembered: the events of one host repeat them. `same` (one message's
    envelopes only) holds the identity and tags of the last envelope of that message that passed: the
    next ones are usually equal, and then their identity and tags need no check at all."""
    try:
        values = _ENVELOPE_VALUES(obj)
    except KeyError:
        return None
    if tuple(map(type, values)) != _ENVELOPE_TYPES:
        return None
    version, event_id, kind, when, host, boot, image, family, seq, tags, payload = values
    if version != SCHEMA_VERSION or not 0 <= seq <= MAX_SEQ or (key is not None and host != key):
        return None
    shape = _PAYLOAD_SHAPES.get(kind)
    if shape is None:
        return None
    identity = (host, boot, image, family, tags)
    if same is None or same[0] != identity:
        if not _identity_ok(host, boot, image, family, tags):
            return None
        if same is not None:
            same[0] = identity
    if not _is_uuid(event_id):
        return None
    try:
        if tuple(map(type, shape[0](payload))) not in shape[1]:
            return None
    except KeyError:
        return None
    check = ITEM_CHECKS.get(kind)
    if check is not None and check[1](payload[check[0]]):
        return None
    if not _CONTAINERS.isdisjoint(map(type, payload.values())) and not _shallow(payload) \
            and _depth(payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        return None
    try:
        t = parse_time(when)
    except ContractError:
        return None
    if received is None:
        return t if EARLIEST <= t <= LATEST else None
    return t if received - MAX_PAST <= t <= received + MAX_FUTURE else None


_HEX_OR_DASH = frozenset("0123456789abcdefABCDEF-")


def _is_uuid(text: str) -> bool:
    """`UUID.fullmatch(text)`, in a few C-level steps instead of the regex engine."""
    return (len(text) == 36 and text[8] == "-" and text[13] == "-" and text[18] == "-" and text[23] == "-"
            and text.count("-") == 4 and _HEX_OR_DASH.issuperset(text))


def _identity_ok(host: str, boot: str, image: str, family: str, tags: dict[str, Any]) -> bool:
    """The identifiers and tags of an envelope pass every check of `check_envelope` (checked values are
    remembered, bounded)."""
    known = _known_ids
    for value in (host, boot, image, family):
        if value not in known:
            if not (0 < len(value) <= MAX_ID_CHARS and SAFE_ID.fullmatch(value)):
                return False
            _remember(known, value)
    if tags:
        if len(tags) > MAX_TAGS:
            return False
        for k, v in tags.items():
            if k not in _known_tag_keys:
                if not TAG_KEY.fullmatch(k):
                    return False
                _remember(_known_tag_keys, k)
            if type(v) is not str:
                return False
            if v not in _known_tag_values:
                if len(v) > MAX_TAG_CHARS or UNSAFE_CHARS.search(v):
                    return False
                if len(v) <= _MAX_KNOWN_VALUE_CHARS:
                    _remember(_known_tag_values, v)
    return True


def _shallow(payload: dict[str, Any]) -> bool:
    """True if the payload nests at most two levels (then its depth is within MAX_PAYLOAD_DEPTH)."""
    for value in payload.values():
        t = type(value)
        if t is dict:
            value = value.values()
        elif t is not list:
            continue
        for item in value:
            if type(item) is dict or type(item) is list:
                return False
    return True


def check_envelope(obj: Any, *, key: str | None = None, received: datetime | None = None,
                   same: list[Any] | None = None) -> datetime:
    """Check one decoded JSON envelope against the contract; return its (possibly re-timed) UTC time.

    The one validation every consumer runs (the stream worker through `decode_event`, the storage sink
    directly, without building an Event). Raises ContractError saying what is wrong and how to fix it.
    `key` is the Kafka message key: an envelope must speak for the host that keys its message.
    `received` is the message's arrival time: an envelope dated outside the window around it is re-timed
    in place (see MAX_PAST, MAX_FUTURE); without it, times outside EARLIEST..LATEST are refused.
    An envelope that passes is usually judged by `_fast_time` (the same checks, with what repeats
    remembered); anything unusual goes through every check below in order, which gives the reason.
    `same`: for the envelopes of one message, pass the same `[None]` list to each call (see `_fast_time`).
    """
    if type(obj) is dict:
        fast = _fast_time(obj, key, received, same)
        if fast is not None:
            return fast
    return _check_envelope_full(obj, key, received)


def _check_envelope_full(obj: Any, key: str | None, received: datetime | None) -> datetime:
    """`check_envelope` without the fast path: every check in order, the first failing one raises."""
    if type(obj) is not dict:
        raise ContractError(f"an event must be a JSON object, got {type(obj).__name__}")
    for name, types in ENVELOPE_FIELDS.items():
        if name not in obj:
            raise ContractError(f"envelope field {name!r} is missing")
        if type(obj[name]) not in types:
            raise ContractError(f"envelope field {name!r} must be {types[0].__name__}, "
                                f"got {type(obj[name]).__name__}")
    if obj["schema_version"] != SCHEMA_VERSION:
        raise ContractError(f"schema_version {obj['schema_version']} is not supported "
                            f"(this build reads version {SCHEMA_VERSION}); upgrade herdwatch")
    kind = obj["kind"]
    if kind not in _KINDS:
        raise ContractError(f"unknown kind {kind[:64]!r}; known kinds: {', '.join(_KINDS)}")
    for name in ("host_id", "boot_id", "image_id", "image_family"):
        value = obj[name]
        if not value:
            raise ContractError(f"{name} is empty")
        if not (0 < len(value) <= MAX_ID_CHARS and SAFE_ID.fullmatch(value)):
            raise ContractError(f"{name} {value[:64]!r} must be 1..{MAX_ID_CHARS} characters of "
                                f"letters, digits and ._:/@+=~,- starting with a letter or digit")
    if key is not None and obj["host_id"] != key:
        raise ContractError(f"host_id {obj['host_id'][:64]!r} disagrees with the message key {key[:64]!r}; "
                            "key each message with the host_id of its events")
    if not UUID.fullmatch(obj["event_id"]):
        raise ContractError(f"event_id {obj['event_id'][:64]!r} is not a UUID (send a UUIDv7 string)")
    if not 0 <= obj["seq"] <= MAX_SEQ:
        raise ContractError(f"seq must be in 0..{MAX_SEQ}")
    _check_tags(obj["tags"])
    payload = obj["payload"]
    for name, types in PAYLOAD_FIELDS[_KINDS[kind]].items():
        if name not in payload:
            raise ContractError(f"{kind} payload field {name!r} is missing")
        value = payload[name]
        if type(value) not in types:
            raise ContractError(f"{kind} payload field {name!r} has type {type(value).__name__}")
    if kind in ITEM_CHECKS:
        name, check = ITEM_CHECKS[kind]
        if problem := check(payload[name]):
            raise ContractError(f"{kind} payload field {name!r}: {problem}")
    if _depth(payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        raise ContractError(f"{kind} payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    t = parse_time(obj["time"])
    low, high = (received - MAX_PAST, received + MAX_FUTURE) if received else (EARLIEST, LATEST)
    if low <= t <= high:
        return t
    if received is None:
        raise ContractError(f"time {obj['time'][:64]!r} is outside {EARLIEST.year}..{LATEST.year}")
    obj["tags"] = {**obj["tags"], ORIGINAL_TIME_TAG: obj["time"]}
    obj["time"] = format_time(received)
    return received


def _check_tags(tags: dict[str, Any]) -> None:
    if len(tags) > MAX_TAGS:
        raise ContractError(f"{len(tags)} tags, at most {MAX_TAGS} are accepted")
    for k, v in tags.items():
        if not TAG_KEY.fullmatch(k):
            raise ContractError(f"tag name {k[:64]!r} must be 1..64 characters of letters, digits and ._:/-")
        if type(v) is not str:
            raise ContractError(f"tag {k!r} must be a string, got {type(v).__name__}")
        if len(v) > MAX_TAG_CHARS or UNSAFE_CHARS.search(v):
            raise ContractError(f"tag {k!r} is longer than {MAX_TAG_CHARS} characters or has control characters")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON containers, counting no further than limit + 1."""
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return 0
    if limit < 0:
        return 1
    return 1 + max((_depth(c, limit - 1) for c in children), default=0)


def arrival_time(timestamp_ms: float | None, set_by_broker: bool) -> datetime | None:
    """A message's arrival time if the broker set it (topic message.timestamp.type=LogAppendTime), else None.

    A producer's own timestamp (CreateTime) comes from the same clock as its events, so it proves nothing
    about that clock: only the broker's time is used to judge a host's clock. (librdkafka reports the
    broker's time as TIMESTAMP_LOG_APPEND_TIME, aiokafka as timestamp_type 1.)
    """
    if not set_by_broker or not timestamp_ms or timestamp_ms <= 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def is_retimed(event: Event) -> bool:
    """True if the event arrived from a host whose clock is off (its own time is in ORIGINAL_TIME_TAG)."""
    return ORIGINAL_TIME_TAG in event.tags


def decode_event(obj: Any, *, key: str | None = None, received: datetime | None = None) -> Event:
    """Validate one decoded JSON envelope (`check_envelope`) and build an Event, or raise ContractError."""
    t = check_envelope(obj, key=key, received=received)
    return Event(kind=_KINDS[obj["kind"]], time=t, host_id=obj["host_id"], boot_id=obj["boot_id"],
                 image_id=obj["image_id"], image_family=obj["image_family"], seq=obj["seq"],
                 payload=obj["payload"], tags=obj["tags"], event_id=obj["event_id"],
                 schema_version=obj["schema_version"])


def raw_of(item: Any) -> bytes:
    """The bytes to dead-letter for one rejected item: its JSON, or a bounded repr if it cannot be encoded
    (orjson reads deeper nesting than it writes)."""
    try:
        return orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):
        return repr(item)[:4096].encode("utf-8", "backslashreplace")


MAX_DEAD_LETTER_BYTES = 512 * 1024
"""A dead letter carries at most this much of the original bytes (the broker's default message limit is
1 MiB): a dead letter the broker refused would stop its consumer, so it must always fit."""
MAX_REASON_CHARS = 1000


def dead_letter_message(rejected: Rejected, source: str, component: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of the dead letter for `rejected`: the original bytes (cut to
    MAX_DEAD_LETTER_BYTES, with header `truncated` = the original size) and headers `reason`, `source`,
    `component`. Every consumer dead-letters through this, so a dead letter always fits the broker."""
    headers = [("reason", rejected.reason[:MAX_REASON_CHARS].encode("utf-8", "backslashreplace")),
               ("source", source.encode("utf-8", "backslashreplace")), ("component", component.encode())]
    value = rejected.raw
    if len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("truncated", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return value, headers


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


def decode_batch(value: bytes | None, *, key: bytes | str | None = None,
                 received: datetime | None = None) -> tuple[list[Event], list[Rejected]]:
    """Decode one telemetry message (a JSON array of envelopes, or one envelope).

    Returns the valid events and the rejected parts; a message that is not JSON at all is rejected whole.
    `key` and `received` are the message's key and arrival time (see `check_envelope`).
    """
    items, rejected = batch_items(value)
    host = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    events: list[Event] = []
    for item in items:
        try:
            events.append(decode_event(item, key=host, received=received))
        except ContractError as e:
            rejected.append(Rejected(str(e), raw_of(item)))
    return events, rejected
