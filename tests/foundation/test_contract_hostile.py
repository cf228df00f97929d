"""The contract against hostile producers: generated envelopes of every kind, mutated in type, size, depth,
characters, time and seq. Decoding never raises, every item is either an event or a rejection with a
reason, and what is accepted keeps the contract's limits. The storage sink's row conversion runs the same
check, so it is driven here too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.events import (
    EARLIEST,
    LATEST,
    MAX_ID_CHARS,
    MAX_PAST,
    ORIGINAL_TIME_TAG,
    PAYLOAD_FIELDS,
    SAFE_ID,
    UNSAFE_CHARS,
    Event,
    HostIdentity,
    Kind,
    arrival_time,
    decode_batch,
    is_retimed,
)
from storage.rows import telemetry_rows

HOST = HostIdentity("i-0abc", "boot-1", "ami-1", "web", {"cloud.region": "eu-west-1"})
T = datetime(2026, 3, 1, 12, tzinfo=UTC)
EXAMPLES = 400


def dumps(obj: Any) -> bytes:
    """What a hostile producer may send: any JSON the standard library writes (orjson refuses big ints)."""
    return json.dumps(obj).encode()


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=8), inner,
                                                                              max_size=4)), max_leaves=20)
hostile_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "\x00", "\x1b[31mred\x1b[0m", "\u202eevil", "a b", "i-0abc\n", "x" * 300_000,
                     "../../etc", "'; DROP TABLE events; --", "\u200f", "ok-host"]),
)
hostile_time = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z",
                     "2026-03-01T12:00:00", "yesterday", "", "2026-02-30T00:00:00Z", "+002026-03-01"]),
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
    st.text(max_size=30),
)


def _payload(kind: Kind) -> dict[str, Any]:
    defaults: dict[type, Any] = {int: 1, float: 1.5, str: "x", list: [], dict: {}, type(None): None}
    return {name: defaults[types[0]] for name, types in PAYLOAD_FIELDS[kind].items()}


def _good(kind: Kind) -> dict[str, Any]:
    return Event.new(HOST, kind, 7, _payload(kind), time=T).to_dict()


@st.composite
def mutated_envelope(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(list(Kind)))
    d = _good(kind)
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["envelope", "payload", "drop", "time", "seq", "id", "deep", "tags"]))
        if target == "envelope":
            d[draw(st.sampled_from(list(d)))] = draw(json_value)
        elif target == "payload" and isinstance(d.get("payload"), dict):
            d["payload"][draw(st.text(max_size=8) | st.sampled_from(list(d["payload"]) or ["x"]))] = draw(json_value)
        elif target == "drop" and d:
            d.pop(draw(st.sampled_from(list(d))))
        elif target == "time":
            d["time"] = draw(hostile_time)
        elif target == "seq":
            d["seq"] = draw(st.one_of(st.integers(-(2**70), 2**70), json_leaf))
        elif target == "id":
            name = draw(st.sampled_from(["host_id", "boot_id", "image_id", "image_family", "event_id"]))
            d[name] = draw(hostile_text)
        elif target == "deep":
            nested: Any = 1
            for _ in range(draw(st.integers(1, 600))):
                nested = [nested]
            if isinstance(d.get("payload"), dict):
                d["payload"]["deep"] = nested
        elif target == "tags":
            d["tags"] = draw(st.dictionaries(hostile_text, st.one_of(hostile_text, json_leaf), max_size=5))
    return d


def _check_accepted(event: Event, received: datetime | None) -> None:
    for name in ("host_id", "boot_id", "image_id", "image_family"):
        value = getattr(event, name)
        assert 0 < len(value) <= MAX_ID_CHARS and SAFE_ID.fullmatch(value)
    assert event.time.tzinfo is not None
    if received is None:
        assert EARLIEST <= event.time <= LATEST
    else:
        assert received - MAX_PAST <= event.time <= received + timedelta(minutes=10)
    assert all(not UNSAFE_CHARS.search(v) for v in event.tags.values())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(mutated_envelope(), min_size=1, max_size=5),
       received=st.one_of(st.none(), st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2199, 1, 1),
                                                   timezones=st.just(UTC))))
def test_decoding_never_raises_and_accounts_for_every_item(items: list[Any], received: datetime | None) -> None:
    value = dumps(items)
    events, rejected = decode_batch(value, key=HOST.host_id, received=received)
    assert len(events) + len(rejected) == len(items)
    assert all(r.reason and isinstance(r.raw, bytes) for r in rejected)
    for e in events:
        _check_accepted(e, received)
    # the sink's row conversion runs the same check: same items accepted, same reasons
    rows, sink_rejected = telemetry_rows(value, 0, 0, 1 << 30, key=HOST.host_id.encode(), received=received)
    assert [r[0] for r in rows] == [e.event_id for e in events]
    assert [r.reason for r in sink_rejected] == [r.reason for r in rejected]


@settings(max_examples=EXAMPLES, deadline=None)
@given(value=st.one_of(st.binary(max_size=200), json_value.map(dumps)))
def test_any_bytes_decode_to_events_or_reasons(value: bytes) -> None:
    events, rejected = decode_batch(value)
    assert events or rejected or value.strip() == b"[]"
    rows, sink_rejected = telemetry_rows(value, 0, 0, 1 << 30)
    assert len(rows) == len(events) and len(sink_rejected) == len(rejected)


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.update(time="0001-01-01T00:00:00+01:00"), "out of range"),
    (lambda d: d.update(host_id="x" * 300_000), "host_id"),
    (lambda d: d.update(host_id="i-0abc\x00"), "host_id"),
    (lambda d: d.update(image_id="\x1b[2Jami"), "image_id"),
    (lambda d: d.update(image_family="web\u202e"), "image_family"),
    (lambda d: d.update(payload={"values": {"cpu_pct": "hot"}}), "'cpu_pct' has type str"),
    (lambda d: d.update(time="1970-01-01T00:00:00Z"), "outside 2000..2200"),
    (lambda d: d.update(tags={"x": "\x1b]0;owned\x07"}), "control characters"),
    (lambda d: d.update(seq=2**64), "seq"),
])
def test_reproduced_hostile_envelopes_are_dead_lettered_with_a_reason(mutate: Any, reason: str) -> None:
    d = _good(Kind.METRICS)
    d["payload"] = {"values": {"cpu_pct": 12.0}}
    mutate(d)
    value = dumps([d])
    events, rejected = decode_batch(value, key=HOST.host_id if "host_id" not in reason else None)
    assert events == [] and len(rejected) == 1
    assert reason in rejected[0].reason


def test_a_metric_that_overflows_to_infinity_is_refused() -> None:
    d = _good(Kind.METRICS)
    d["payload"] = {"values": {"cpu_pct": 0}}
    value = orjson.dumps([d]).replace(b'"cpu_pct":0', b'"cpu_pct":1e400')
    events, rejected = decode_batch(value, key=HOST.host_id)
    assert events == [] and (len(rejected) == 1)


def test_json_nested_deeper_than_orjson_writes_is_dead_lettered_not_raised() -> None:
    value = b'[{"payload": ' + b"[" * 400 + b"]" * 400 + b"}]"
    events, rejected = decode_batch(value)
    assert events == [] and len(rejected) == 1 and rejected[0].raw
    deep = _good(Kind.GOODBYE)
    value = orjson.dumps([deep]).replace(b'"reason":"x"', b'"reason":"x","d":' + b"[" * 300 + b"]" * 300)
    events, rejected = decode_batch(value, key=HOST.host_id)
    assert events == [] and "nested deeper" in rejected[0].reason


def test_an_envelope_speaking_for_another_host_is_refused() -> None:
    value = orjson.dumps([_good(Kind.HEARTBEAT)])
    events, rejected = decode_batch(value, key=b"i-other")
    assert events == [] and "disagrees with the message key" in rejected[0].reason
    assert len(decode_batch(value, key=HOST.host_id.encode())[0]) == 1


def test_a_host_with_a_wrong_clock_is_kept_and_retimed_to_arrival() -> None:
    received = datetime(2026, 12, 1, 12, tzinfo=UTC)
    d = _good(Kind.HEARTBEAT)
    d["time"] = "1970-01-01T00:00:00Z"
    events, rejected = decode_batch(orjson.dumps([d]), key=HOST.host_id, received=received)
    assert rejected == []
    (e,) = events
    assert e.time == received and is_retimed(e) and e.tags[ORIGINAL_TIME_TAG] == "1970-01-01T00:00:00Z"
    # within the window nothing changes; an agent back from a week offline is not a clock problem
    d["time"] = (received - timedelta(days=7)).isoformat()
    (e,) = decode_batch(orjson.dumps([d]), key=HOST.host_id, received=received)[0]
    assert not is_retimed(e) and e.time == received - timedelta(days=7)


def test_only_the_brokers_arrival_time_judges_a_clock() -> None:
    assert arrival_time(1_764_590_400_000, set_by_broker=True) == datetime(2025, 12, 1, 12, tzinfo=UTC)
    assert arrival_time(1_764_590_400_000, set_by_broker=False) is None  # CreateTime: the producer's clock
    assert arrival_time(-1, set_by_broker=True) is None


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=400))
def test_any_text_can_be_made_a_safe_identifier(text: str) -> None:
    from contract.events import safe_id

    out = safe_id(text)
    assert 0 < len(out) <= MAX_ID_CHARS and SAFE_ID.fullmatch(out)
    if SAFE_ID.fullmatch(text) and len(text) <= MAX_ID_CHARS:
        assert out == text


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300_000), reason=st.text(max_size=3000))
def test_a_dead_letter_always_fits_the_broker(raw: bytes, reason: str) -> None:
    from contract.events import MAX_DEAD_LETTER_BYTES, MAX_REASON_CHARS, Rejected, dead_letter_message

    value, headers = dead_letter_message(Rejected(reason, raw * 3), "t", "sink")
    h = dict(headers)
    assert len(value) <= MAX_DEAD_LETTER_BYTES and value == (raw * 3)[:MAX_DEAD_LETTER_BYTES]
    assert len(h["reason"].decode()) <= MAX_REASON_CHARS * 4
    assert ("truncated" in h) == (len(raw) * 3 > MAX_DEAD_LETTER_BYTES)
