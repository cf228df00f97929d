"""The schema against the event contract, migrations, TTL settings."""

from __future__ import annotations

import orjson
import pytest
from storage_helpers import fleet

from contract.events import ENVELOPE_FIELDS
from storage.client import connect
from storage.rows import EVENT_COLUMNS, telemetry_rows
from storage.schema import MIGRATIONS, migrate
from storage.settings import SinkSettings

pytestmark = pytest.mark.integration
SINK_COLUMNS = {"kafka_partition", "kafka_offset", "ingested_at"}
# JSON type of an envelope field -> ClickHouse types that may hold it
COMPATIBLE = {str: ("String", "LowCardinality(String)", "UUID", "DateTime64(6, 'UTC')"),
              int: ("UInt8", "UInt64"), dict: ("Map(LowCardinality(String), String)", "String")}


def _columns(client, table: str) -> dict[str, str]:
    rows = client.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                        "AND table = {t:String}", parameters={"t": table}).result_rows
    return dict(rows)


def test_events_table_matches_the_event_contract(storage_settings):
    client = connect(storage_settings)
    migrate(client)
    columns = _columns(client, "events")
    assert set(columns) == set(ENVELOPE_FIELDS) | SINK_COLUMNS, \
        "events columns and contract.events.ENVELOPE_FIELDS drifted apart: update storage/schema.py " \
        "with a new migration"
    for name, types in ENVELOPE_FIELDS.items():
        assert columns[name] in COMPATIBLE[types[0]], (name, columns[name])
    # and the sink writes exactly those columns
    event = fleet(1, __import__("datetime").datetime(2026, 3, 1, tzinfo=__import__("datetime").UTC),
                  minutes=1)[0].events[0]
    [(_, line)] = telemetry_rows(orjson.dumps([event.to_dict()]), 0, 0, 1 << 20)[0]
    assert set(EVENT_COLUMNS) == set(ENVELOPE_FIELDS) | {"kafka_partition", "kafka_offset"}
    row = dict(zip(EVENT_COLUMNS, orjson.loads(line), strict=True))
    assert row["event_id"] == event.event_id and row["payload"] == event.payload


def test_migrations_are_idempotent_and_recorded(storage_settings):
    client = connect(storage_settings)
    assert migrate(client) == [m.version for m in MIGRATIONS]
    assert migrate(client) == []
    versions = [r[0] for r in client.query("SELECT version FROM schema_migrations ORDER BY version").result_rows]
    assert versions == [m.version for m in MIGRATIONS]
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"events", "processes", "network", "logins", "metrics", "config", "hosts", "host_lifecycle",
            "lifecycle", "anomalies", "rollouts", "process_exe_hosts", "network_remote_hosts"} <= tables


def test_retention_follows_settings(storage_settings):
    client = connect(storage_settings)
    migrate(client, SinkSettings(ttl_metrics_days=30, ttl_events_days=0))

    def engine(t: str) -> str:
        return client.query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                            "AND name = {t:String}", parameters={"t": t}).result_rows[0][0]

    assert "toIntervalDay(30)" in engine("metrics")
    assert " TTL " not in engine("events")
    migrate(client, SinkSettings(ttl_metrics_days=7, ttl_events_days=365))
    assert "toIntervalDay(7)" in engine("metrics") and "toIntervalDay(365)" in engine("events")


def test_metric_values_keep_their_scope(storage_settings):
    from datetime import UTC, datetime

    from contract.events import Event, HostIdentity, Kind
    from storage.load import load_events

    client = connect(storage_settings)
    migrate(client)
    host = HostIdentity("i-1", "b-1", "ami-1", "web")
    t = datetime.now(UTC)  # inside the metrics table's retention
    load_events(client, [
        Event.new(host, Kind.METRICS, 1, {"values": {"cpu_pct": 2.0}, "scope": "host"}, time=t),
        Event.new(host, Kind.METRICS, 2, {"values": {"cpu_pct": 97.0}, "scope": "machine"}, time=t),
        Event.new(host, Kind.METRICS, 3, {"values": {"cpu_pct": 40.0}, "scope": "cgroup:/kubepods/pod1"}, time=t),
        Event.new(host, Kind.METRICS, 4, {"values": {"procs": 9.0}}, time=t)])  # older agents send no scope
    rows = client.query("SELECT scope, name, value FROM metrics ORDER BY value").result_rows
    assert [tuple(r) for r in rows] == [("host", "cpu_pct", 2.0), ("host", "procs", 9.0),
                                        ("cgroup:/kubepods/pod1", "cpu_pct", 40.0), ("machine", "cpu_pct", 97.0)]
