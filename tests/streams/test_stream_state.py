"""Stored stream state and lifecycle events are typed records that round-trip through JSON exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from faust.serializers import codecs

from contract.findings import HostLifecycle
from streams.cohorts import Member, lifecycle_event
from streams.hosts import HostSeq


def through_table(value: dict[str, Any]) -> Any:
    """What a table value looks like after Faust's json codec wrote it to the changelog and read it back."""
    return codecs.loads("json", codecs.dumps("json", value))


@pytest.mark.parametrize("record", [
    HostSeq("b-1", 41, 1772366400.123456, 1772366460.0, None),
    HostSeq("3f6c0a", 0, 0.1, 1e10 + 0.7, 1772366459.999999),
    HostSeq("b-2", 7, 0.5, 1.5, 1.5, skew_reported=1.25),
    HostSeq("b-3", 2, 0.5, 1.5, 1.5, earlier_boots=(("b-1", 2**63 - 1), ("b-2", 0))),
])
def test_host_seq_round_trips(record: HostSeq) -> None:
    assert HostSeq.from_json(through_table(record.to_json())) == record
    assert HostSeq.from_json(orjson.loads(orjson.dumps(record.to_json()))) == record
    assert set(record.to_json()) == {"boot_id", "seq", "first_seen", "last_seen", "last_forwarded",
                                      "skew_reported", "earlier_boots", "written"}


@pytest.mark.parametrize("record", [
    Member("web", "ami-1", 1772366400.0, 1772366400.0),
    Member("db|x", "ami-ä", 0.3, 1772366461.123456),
])
def test_member_round_trips(record: Member) -> None:
    assert Member.from_json(through_table(record.to_json())) == record
    assert set(record.to_json()) == {"image_family", "image_id", "first_seen", "last_seen", "seq_written",
                                      "seq_received"}


def old_lifecycle_dict(host: str, image: str, family: str, status: str, t: float, first: float, last: float,
                       reason: str) -> dict[str, Any]:
    """The lifecycle topic's value as the cohort stage wrote it before HostLifecycle (the wire format)."""
    def iso(x: float) -> str:
        return datetime.fromtimestamp(x, UTC).isoformat().replace("+00:00", "Z")

    return {"host_id": host, "image_id": image, "image_family": family, "status": status, "time": iso(t),
            "first_seen": iso(first), "last_seen": iso(last), "reason": reason}


@pytest.mark.parametrize("args", [
    ("h1", "ami-1", "web", "up", 1772366400.0, 1772366400.0, 1772366400.0, "first event"),
    ("h2", "ami-2", "web", "gone", 1772366523.25, 1772366400.5, 1772366500.123456, "timeout"),
    ("h3", "ami-3", "db", "up", 1772366400.000001, 1772366400.000001, 1772366400.000001, "re-imaged from ami-2"),
])
def test_lifecycle_wire_format_is_unchanged_and_round_trips(args: tuple[Any, ...]) -> None:
    event = lifecycle_event(*args)  # type: ignore[arg-type]
    wire = orjson.dumps(event.to_dict())
    # the wire format of before, with one field added at the end (events known written but never delivered)
    assert wire == orjson.dumps({**old_lifecycle_dict(*args), "missing_events": 0})
    back = HostLifecycle.from_dict(orjson.loads(wire))
    assert back == event and back.time.tzinfo is not None
    assert HostLifecycle.from_dict(old_lifecycle_dict(*args)) == event  # what older workers wrote still reads


def test_lifecycle_rejects_an_unknown_status() -> None:
    d = old_lifecycle_dict("h", "i", "f", "maybe", 0.0, 0.0, 0.0, "")
    with pytest.raises(ValueError, match="maybe"):
        HostLifecycle.from_dict(d)


def test_storage_reads_the_lifecycle_topic_as_before() -> None:
    from storage.rows import lifecycle_row

    args = ("h2", "ami-2", "web", "gone", 1772366523.25, 1772366400.5, 1772366500.0, "timeout")
    new = lifecycle_row(orjson.dumps(lifecycle_event(*args).to_dict()), 3, 17)  # type: ignore[arg-type]
    old = lifecycle_row(orjson.dumps(old_lifecycle_dict(*args)), 3, 17)
    assert new == old
