"""The sink against the real broker and the real embedded engine."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from storage_helpers import fleet, produce_raw, publish, read_all

from contract.events import Kind, encode_batch
from contract.kafka_admin import ensure_topics
from contract.settings import KafkaSettings, StorageSettings
from storage import signals
from storage.client import connect
from storage.rows import KEY_SQL, anomaly_row, lifecycle_row, rollout_row
from storage.schema import migrate
from storage.settings import SinkSettings
from storage.sink import Sink

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _sink(kafka: KafkaSettings, storage: StorageSettings, client=None, **overrides) -> Sink:
    settings = SinkSettings(batch_size=200, batch_timeout=0.3, **overrides)
    client = client or connect(storage)
    migrate(client, settings)
    return Sink(client, kafka, settings)


def test_stores_every_event_once_and_fills_typed_tables(kafka_settings, storage_settings):
    hosts = fleet(4, START, minutes=5)
    sent = publish(kafka_settings, hosts)
    sink = _sink(kafka_settings, storage_settings)
    stats = sink.run(until_idle=2)
    assert stats.rows == sent
    c = connect(storage_settings)
    count, unique = c.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    assert count == unique == sent
    procs = c.query("SELECT countIf(kind = 'process.inventory'), countIf(kind = 'process.start') "
                    "FROM processes").result_rows[0]
    events = [e for h in hosts for e in h.events]
    snapshot_rows = sum(len(e.payload["items"]) for e in events if e.kind == Kind.PROCESS_INVENTORY)
    starts = sum(1 for e in events if e.kind == Kind.PROCESS_START)  # every task process + 1 miner
    assert procs == (snapshot_rows, starts)
    hosts_row = c.query("SELECT count(), countIf(gone_at IS NOT NULL) FROM host_lifecycle").result_rows[0]
    assert hosts_row == (4, 1)  # host 0 was scaled in (goodbye); the others still live
    ran = c.query("SELECT DISTINCT host_id FROM process_exe_hosts WHERE exe = '/tmp/.x/xmrig'").result_rows
    assert ran == [(hosts[0].host_id,)]


def test_a_caught_up_sink_stores_its_batch_without_waiting_for_the_timeout(kafka_settings, storage_settings):
    import threading
    import time

    hosts = fleet(3, START, minutes=14)
    sent = publish(kafka_settings, hosts)
    assert 100 <= sent < 1000  # at least a tenth of a batch, less than a full one
    settings = SinkSettings(batch_size=1000, batch_timeout=3600)
    client = connect(storage_settings)
    migrate(client, settings)
    sink = Sink(client, kafka_settings, settings)
    runner = threading.Thread(target=sink.run)
    runner.start()
    deadline = time.monotonic() + 60
    while sink.stats.batches == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    committed_while_running = sink.stats.batches
    sink.stop()
    runner.join()
    assert committed_while_running == 1  # neither full nor an hour old: stored because nothing more came
    assert sink.stats.rows == sent
    assert connect(storage_settings).query("SELECT count() FROM events").result_rows[0][0] == sent


def test_bad_input_is_dead_lettered_with_reasons_and_the_sink_keeps_going(kafka_settings, storage_settings):
    ensure_topics(kafka_settings, partitions=1)
    hosts = fleet(1, START, minutes=1)
    good = hosts[0].events
    topic = kafka_settings.topics.telemetry
    wrong_version = {**good[1].to_dict(), "schema_version": 99}
    bad_id = {**good[2].to_dict(), "event_id": "not-a-uuid"}
    huge = good[3].replace(kind=Kind.METRICS, payload={"values": {"x": 1.0}, "blob": "x" * 20_000})
    before = signals.dead_lettered.value(topic=topic, cause="malformed")
    produce_raw(kafka_settings, topic, [
        b"{not json",
        encode_batch([good[0]]),
        orjson.dumps([wrong_version, bad_id]),
        encode_batch([huge]),
        encode_batch(good[4:]),
    ], key=good[0].host_id.encode())  # keyed by host, as the contract asks
    produce_raw(kafka_settings, kafka_settings.topics.anomalies, [b'{"kind": "nope"}'])
    sink = _sink(kafka_settings, storage_settings, max_row_bytes=10_000)
    stats = sink.run(until_idle=2)
    dead = read_all(kafka_settings, kafka_settings.topics.deadletter, expect=5)
    reasons = sorted(dict(m.headers())["reason"].decode() for m in dead)
    assert len(dead) == 5 and stats.dead_lettered == 5
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("schema_version 99" in r for r in reasons)
    assert any("not a UUID" in r for r in reasons)
    assert any("oversized" in r for r in reasons)
    assert any("not a finding" in r for r in reasons)
    assert all(dict(m.headers())["component"] == b"sink" for m in dead)
    assert signals.dead_lettered.value(topic=topic, cause="malformed") == before + 1
    c = connect(storage_settings)
    stored = {str(r[0]) for r in c.query("SELECT event_id FROM events").result_rows}
    expected = {e.event_id for e in [good[0], *good[4:]]}
    assert stored == expected


def test_upstream_duplicates_are_stored_once(kafka_settings, storage_settings):
    ensure_topics(kafka_settings, partitions=1)
    events = fleet(1, START, minutes=2)[0].events
    produce_raw(kafka_settings, kafka_settings.topics.telemetry,
                [encode_batch(events), encode_batch(events[:10])], key=events[0].host_id.encode())  # a resent spool
    sink = _sink(kafka_settings, storage_settings)
    stats = sink.run(until_idle=2)
    assert stats.duplicates == 10
    c = connect(storage_settings)
    assert c.query("SELECT count() FROM events").result_rows[0][0] == len(events)


def test_anomalies_rollouts_and_lifecycle_are_stored(kafka_settings, storage_settings):
    from contract.findings import Finding, FindingKind, RolloutEvent, RolloutStatus, Severity

    ensure_topics(kafka_settings, partitions=1)
    f = Finding(FindingKind.RARE_FEATURE, "i-1", "ami-1", "web", START, 0.9, Severity.HIGH,
                "proc:/tmp/.x/xmrig", "process /tmp/.x/xmrig seen on 1 of 48 hosts", {"hosts": 1})
    ro = RolloutEvent("web", "ami-1", "ami-2", RolloutStatus.STARTED, 0.1, START, "ami-2 replaces ami-1")
    life = {"host_id": "i-1", "image_id": "ami-1", "image_family": "web", "status": "gone",
            "time": "2026-03-01T12:14:00Z", "first_seen": "2026-03-01T12:00:00Z",
            "last_seen": "2026-03-01T12:13:58Z", "reason": "terminated"}
    produce_raw(kafka_settings, kafka_settings.topics.anomalies, [orjson.dumps(f.to_dict())])
    produce_raw(kafka_settings, kafka_settings.topics.rollouts, [orjson.dumps(ro.to_dict())])
    produce_raw(kafka_settings, kafka_settings.topics.lifecycle, [orjson.dumps(life)])
    _sink(kafka_settings, storage_settings).run(until_idle=2)
    c = connect(storage_settings)
    assert c.query("SELECT finding_id, score FROM anomalies").result_rows == [(f.finding_id, 0.9)]
    assert c.query("SELECT status, new_image FROM rollouts").result_rows == [("started", "ami-2")]
    # the dedup keys the sink computes equal the ones it reads back after a restart
    assert c.query(f"SELECT {KEY_SQL['anomalies']} FROM anomalies").result_rows == \
        [(anomaly_row(orjson.dumps(f.to_dict()), 0, 0)[0],)]
    assert c.query(f"SELECT {KEY_SQL['rollouts']} FROM rollouts").result_rows == \
        [(rollout_row(orjson.dumps(ro.to_dict()), 0, 0)[0],)]
    assert c.query(f"SELECT {KEY_SQL['lifecycle']} FROM lifecycle").result_rows == \
        [(lifecycle_row(orjson.dumps(life), 0, 0)[0],)]
    row = c.query("SELECT host_id, gone_reason, toString(gone_at), toString(first_seen) "
                  "FROM host_lifecycle").result_rows
    assert row == [("i-1", "terminated", "2026-03-01 12:14:00.000000", "2026-03-01 12:00:00.000000")]




class FlakyStore:
    """The real engine behind a switch: while `down`, every call fails like a lost connection."""

    def __init__(self, client, fail_calls: int) -> None:
        self.client = client
        self.fail_calls = fail_calls
        self.failures = 0

    def _check(self) -> None:
        if self.failures < self.fail_calls:
            self.failures += 1
            raise ConnectionError("store unavailable (injected)")

    def raw_insert(self, *args, **kwargs):
        self._check()
        return self.client.raw_insert(*args, **kwargs)

    def query(self, *args, **kwargs):
        self._check()
        return self.client.query(*args, **kwargs)


def test_store_outage_pauses_consumption_and_loses_nothing(kafka_settings, storage_settings):
    from contract.findings import Finding, FindingKind, Severity

    hosts = fleet(3, START, minutes=4)
    sent = publish(kafka_settings, hosts)
    f = Finding(FindingKind.RARE_FEATURE, "i-1", "ami-1", "web", START, 0.9, Severity.HIGH, "s", "e")
    produce_raw(kafka_settings, kafka_settings.topics.anomalies, [orjson.dumps(f.to_dict())])
    client = connect(storage_settings)
    migrate(client)
    flaky = FlakyStore(client, fail_calls=5)
    paused_before, resumed_before = signals.paused.value(), signals.resumed.value()
    sink = Sink(flaky, kafka_settings, SinkSettings(batch_size=50, batch_timeout=0.2, retry_initial=0.05,
                                                    retry_max=0.2))
    stats = sink.run(until_idle=2)
    assert flaky.failures == 5
    assert stats.failed_inserts == 5 and stats.pauses >= 1
    assert signals.paused.value() > paused_before and signals.resumed.value() > resumed_before
    count, unique = client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    assert count == unique == sent
    assert client.query("SELECT count() FROM anomalies").result_rows[0][0] == 1
    assert stats.rows == sent + 1


def test_partial_batch_failure_does_not_insert_the_stored_table_twice(kafka_settings, storage_settings):
    """events insert succeeds, the anomalies insert of the same batch fails: the retry must not
    insert the events again."""
    from contract.findings import Finding, FindingKind, Severity

    ensure_topics(kafka_settings, partitions=1)
    events = fleet(1, START, minutes=1)[0].events
    f = Finding(FindingKind.RARE_FEATURE, "i-1", "ami-1", "web", START, 0.9, Severity.HIGH, "s", "e")
    produce_raw(kafka_settings, kafka_settings.topics.telemetry, [encode_batch(events)], key=events[0].host_id.encode())
    produce_raw(kafka_settings, kafka_settings.topics.anomalies, [orjson.dumps(f.to_dict())])
    client = connect(storage_settings)
    migrate(client)

    class FailAnomaliesOnce:
        failed = False

        def raw_insert(self, table, *args, **kwargs):
            if table == "anomalies" and not self.failed:
                self.failed = True
                raise ConnectionError("injected")
            return client.raw_insert(table, *args, **kwargs)

        def query(self, *args, **kwargs):
            return client.query(*args, **kwargs)

    store = FailAnomaliesOnce()
    sink = Sink(store, kafka_settings, SinkSettings(batch_size=10_000, batch_timeout=1.0, retry_initial=0.05))
    sink.run(until_idle=2)
    assert store.failed
    assert client.query("SELECT count() FROM processes").result_rows[0][0] == \
        sum(len(e.payload["items"]) if e.kind == "process.inventory" else 1
            for e in events if e.kind.startswith("process."))
    assert client.query("SELECT count() FROM anomalies").result_rows[0][0] == 1


def test_a_bad_message_larger_than_the_dead_letter_topic_takes_is_dead_lettered_cut(kafka_settings, storage_settings):
    from confluent_kafka.admin import AdminClient, ConfigResource

    from contract.events import MAX_DEAD_LETTER_BYTES

    ensure_topics(kafka_settings, partitions=1)
    topic = kafka_settings.topics.telemetry
    admin = AdminClient(kafka_settings.confluent_config())  # the telemetry topic takes what the contract allows
    for f in admin.alter_configs([ConfigResource("topic", topic,
                                                 set_config={"max.message.bytes": str(4 * 1024 * 1024)})]).values():
        f.result()
    hosts = fleet(1, START, minutes=1)
    good = hosts[0].events
    big = b"[" + b" " * (3 * 1024 * 1024) + b"{not json"  # 3 MiB of not-JSON: three times the broker default
    produce_raw(kafka_settings, topic, [big, encode_batch(good[:3])], key=good[0].host_id.encode())
    sink = _sink(kafka_settings, storage_settings)
    stats = sink.run(until_idle=2)  # before: the broker refused the dead letter and the sink stopped
    dead = read_all(kafka_settings, kafka_settings.topics.deadletter, expect=1)
    assert len(dead) == 1 and stats.dead_lettered == 1
    headers = dict(dead[0].headers())
    assert headers["truncated"] == str(len(big)).encode() and len(dead[0].value()) == MAX_DEAD_LETTER_BYTES
    stored = {str(r[0]) for r in connect(storage_settings).query("SELECT event_id FROM events").result_rows}
    assert stored == {e.event_id for e in good[:3]}
