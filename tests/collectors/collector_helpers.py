"""Reading telemetry back from the real broker in collector tests."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from collectors.probes.exec_events import ExecSource
from contract.events import Event, decode_batch
from contract.settings import KafkaSettings


def read_events(kafka: KafkaSettings, until: int | None = None, timeout: float = 30.0,
                idle: float = 3.0) -> list[tuple[bytes | None, int, list[Event]]]:
    """(key, partition, events) for every telemetry message, in offset order per partition. Stops when
    `until` events were read, or after `idle` seconds without a message (once something arrived)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"read-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([kafka.topics.telemetry])
    out: list[tuple[bytes | None, int, list[Event]]] = []
    count = 0
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if count and time.monotonic() - last > idle:
                    break
                continue
            if msg.error():
                continue
            events, rejected = decode_batch(msg.value())
            assert not rejected, [r.reason for r in rejected]
            out.append((msg.key(), msg.partition() or 0, events))
            count += len(events)
            last = time.monotonic()
            if until is not None and count >= until:
                break
    finally:
        consumer.close()
    return out


class QueuedSource(ExecSource):
    """The connector's queue without a kernel: records are pushed by the test."""

    def open(self) -> None:
        pass
