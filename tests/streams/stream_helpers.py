"""Stream worker harness: real `herdwatch worker` subprocesses (so kill -9 is real) on the session broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from contract.settings import KafkaSettings
from herdwatch.kafka_local import free_port
from streams.settings import WorkerSettings
from streams.worker import prepare_topics


class Clock:
    """A settable stand-in for time.time / time.monotonic."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, metrics_port: int) -> None:
        self.proc, self.log, self.metrics_port = proc, log, metrics_port

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def metrics_text(self) -> str:
        """The worker's /metrics page."""
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample from the worker's /metrics (labels must all match)."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


class Topic:
    """Reads one topic from the beginning and keeps everything it has seen."""

    def __init__(self, kafka: KafkaSettings, name: str) -> None:
        conf = kafka.confluent_config()
        conf.update({"group.id": f"test-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
        self.consumer = Consumer(conf)
        self.consumer.subscribe([name])
        self.messages: list[Any] = []

    def poll(self, seconds: float = 0.2) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.consumer.poll(0.1)
            if msg is not None and not msg.error():
                self.messages.append(msg)

    def values(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value()) for m in self.messages]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll(0.3)
            if predicate(self.messages):
                return True
        return False

    def settle(self, quiet: float = 8.0, timeout: float = 60.0) -> None:
        """Read until nothing new arrived for `quiet` seconds (or `timeout` passed): the worker has said
        everything it will say about the input so far (findings that need several cycles come late)."""
        end = time.monotonic() + timeout
        seen = -1
        while len(self.messages) != seen and time.monotonic() < end:
            seen = len(self.messages)
            self.poll(quiet)

    def close(self) -> None:
        self.consumer.close()


class StreamEnv:
    def __init__(self, kafka: KafkaSettings, tmp: Path, **worker: Any) -> None:
        self.kafka = kafka
        self.tmp = tmp
        self.app_id = f"{kafka.topic_prefix}-app"
        self.worker_env = {"APP_ID": self.app_id, "PARTITIONS": "4", "TICK_INTERVAL_S": "0.5",
                           "TOUCH_INTERVAL_S": "20", "HOST_TIMEOUT_S": "120", "SESSION_TIMEOUT_S": "6",
                           "LAG_GRACE_S": "8",
                           "DATA_DIR": str(tmp / "data"), "LOGLEVEL": "info"}
        self.worker_env.update({k.upper(): str(v) for k, v in worker.items()})
        self.workers: list[Worker] = []
        self.topics: list[Topic] = []
        prepare_topics(kafka, WorkerSettings(app_id=self.app_id, partitions=4))

    def start_worker(self, name: str = "w", **worker: Any) -> Worker:
        """A `herdwatch worker` with the env's settings and `worker`'s (HERDWATCH_WORKER_<NAME>) for it alone."""
        env = dict(os.environ)
        env.update({"HERDWATCH_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
                    "HERDWATCH_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix})
        env.update({f"HERDWATCH_WORKER_{k}": v for k, v in self.worker_env.items()})
        env.update({f"HERDWATCH_WORKER_{k.upper()}": str(v) for k, v in worker.items()})
        port = free_port()
        env["HERDWATCH_WORKER_METRICS_PORT"] = str(port)
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "worker"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.tmp)
        w = Worker(proc, log, port)
        self.workers.append(w)
        return w

    def committed_offsets(self, topic: str) -> list[int]:
        """The workers' consumer group's committed offset of each of `topic`'s partitions (0: none)."""
        conf = self.kafka.confluent_config()
        conf["group.id"] = self.app_id
        consumer = Consumer(conf)
        try:
            tps = [TopicPartition(topic, p) for p in range(int(self.worker_env["PARTITIONS"]))]
            return [max(0, tp.offset) for tp in consumer.committed(tps, timeout=10)]
        finally:
            consumer.close()

    def committed(self, topic: str) -> int:
        """How many of `topic`'s messages the workers' consumer group has committed (all partitions)."""
        return sum(self.committed_offsets(topic))

    def high_watermarks(self, topic: str) -> list[int]:
        """The offset after the last message of each of `topic`'s partitions."""
        conf = self.kafka.confluent_config()
        conf["group.id"] = f"test-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(conf)
        try:
            return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(int(self.worker_env["PARTITIONS"]))]
        finally:
            consumer.close()

    def topic(self, name: str) -> Topic:
        t = Topic(self.kafka, name)
        self.topics.append(t)
        return t

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for t in self.topics:
            t.close()


def dump_logs(env: StreamEnv) -> str:
    """Each worker's log tail and, for live workers, its herdwatch counters and gauges (for failure messages)."""
    parts = []
    for w in env.workers:
        parts.append(f"--- {w.log.name}\n{w.log.read_text()[-3000:]}")
        if w.proc.poll() is None:
            try:
                text = w.metrics_text()
            except OSError as e:
                parts.append(f"--- {w.log.name} metrics unavailable: {e!r}")
                continue
            lines = [line for line in text.splitlines()
                     if line.startswith("herdwatch_") and "_created" not in line and "_bucket" not in line]
            parts.append(f"--- {w.log.name} metrics\n" + "\n".join(lines))
    return "\n".join(parts)

