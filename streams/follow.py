"""Reading the anomaly topic as a subscriber: filters and one-line rendering for `herdwatch anomalies`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from contract.findings import Severity
from contract.settings import KafkaSettings

SEVERITY_ORDER = {s.value: i for i, s in enumerate(Severity)}


@dataclass
class AnomalyFilter:
    """Which findings to show; empty fields match everything."""

    images: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    min_severity: str = "info"

    def matches(self, f: dict[str, Any]) -> bool:
        return ((not self.images or f.get("image_id") in self.images)
                and (not self.families or f.get("image_family") in self.families)
                and (not self.hosts or f.get("host_id") in self.hosts)
                and (not self.kinds or f.get("kind") in self.kinds)
                and SEVERITY_ORDER.get(str(f.get("severity")), 0) >= SEVERITY_ORDER[self.min_severity])


def render(f: dict[str, Any]) -> str:
    return (f"{f.get('time', '?')} {str(f.get('severity', '?')).upper():8} {f.get('kind', '?'):20} "
            f"{f.get('host_id', '?')} ({f.get('image_id', '?')}): {f.get('explanation', '')}")


def follow(kafka: KafkaSettings, group: str | None = None, from_beginning: bool = False,
           forever: bool = True, poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
    """Yield findings from the anomaly topic. Without `forever`, stop once caught up with the end.

    `group` names a consumer group (shared progress, committed offsets); by default a private one-off
    group named after the deployment (`<deployment>-anomalies-<random>`, the prefix the secure broker's ACLs
    grant subscribers), so every viewer sees every finding.
    """
    topic = kafka.topics.anomalies
    conf = kafka.confluent_config()
    conf.update({"group.id": group or f"{kafka.topics.subscriber_group_prefix}{uuid.uuid4().hex[:12]}",
                 "auto.offset.reset": "earliest" if from_beginning else "latest",
                 "enable.auto.commit": bool(group)})
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=15)
    except KafkaException as e:
        consumer.close()
        raise RuntimeError(f"cannot reach Kafka at {kafka.bootstrap} ({e.args[0].str()}): start it "
                           "(`herdwatch kafka start`) or set HERDWATCH_KAFKA_BOOTSTRAP to your brokers") from None
    if topic not in meta.topics or meta.topics[topic].error is not None:
        consumer.close()
        raise RuntimeError(f"topic {topic} does not exist yet: start a worker (`herdwatch worker`), or set "
                           f"HERDWATCH_DEPLOYMENT to the deployment whose findings you want "
                           f"(now {kafka.deployment!r})")
    partitions = list(meta.topics[topic].partitions)
    ends = {}
    if not forever:
        for p in partitions:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
    consumer.subscribe([topic])
    done: set[int] = set()
    try:
        while True:
            msg = consumer.poll(poll_s)
            if msg is None:
                if not forever and _caught_up(consumer, topic, ends, done):
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {topic}: {err}")
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if not forever and offset + 1 >= ends.get(partition, 0):
                done.add(partition)
            try:
                yield orjson.loads(msg.value() or b"null") or {}
            except orjson.JSONDecodeError:
                continue
    finally:
        consumer.close()


def _caught_up(consumer: Consumer, topic: str, ends: dict[int, int], done: set[int]) -> bool:
    assignment = consumer.assignment()
    if not assignment:
        return False
    for tp in consumer.position(assignment):
        end = ends.get(tp.partition, 0)
        if tp.partition not in done and end > 0 and (tp.offset < 0 or tp.offset < end):
            return False
    return True
