"""Never crash, never lose: a few hundred generated hostile telemetry messages through the real `herdwatch sink`
(its own embedded store) and the real `herdwatch worker` on the session broker. Every envelope is either
stored (sink) / taken in (worker) or on the dead-letter topic with a reason; the counters agree; both
processes are still running and still handle a final valid batch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from contract.events import Event, HostIdentity, Kind
from contract.settings import KafkaSettings, StorageSettings
from herdwatch.kafka_local import free_port
from storage.query_client import EndpointQueryClient, read_endpoint
from streams.settings import WorkerSettings
from streams.worker import prepare_topics

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
MAX_ROW_BYTES = 100_000


def good(host: str, n: int, **changes: Any) -> dict[str, Any]:
    ident = HostIdentity(host, "boot-1", "ami-1", "web", {"cloud.region": "eu-west-1"})
    d = Event.new(ident, Kind.PROCESS_START, n, {"pid": n, "exe": "/bin/sh", "cmdline": "sh", "user": "root"},
                  time=NOW).to_dict()
    d["event_id"] = str(uuid.uuid4())
    d.update(changes)
    return d


def hostile_messages(rng: random.Random, n: int) -> list[tuple[bytes, bytes | None, int]]:
    """(key, value, envelopes in it): each message counted as the units the consumers judge one by one."""
    out: list[tuple[bytes, bytes | None, int]] = []
    seq = 0
    for i in range(n):
        host = f"i-hostile{i % 7}"
        seq += 1
        choice = rng.randrange(16)
        if choice == 0:
            out.append((host.encode(), rng.choice([b"not json", b"\xff\xfe\x00", b"{", b""]), 1))
        elif choice == 1:
            out.append((host.encode(), rng.choice([b'{"a": 1}', b"42", b'"x"', b"null"]), 1))
        elif choice == 2:
            items = rng.randrange(1, 5)
            out.append((host.encode(), orjson.dumps([rng.choice([1, "x", None, [], {}]) for _ in range(items)]), items))
        elif choice == 3:
            depth = rng.randrange(300, 601)
            out.append((host.encode(), b"[" * depth + b"]" * depth, 1))
        elif choice == 4:
            t = rng.choice(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z"])
            out.append((host.encode(), orjson.dumps([good(host, seq, time=t)]), 1))
        elif choice == 5:
            big = "h" * 300_000
            out.append((big.encode(), orjson.dumps([good(big, seq)]), 1))
        elif choice == 6:
            bad = rng.choice(["i-\x00nul", "i-\x1b[31mred", "i-\u202eevil", "i-0 space"])
            out.append((bad.encode(), orjson.dumps([good(bad, seq), good(bad, seq + 1, tags={"x": "\x00"})]), 2))
        elif choice == 7:
            evs = [good(host, seq, payload={"pid": "x", "exe": 1, "cmdline": [], "user": None}),
                   good(host, seq + 1, seq="7"), good(host, seq + 2, tags={"k": 1})]
            out.append((host.encode(), orjson.dumps(evs), 3))
        elif choice == 8:
            out.append((b"i-someone-else", orjson.dumps([good(host, seq)]), 1))
        elif choice == 9:
            out.append((host.encode(), orjson.dumps([good(host, seq, payload={
                "pid": 1, "exe": "/bin/sh", "cmdline": "x" * (MAX_ROW_BYTES + 1000), "user": "root"})]), 1))
        elif choice == 10:
            out.append((host.encode(), orjson.dumps([good(host, seq, payload={
                "pid": 1, "exe": "/bin/sh", "cmdline": "sh", "user": "root", "parents": 5})]), 1))
        elif choice == 11:
            out.append((host.encode(), None, 1))
        else:
            k = rng.randrange(1, 4)
            out.append((host.encode(), orjson.dumps([good(host, seq + j) for j in range(k)]), k))
        seq += 4
    return out


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "herdwatch.cli", *args], env=env, stdout=f,
                                stderr=subprocess.STDOUT, cwd=log.parent)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


class DeadLetters:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer({**kafka.confluent_config(), "group.id": f"dl-{uuid.uuid4().hex[:8]}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([kafka.topics.deadletter])
        self.by_component: dict[str, list[dict[str, bytes]]] = {}

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    h = {str(kv[0]): kv[1] if isinstance(kv[1], bytes) else b"" for kv in (m.headers() or [])}
                    self.by_component.setdefault(h["component"].decode(), []).append(h)

    def count(self, component: str) -> int:
        return len(self.by_component.get(component, []))


def test_hostile_telemetry_is_stored_or_dead_lettered_and_nothing_dies(kafka_settings: KafkaSettings,
                                                                      tmp_path: Path) -> None:
    kafka = kafka_settings
    app_id = f"{kafka.topic_prefix}-app"
    prepare_topics(kafka, WorkerSettings(app_id=app_id, partitions=2))
    env = dict(os.environ)
    env.update({"HERDWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap, "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "HERDWATCH_WORKER_REQUIRE_SIGNATURES": "false", "HERDWATCH_SINK_REQUIRE_SIGNATURES": "false"})
    sink_port, worker_port = free_port(), free_port()
    sink_env = {**env, "HERDWATCH_STORAGE_DSN": f"chdb://{tmp_path / 'clickhouse'}", "HERDWATCH_STORAGE_DATABASE": "hw",
                "HERDWATCH_STORAGE_VAR_DIR": str(tmp_path / "var"), "HERDWATCH_SINK_BATCH_TIMEOUT": "0.2",
                "HERDWATCH_SINK_MAX_ROW_BYTES": str(MAX_ROW_BYTES)}
    worker_env = {**env, "HERDWATCH_WORKER_APP_ID": app_id, "HERDWATCH_WORKER_PARTITIONS": "2",
                  "HERDWATCH_WORKER_SESSION_TIMEOUT_S": "6", "HERDWATCH_WORKER_DATA_DIR": str(tmp_path / "data"),
                  "HERDWATCH_WORKER_METRICS_PORT": str(worker_port)}
    sink = start(["sink", "--metrics-port", str(sink_port)], sink_env, tmp_path / "sink.log")
    worker = start(["worker"], worker_env, tmp_path / "worker.log")
    dl = DeadLetters(kafka)
    try:
        messages = hostile_messages(random.Random(1234), 300)
        units = sum(n for _, _, n in messages)
        producer = Producer({**kafka.confluent_config(), "partitioner": "murmur2_random",
                             "message.max.bytes": 1_000_000})
        for key, value, _ in messages:
            producer.produce(kafka.topics.telemetry, key=key, value=value)
        assert producer.flush(30) == 0

        storage = StorageSettings(dsn=sink_env["HERDWATCH_STORAGE_DSN"], database="hw", var_dir=tmp_path / "var")
        deadline = time.monotonic() + 90
        stored = worker_in = -1.0
        while time.monotonic() < deadline:
            dl.poll(1.0)
            info = read_endpoint(storage)
            if info is None:
                continue
            stored = EndpointQueryClient(info["url"], info["token"]).query("SELECT count() FROM events").rows[0][0]
            try:
                worker_in = metric(worker_port, "herdwatch_streams_events_in_total")
            except OSError:
                continue
            contract_dl = sum(1 for h in dl.by_component.get("streams.hosts", [])
                              if not h["reason"].startswith(b"detectors failed"))
            if stored + dl.count("sink") == units and worker_in + contract_dl == units:
                break
        logs = f"{(tmp_path / 'sink.log').read_text()[-3000:]}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
        assert sink.poll() is None and worker.poll() is None, logs
        assert stored + dl.count("sink") == units, (stored, dl.count("sink"), units, logs)
        assert worker_in + contract_dl == units, (worker_in, contract_dl, units, logs)
        assert all(h["reason"] for c in dl.by_component.values() for h in c)
        assert metric(sink_port, "herdwatch_sink_dead_lettered_total") == dl.count("sink")
        assert metric(worker_port, "herdwatch_streams_events_dead_lettered_total") == dl.count("streams.hosts")

        # still alive and still working: a final valid batch goes through both
        final = [good("i-final", s) for s in range(1, 4)]
        producer.produce(kafka.topics.telemetry, key=b"i-final", value=orjson.dumps(final))
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = read_endpoint(storage)
            assert info is not None
            now_stored = EndpointQueryClient(info["url"], info["token"]).query(
                "SELECT count() FROM events WHERE host_id = 'i-final'").rows[0][0]
            if now_stored == 3 and metric(worker_port, "herdwatch_streams_events_in_total") == worker_in + 3:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the final valid batch did not get through\n{logs}")
        assert sink.poll() is None and worker.poll() is None
    finally:
        dl.consumer.close()
        for proc in (worker, sink):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
