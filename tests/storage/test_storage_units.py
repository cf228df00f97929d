"""Pure unit tests: row building, time parsing, output formats (the read-only check: test_storage_readonly*)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from storage_helpers import fleet

from contract.events import SCHEMA_VERSION
from storage.output import render
from storage.query_client import QueryResult, plain
from storage.rows import EVENT_COLUMNS, anomaly_row, cause_of, lifecycle_row, rollout_row, telemetry_rows
from storage.when import parse_when, sql_time

EVENT = fleet(1, datetime(2026, 3, 1, tzinfo=UTC), minutes=1)[0].events[1]


def test_telemetry_rows_keep_partition_offset_and_reject_with_reasons():
    good = EVENT.to_dict()
    bad_tag = {**good, "event_id": EVENT.event_id[:-1] + "0", "tags": {"cloud.region": 5}}
    old = {**good, "schema_version": SCHEMA_VERSION + 1}
    rows, rejected = telemetry_rows(orjson.dumps([good, bad_tag, old, {**good, "event_id": "x"}]), 3, 42, 1 << 20)
    assert [eid for eid, _ in rows] == [EVENT.event_id]
    row = dict(zip(EVENT_COLUMNS, orjson.loads(rows[0][1]), strict=True))
    assert (row["kafka_partition"], row["kafka_offset"], row["payload"]) == (3, 42, EVENT.payload)
    reasons = [r.reason for r in rejected]
    assert any("tag 'cloud.region' must be a string" in r for r in reasons)
    assert any("schema_version" in r for r in reasons)
    assert any("not a UUID" in r for r in reasons)
    assert [cause_of(r) for r in reasons].count("schema_version") == 1
    _, rejected = telemetry_rows(orjson.dumps([good]), 0, 0, max_row_bytes=100)
    assert "oversized" in rejected[0].reason and cause_of(rejected[0].reason) == "oversized"


def _envelope_variants() -> list[object]:
    """Valid envelopes of every kind and many ways of breaking each field."""
    from contract.events import PAYLOAD_FIELDS, Kind

    wrong: list[object] = [None, True, 0, -1, 1.5, "", "x", [], {}, 2]
    values = {int: 1, float: 1.5, str: "x", list: [], dict: {}, type(None): None}
    out: list[object] = [42, "x", None, [], {}]
    for kind in Kind:
        payload = {name: values[types[0]] for name, types in PAYLOAD_FIELDS[kind].items()}
        good = {**EVENT.to_dict(), "kind": kind.value, "payload": payload}
        out.append(good)
        for name in good:
            out.append({k: v for k, v in good.items() if k != name})
            out += [{**good, name: w} for w in wrong]
        for name in payload:
            out.append({**good, "payload": {k: v for k, v in payload.items() if k != name}})
            out += [{**good, "payload": {**payload, name: w}} for w in wrong]
        out += [{**good, "time": t} for t in ("2026-03-01T12:00:00", "2026-03-01T13:00:00+01:00",
                                              "2026-03-01T12:00:00.5Z", "yesterday", "0001-01-01T00:00:00Z")]
        out += [{**good, "extra": 1}, {**good, "payload": {**payload, "extra": True}}]
    return out


def test_the_sink_and_the_worker_accept_and_reject_the_same_envelopes():
    from contract.events import decode_batch

    accepted = 0
    for d in _envelope_variants():
        value = orjson.dumps([d])
        events, contract_rejected = decode_batch(value, key=EVENT.host_id.encode())
        rows, sink_rejected = telemetry_rows(value, 0, 0, 1 << 20, key=EVENT.host_id.encode())
        assert [e.event_id for e in events] == [event_id for event_id, _ in rows], d
        assert sink_rejected == contract_rejected, d  # the same reason, from the same check
        accepted += len(rows)
    assert accepted > 100


def test_topic_rows_refuse_bad_values():
    from contract.findings import Finding, FindingKind, Severity

    f = Finding(FindingKind.RARE_FEATURE, "h", "i", "f", datetime(2026, 3, 1, tzinfo=UTC), 0.5, Severity.LOW,
                "s", "e")
    key, line = anomaly_row(orjson.dumps(f.to_dict()), 0, 7)
    assert key == f.finding_id and orjson.loads(line)["kafka_offset"] == 7
    with pytest.raises(ValueError, match="not a finite number"):
        anomaly_row(orjson.dumps({**f.to_dict(), "score": "nan"}), 0, 0)
    with pytest.raises(ValueError, match="not a rollout event"):
        rollout_row(b'{"image_family": "web"}', 0, 0)
    with pytest.raises(ValueError, match="status must be"):
        lifecycle_row(b'{"host_id": "h", "status": "maybe", "time": "2026-03-01T00:00:00Z"}', 0, 0)
    with pytest.raises(ValueError, match="not JSON"):
        lifecycle_row(b"{", 0, 0)
    key, line = lifecycle_row(b'{"host_id": "h", "status": "gone", "time": "2026-03-01T00:00:00"}', 0, 0)
    row = orjson.loads(line)
    assert row["time"] == "2026-03-01T00:00:00Z" and row["first_seen"] is None
    assert key == f"h|gone|{int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000}"


def test_parse_when():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_when("now", now) == now
    assert parse_when("-2h", now) == now - timedelta(hours=2)
    assert parse_when("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_when("2026-03-01 12:00:00", now) == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_when("2026-03-01T12:00:00+02:00", now).astimezone(UTC).hour == 10
    assert sql_time(datetime(2026, 3, 1, 12, tzinfo=UTC)) == "2026-03-01 12:00:00.000000"
    with pytest.raises(ValueError, match="cannot read time"):
        parse_when("yesterday-ish", now)


def test_render_formats_and_plain_values():
    r = QueryResult(["a", "t"], ["String", "DateTime64"],
                    [["x,y", plain(datetime(2026, 3, 1, 12, 0))], [None, plain({"k": (1, 2)})]])
    assert r.rows[0][1] == "2026-03-01T12:00:00Z" and r.rows[1][1] == {"k": [1, 2]}
    table = render(r, "table")
    assert table.splitlines()[0].split() == ["a", "t"] and table.endswith("(2 rows)")
    assert render(r, "csv").splitlines()[1] == '"x,y",2026-03-01T12:00:00Z'
    assert orjson.loads(render(r, "json"))[0] == {"a": "x,y", "t": "2026-03-01T12:00:00Z"}


def test_recent_ids_drop_every_repeat_and_stay_bounded():
    """The sink's memory of recent event ids drops an id seen before (in an earlier message or earlier in
    the same one) and keeps the rest in order, whichever path a message takes; it never holds more than its
    size plus one message."""
    import random

    from storage.sink import _RecentIds

    rng = random.Random(7)
    recent, seen = _RecentIds(10_000), set()
    for _ in range(500):
        ids = [f"e{rng.randrange(3000)}" for _ in range(rng.randrange(1, 12))]
        rows = [(i, i.encode()) for i in ids]
        want = []
        for i in ids:
            if i not in seen:
                seen.add(i)
                want.append((i, i.encode()))
        assert recent.unseen(rows) == want
    small = _RecentIds(100)
    for n in range(200):
        small.unseen([(f"m{n}-{i}", b"") for i in range(8)])
        assert len(small.current) + len(small.previous) <= 100 + 8
    assert small.unseen([("m199-0", b"")]) == []  # the newest are remembered
