"""Helpers for the storage tests: a fleet, publish it, run a sink, read the dead-letter topic."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from confluent_kafka import Consumer

from collectors.publisher import Publisher
from contract.events import Event
from contract.kafka_admin import ensure_topics
from contract.settings import KafkaSettings
from simulator.keys import SIMULATED
from simulator.presets import HostHistory, forensics, histories


def fleet(hosts: int, start: datetime, minutes: int = 14) -> list[HostHistory]:
    """The simulator's forensics preset, host by host: queue workers, host 0 broken into half way (root
    SSH login, netcat installed, root login enabled, a miner from /tmp talking to 203.0.113.50:4444) and
    scaled in three quarters into the run."""
    return histories(forensics(hosts, minutes, start=start))


def publish(kafka: KafkaSettings, hosts: list[HostHistory], per_message: int = 5) -> int:
    ensure_topics(kafka, partitions=2)
    pub = Publisher(kafka, SIMULATED)
    n = 0
    for h in hosts:
        for i in range(0, len(h.events), per_message):
            pub.publish(h.events[i:i + per_message])
            n += len(h.events[i:i + per_message])
    assert pub.flush() == 0
    return n


def publish_events(kafka: KafkaSettings, events: list[Event]) -> None:
    pub = Publisher(kafka, SIMULATED)
    pub.publish(events)
    assert pub.flush() == 0


def produce_raw(kafka: KafkaSettings, topic: str, values: list[bytes | None], key: bytes = b"k") -> None:
    from confluent_kafka import Producer

    p = Producer({**kafka.confluent_config(), "message.max.bytes": 8_000_000})
    for v in values:  # telemetry is signed like the simulator's (the sink requires signatures by default)
        headers = SIMULATED.headers(key, v or b"") if topic == kafka.topics.telemetry else None
        p.produce(topic, value=v, key=key, headers=headers)
    assert p.flush(30) == 0


def read_all(kafka: KafkaSettings, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    """Read `expect` messages from the start of `topic` (fewer if the timeout passes)."""
    import time

    c = Consumer({**kafka.confluent_config(), "group.id": f"reader-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m)
    finally:
        c.close()
    return out
