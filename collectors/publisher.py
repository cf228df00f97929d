"""Publishing telemetry batches to Kafka: confluent-kafka + orjson, keyed by host_id, signed.

The key uses murmur2 partitioning so Faust (Java-compatible) and this producer agree on partitions.
Every message is signed by its `signer` (headers herdwatch-sig / herdwatch-key, see contract.signing): the
agent passes its host key, the simulator its simulated keys (simulator.keys); `None` sends unsigned batches
(only accepted where the consumers do not require signatures).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from contract.events import Event, encode_batch

if TYPE_CHECKING:  # the agent passes collectors.settings.AgentKafkaSettings (no pydantic), the simulator these
    from collectors.settings import AgentKafkaSettings
    from contract.settings import KafkaSettings

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class Signer(Protocol):
    def headers(self, key: bytes | None, value: bytes, written: int | None = None) -> list[tuple[str, bytes]]: ...


def producer_config(settings: KafkaSettings | AgentKafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = settings.confluent_config()
    conf.update({
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "message.max.bytes": 4_000_000,
    })
    conf.update(overrides)
    return conf


class Publisher:
    """Sends batches of one host's events as one Kafka message each."""

    def __init__(self, settings: KafkaSettings | AgentKafkaSettings, signer: Signer | None,
                 **producer_overrides: Any) -> None:
        self.settings = settings
        self.signer = signer
        self.topic = settings.topics.telemetry
        self.producer = Producer(producer_config(settings, **producer_overrides))

    def publish(self, events: list[Event], on_delivery: DeliveryCallback | None = None) -> None:
        if not events:
            return
        self.publish_value(encode_batch(events), events[0].host_id.encode(), on_delivery)

    def publish_value(self, value: bytes, key: bytes, on_delivery: DeliveryCallback | None = None,
                      written: int | None = None) -> None:
        """Send one already encoded batch (the agent sends spooled records this way), signed at send time;
        `written` (the highest seq the host has written so far) is announced in a signed header."""
        headers: list[tuple[str, str | bytes | None]] | None = None
        if self.signer is not None:
            headers = list(self.signer.headers(key, value, written))
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        return int(self.producer.flush(timeout))
