"""The local broker is real Apache Kafka: produce, consume, restart with data kept."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer

from contract.kafka_admin import ensure_topics
from contract.settings import KafkaSettings
from contract.topics import ALL
from herdwatch.kafka_local import LocalKafka, free_port

pytestmark = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[bytes] = []
    import time
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m.value())
    c.close()
    return out


def test_ensure_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    first = ensure_topics(kafka_settings)
    second = ensure_topics(kafka_settings)
    assert first == second == [kafka_settings.topics.name(s) for s in ALL]


def test_broker_restart_keeps_data(tmp_path) -> None:
    broker = LocalKafka(tmp_path / "k", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        assert broker.is_running()
        p = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(10):
            p.produce("restart-test", str(i).encode())
        assert p.flush(15) == 0
        broker.stop()
        assert not broker.is_running()
        broker.start()
        values = consume_all(broker.bootstrap, "restart-test", 10)
        assert sorted(values) == [str(i).encode() for i in range(10)]
    finally:
        broker.stop()
    assert broker.status() == "stopped"
