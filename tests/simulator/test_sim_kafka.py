"""`herdwatch simulate` to a real Kafka broker: one message per host per cycle, keyed by host, through the
collector's Publisher, each host's sequence in order within its partition."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from collectors.publisher import Publisher
from contract.events import decode_batch
from contract.kafka_admin import ensure_topics
from contract.settings import KafkaSettings
from herdwatch.cli import main
from simulator import Fleet
from simulator.keys import SIMULATED
from simulator.publish import publish_fleet

pytestmark = pytest.mark.integration


def read_all(settings: KafkaSettings, expected: int, timeout: float = 60.0) -> list[tuple[int, bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"sim-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topics.telemetry])
    out: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.partition() or 0, msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()
    return out


def test_publish_fleet_sends_one_message_per_host_per_cycle(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    fleet = Fleet.from_scenario("ci")
    expected = [(h, len(evs)) for c in list(Fleet.from_scenario("ci").cycles())[:6] for h, evs in c.batches]
    stats = publish_fleet(fleet, Publisher(kafka_settings, SIMULATED), max_cycles=6)
    assert stats.failed == 0 and stats.cycles == 6
    assert stats.messages == len(expected) and stats.events == sum(n for _, n in expected)

    messages = read_all(kafka_settings, stats.messages)
    assert len(messages) == stats.messages
    partitions: dict[str, set[int]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for partition, key, value in messages:
        events, rejected = decode_batch(value)
        assert rejected == []
        assert {e.host_id for e in events} == {key.decode()}
        partitions[key.decode()].add(partition)
        seqs[key.decode()].extend(e.seq for e in events)
    assert all(len(p) == 1 for p in partitions.values())  # keyed: a host stays on one partition
    for host, s in seqs.items():
        assert s == list(range(len(s))), host  # in order, nothing lost or duplicated
    assert set(seqs) == {h for h, _ in expected}


def test_simulate_command_publishes_and_writes_ground_truth(
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HERDWATCH_KAFKA_BOOTSTRAP", kafka_settings.bootstrap)
    monkeypatch.setenv("HERDWATCH_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    out = tmp_path / "run"
    code = main(["simulate", "ci", "--speed", "max", "--start", "scenario", "--cycles", "3", "--out", str(out)])
    assert code == 0
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["scenario"] == "ci" and len(truth["ground_truth"]) == 11
    hosts = json.loads((out / "hosts.json").read_text())
    first_cycle = {h["host_id"] for h in hosts if h["start"] == truth["start"]}
    printed = capsys.readouterr().out
    assert "0 not acknowledged" in printed
    messages = read_all(kafka_settings, 3 * len(first_cycle))
    assert {k.decode() for _, k, _ in messages} == first_cycle

    consumer = Consumer({"bootstrap.servers": kafka_settings.bootstrap, "group.id": "count"})
    try:
        total = 0
        for p in range(8):
            lo, hi = consumer.get_watermark_offsets(TopicPartition(kafka_settings.topics.telemetry, p), 10)
            total += hi - lo
    finally:
        consumer.close()
    assert total == len(messages)
