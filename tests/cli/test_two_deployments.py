"""Two deployments on one broker, told apart by HERDWATCH_DEPLOYMENT alone: their topics, consumer groups and
changelog topics are all distinct, and a finding in one never appears in the other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from collectors.identity import HostIdentity
from collectors.publisher import Publisher
from contract.events import Event, Kind
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka
from simulator.keys import SIMULATED

pytestmark = pytest.mark.integration

HERDWATCH = str(Path(sys.executable).parent / "herdwatch")


def lossy(host_id: str) -> list[list[Event]]:
    """A host's hello, a heartbeat, then one whose seq skips 7 events: a data_loss finding."""
    ident = HostIdentity(host_id=host_id, boot_id=f"boot-{host_id}", image_id="ami-two", image_family="two")
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    return [[Event.new(ident, Kind.HELLO, 0, {"agent_version": "test", "boot_time": t0.timestamp() - 60}, time=t0)],
            [Event.new(ident, Kind.HEARTBEAT, 1, {"events_sent": 1, "events_dropped": 0},
                       time=t0 + timedelta(seconds=10))],
            [Event.new(ident, Kind.HEARTBEAT, 9, {"events_sent": 9, "events_dropped": 0},
                       time=t0 + timedelta(seconds=20))]]


def findings(kafka: KafkaSettings, seconds: float) -> list[dict]:
    c = Consumer({**kafka.confluent_config(), "group.id": f"{kafka.topics.subscriber_group_prefix}{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([kafka.topics.anomalies])
    out = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            m = c.poll(0.3)
            if m is not None and m.error() is None:
                out.append(orjson.loads(m.value()))
    finally:
        c.close()
    return out


def test_two_deployments_share_a_broker_without_touching(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    names = [f"d{uuid.uuid4().hex[:8]}", f"d{uuid.uuid4().hex[:8]}"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs = {}
    try:
        for name in names:  # nothing but the deployment name differs
            env = {**base, "HERDWATCH_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "HERDWATCH_DEPLOYMENT": name,
                   "HERDWATCH_WORKER_PARTITIONS": "2", "HERDWATCH_WORKER_DATA_DIR": str(tmp_path / name),
                   "HERDWATCH_WORKER_TICK_INTERVAL_S": "0.5", "HERDWATCH_WORKER_SESSION_TIMEOUT_S": "6",
                   "HERDWATCH_WORKER_ENGINE": '{"mv_enabled": false}', "HERDWATCH_WORKER_OCSF": "true"}
            logs[name] = tmp_path / f"{name}.log"
            with open(logs[name], "wb") as out:
                procs.append(subprocess.Popen([HERDWATCH, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              cwd=tmp_path))
        kafka = {name: KafkaSettings(bootstrap=kafka_broker.bootstrap, topic_prefix=name) for name in names}
        admin = AdminClient(kafka[names[0]].confluent_config())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # each worker creates its topics at start
            topics = set(admin.list_topics(timeout=10).topics)
            if all(kafka[n].topics.telemetry in topics for n in names):
                break
            time.sleep(0.5)
        hosts = {names[0]: "h-first", names[1]: "h-second"}
        for name in names:
            pub = Publisher(kafka[name], SIMULATED)
            for batch in lossy(hosts[name]):
                pub.publish(batch)
            assert pub.flush() == 0

        seen: dict[str, list[dict]] = {n: [] for n in names}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(any(f["kind"] == "data_loss" for f in seen[n]) for n in names):
            for n in names:
                seen[n] = findings(kafka[n], 2.0)
        for n in names:
            assert any(f["kind"] == "data_loss" for f in seen[n]), \
                f"{n}: no data_loss finding; worker log:\n{logs[n].read_text()[-3000:]}"
            assert {f["host_id"] for f in seen[n]} == {hosts[n]}, (n, seen[n])  # never the other's finding

        topics = set(admin.list_topics(timeout=10).topics)
        groups = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
        for n in names:
            other = names[1 - names.index(n)]
            t = kafka[n].topics
            mine = {x for x in topics if x.startswith((f"{n}.", f"{n}-"))}
            assert {t.telemetry, t.observations, t.anomalies, t.ocsf, t.deadletter} <= mine
            changelogs = {x for x in mine if x.endswith("-changelog")}
            assert changelogs and all(x.startswith(f"{n}-streams-") for x in changelogs), changelogs
            assert not any(x.startswith((f"{other}.", f"{other}-")) for x in mine)
            assert t.app_id in groups and t.app_id == f"{n}-streams"
            assert any(g.startswith(t.subscriber_group_prefix) for g in groups)
            ocsf = Consumer({**kafka[n].confluent_config(), "group.id": f"{n}-anomalies-ocsf",
                             "auto.offset.reset": "earliest"})
            ocsf.subscribe([t.ocsf])
            events = []
            end = time.monotonic() + 20
            while not events and time.monotonic() < end:
                m = ocsf.poll(0.5)
                if m is not None and m.error() is None:
                    events.append(orjson.loads(m.value()))
            ocsf.close()
            assert events and events[0]["class_uid"] == 2004 and events[0]["device"]["hostname"] == hosts[n]
            # `herdwatch anomalies` reads its own deployment only, in any format
            env = {**base, "HERDWATCH_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "HERDWATCH_DEPLOYMENT": n}
            out = subprocess.run([HERDWATCH, "anomalies", "--format", "ocsf"], env=env, capture_output=True,
                                 text=True, timeout=120)
            printed = [orjson.loads(line) for line in out.stdout.splitlines()]
            assert printed and {e["device"]["hostname"] for e in printed} == {hosts[n]}, out.stderr
            assert all(e["type_uid"] == 200401 for e in printed)
            out = subprocess.run([HERDWATCH, "anomalies", "--format", "csv"], env=env, capture_output=True,
                                 text=True, timeout=120)
            assert out.stdout.startswith("time,severity,kind,host_id") and hosts[n] in out.stdout, out.stderr
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
