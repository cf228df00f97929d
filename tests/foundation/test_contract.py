from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from contract.events import (
    PAYLOAD_FIELDS,
    SCHEMA_VERSION,
    ContractError,
    Event,
    HostIdentity,
    Kind,
    decode_batch,
    decode_event,
    encode_batch,
    format_time,
)
from contract.ids import event_id_time_ms, new_event_id

HOST = HostIdentity("i-0abc", "boot-1", "ami-1", "web", {"cloud.region": "eu-west-1"})


def sample_payload(kind: Kind) -> dict:
    values = {int: 1, float: 1.5, str: "x", list: [], dict: {}, type(None): None}
    return {name: values[types[0]] for name, types in PAYLOAD_FIELDS[kind].items()}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_round_trips(kind: Kind) -> None:
    event = Event.new(HOST, kind, seq=7, payload=sample_payload(kind))
    events, rejected = decode_batch(encode_batch([event]))
    assert rejected == []
    assert events == [event]
    assert events[0].time.tzinfo is not None


def test_time_is_utc_with_z_and_other_offsets_are_normalised() -> None:
    t = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(t) == "2026-03-01T12:00:00Z"
    with pytest.raises(ContractError, match="timezone-aware"):
        format_time(datetime(2026, 3, 1))


def test_naive_time_on_the_wire_is_rejected() -> None:
    d = Event.new(HOST, Kind.GOODBYE, 1, {"reason": "x"}).to_dict()
    d["time"] = "2026-03-01T12:00:00"
    with pytest.raises(ContractError, match="no timezone"):
        decode_event(d)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("host_id"), "'host_id' is missing"),
        (lambda d: d.update(seq="3"), "'seq' must be int"),
        (lambda d: d.update(seq=True), "'seq' must be int"),
        (lambda d: d.update(kind="process.teleport"), "unknown kind"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "not supported"),
        (lambda d: d["payload"].pop("reason"), "'reason' is missing"),
        (lambda d: d.update(time="yesterday"), "not ISO-8601"),
        (lambda d: d.update(host_id=""), "host_id is empty"),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason(mutate, message) -> None:
    d = Event.new(HOST, Kind.GOODBYE, 1, {"reason": "shutdown"}).to_dict()
    mutate(d)
    events, rejected = decode_batch(orjson.dumps([d]))
    assert events == []
    assert len(rejected) == 1
    assert message in rejected[0].reason


def test_a_bad_item_does_not_sink_its_batch() -> None:
    good = Event.new(HOST, Kind.GOODBYE, 1, {"reason": "shutdown"})
    value = orjson.dumps([good.to_dict(), {"nonsense": 1}, 42])
    events, rejected = decode_batch(value)
    assert events == [good]
    assert len(rejected) == 2


@pytest.mark.parametrize("value", [b"{not json", b"", None, b"\xff\xfe"])
def test_undecodable_messages_are_rejected_whole(value) -> None:
    events, rejected = decode_batch(value)
    assert events == [] and len(rejected) == 1


def test_oversized_message_is_rejected() -> None:
    events, rejected = decode_batch(b"[" + b" " * (5 * 1024 * 1024) + b"]")
    assert events == [] and "exceeds" in rejected[0].reason


def test_a_single_envelope_object_is_accepted() -> None:
    e = Event.new(HOST, Kind.GOODBYE, 1, {"reason": "x"})
    assert decode_batch(orjson.dumps(e.to_dict()))[0] == [e]


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert abs(event_id_time_ms(ids[-1]) - now_ms) < 5_000
