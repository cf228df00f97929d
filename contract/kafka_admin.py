"""Creating herdwatch's topics (idempotently) with confluent-kafka's AdminClient."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from contract import topics as t

if TYPE_CHECKING:  # not at run time: the host agent calls ensure_topics without importing pydantic
    from contract.settings import KafkaSettings


def ensure_topics(settings: KafkaSettings, specs: Iterable[t.TopicSpec] = t.ALL,
                  partitions: int | None = None, timeout: float = 30.0) -> list[str]:
    """Create any missing topic from `specs`; returns the names. `partitions` overrides every spec's."""
    admin = AdminClient(settings.confluent_config())
    names = settings.topics
    new = []
    for spec in specs:
        config = {"cleanup.policy": "compact" if spec.compacted else "delete"}
        if spec.retention_ms is not None:
            config["retention.ms"] = str(spec.retention_ms)
        new.append(NewTopic(names.name(spec), num_partitions=partitions or spec.partitions,
                            replication_factor=1, config=config))
    futures = admin.create_topics(new, request_timeout=timeout)
    deadline = time.monotonic() + timeout
    while not all(f.done() for f in futures.values()) and time.monotonic() < deadline:
        admin.poll(0.5)  # serves the client's error and log callbacks: "Kafka unreachable" is said while waiting
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: {e}; is Kafka reachable at "
                                   f"{settings.bootstrap}? (`herdwatch kafka status`)") from e
    return [n.topic for n in new]


def group_lag(settings: KafkaSettings, group: str, topic_names: Iterable[str], timeout: float = 10.0) -> int:
    """Messages in `topic_names` not yet committed by consumer group `group` (-1 if unknown yet).

    A partition the group has never committed counts in full, so a group that has not started is behind.
    """
    from confluent_kafka import Consumer, TopicPartition

    conf = settings.confluent_config()
    conf.update({"group.id": group, "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        metadata = consumer.list_topics(timeout=timeout)
        partitions = []
        for name in topic_names:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            partitions += [TopicPartition(name, p) for p in topic.partitions]
        lag = 0
        for tp in consumer.committed(partitions, timeout=timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            committed = tp.offset if tp.offset >= 0 else low
            lag += max(0, high - committed)
        return lag
    except KafkaException:
        return -1
    finally:
        consumer.close()
