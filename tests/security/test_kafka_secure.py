"""Authenticated Kafka: a SASL_SSL broker (SCRAM-SHA-512) with one user per role and least-privilege ACLs.

The whole pipeline runs on it with each role's own credentials: an agent writes telemetry, the real
stream worker (`herdwatch worker`) turns a sequence gap into a data_loss finding, the sink
(`herdwatch sink`) stores events and the finding, and `herdwatch anomalies` reads the finding as a
subscriber. Clients without credentials, with a wrong password or outside their role are refused.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from collectors.publisher import Publisher
from contract.events import Event, HostIdentity, Kind
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port, role_acls
from simulator.keys import SIMULATED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-secure"), port=free_port(), controller_port=free_port(),
                        secure=True)
    broker.start()
    yield broker
    broker.stop()


def lossy_host_batches(host_id: str) -> list[list[Event]]:
    """A host's hello, one cycle, then a cycle whose first seq skips 7 events (lost on the way)."""
    ident = HostIdentity(host_id=host_id, boot_id=f"boot-{host_id}", image_id="ami-secure", image_family="secure")
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    hello = [Event.new(ident, Kind.HELLO, 0, {"agent_version": "test", "boot_time": t0.timestamp() - 60}, time=t0)]
    first = [Event.new(ident, Kind.HEARTBEAT, 1, {"events_sent": 1, "events_dropped": 0},
                       time=t0 + timedelta(seconds=10))]
    after_gap = [Event.new(ident, Kind.HEARTBEAT, 9, {"events_sent": 9, "events_dropped": 0},
                           time=t0 + timedelta(seconds=20))]
    return [hello, first, after_gap]


def herdwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "herdwatch.cli", *args]


def role_env(broker: LocalKafka, role: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    env.update(broker.role_env(role, prefix))
    env.update(extra)
    return env


def topic_sizes(broker: LocalKafka, prefix: str) -> dict[str, int]:
    """Messages in each of the prefix's topics, as the admin sees them (for failure messages)."""
    admin = broker.client_settings("admin", prefix)
    c = Consumer({**admin.confluent_config(), "group.id": f"sizes-{uuid.uuid4().hex}"})
    try:
        meta = c.list_topics(timeout=10)
        return {name: sum(c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in t.partitions)
                for name, t in meta.topics.items() if name.startswith(prefix)}
    finally:
        c.close()


def read_lines(stream: IO[str], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def test_each_role_works_with_its_own_credentials(secure_broker: LocalKafka, tmp_path: Path) -> None:
    started = time.monotonic()
    prefix = f"s{uuid.uuid4().hex[:10]}"
    app_id, sink_group = f"{prefix}-app", f"{prefix}-sink"
    secure_broker.provision(prefix, app_id=app_id, sink_group=sink_group, partitions=2)

    # the agent role writes telemetry
    pub = Publisher(secure_broker.client_settings("agent", prefix), SIMULATED)
    delivered: list[KafkaError | None] = []
    for batch in lossy_host_batches("h-secure-1"):
        pub.publish(batch, on_delivery=lambda err, msg: delivered.append(err))
    assert pub.flush() == 0
    assert delivered == [None, None, None], delivered

    procs: dict[str, subprocess.Popen[str]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "sink")}
    try:
        worker_env = role_env(secure_broker, "worker", prefix, HERDWATCH_WORKER_APP_ID=app_id,
                              HERDWATCH_WORKER_PARTITIONS="2", HERDWATCH_WORKER_DATA_DIR=str(tmp_path / "streams"),
                              HERDWATCH_WORKER_TICK_INTERVAL_S="0.5", HERDWATCH_WORKER_SESSION_TIMEOUT_S="6",
                              HERDWATCH_WORKER_ENGINE='{"mv_enabled": false}', HERDWATCH_WORKER_LOGLEVEL="info")
        sink_env = role_env(secure_broker, "sink", prefix, HERDWATCH_SINK_GROUP_ID=sink_group,
                            HERDWATCH_STORAGE_DSN=f"chdb://{tmp_path / 'clickhouse'}",
                            HERDWATCH_STORAGE_DATABASE="hw", HERDWATCH_STORAGE_VAR_DIR=str(tmp_path / "var"),
                            HERDWATCH_SINK_BATCH_TIMEOUT="0.2", HERDWATCH_SINK_SESSION_TIMEOUT_MS="6000")
        for name, cmd, env in (("worker", herdwatch("worker"), worker_env),
                               ("sink", herdwatch("sink", "--no-endpoint"), sink_env)):
            with open(logs[name], "w") as out:
                procs[name] = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                               text=True)
        # a subscriber follows the anomaly topic with its own credentials (private group named after the deployment)
        procs["anomalies"] = subprocess.Popen(
            herdwatch("anomalies", "--follow", "--from-beginning", "--json"),
            env=role_env(secure_broker, "subscriber", prefix), cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()
        assert procs["anomalies"].stdout is not None
        threading.Thread(target=read_lines, args=(procs["anomalies"].stdout, lines), daemon=True).start()
        finding: dict[str, Any] | None = None
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while finding is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            seen.append(line)
            if line.startswith("{") and json.loads(line).get("kind") == "data_loss":
                finding = json.loads(line)
        assert finding is not None, (f"no data_loss finding reached the subscriber; its output: {seen[-20:]}\n"
                                     f"messages per topic: {topic_sizes(secure_broker, prefix)}\n"
                                     f"worker log: {logs['worker'].read_text()[-3000:]}")
        assert finding["host_id"] == "h-secure-1" and finding["details"]["missing"] == 7

        time.sleep(2.0)  # the sink's batch timeout is 0.2 s: give it time to store the finding too
        for name in ("worker", "sink"):
            procs[name].send_signal(signal.SIGTERM)
            assert procs[name].wait(60) == 0, logs[name].read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    out = subprocess.run(herdwatch("sql", "--format", "json",
                                   "SELECT (SELECT count() FROM events) AS events, "
                                   "(SELECT count() FROM anomalies WHERE kind = 'data_loss') AS losses"),
                         env=sink_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)[0]
    assert int(stored["events"]) == 3, (stored, logs["sink"].read_text()[-3000:])
    assert int(stored["losses"]) == 1, (stored, logs["sink"].read_text()[-3000:])
    assert time.monotonic() - started < 120


def wait_for_error(conf: dict[str, Any], seconds: float = 20.0) -> KafkaError | None:
    errors: list[KafkaError] = []
    p = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + seconds
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    return errors[0] if errors else None


def test_clients_without_valid_credentials_are_refused(secure_broker: LocalKafka) -> None:
    agent = secure_broker.client_settings("agent")
    # no TLS, no SASL: the listener does not speak to it at all
    plain = AdminClient({"bootstrap.servers": secure_broker.bootstrap, "security.protocol": "plaintext"})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    # TLS without SASL
    tls_only = AdminClient({"bootstrap.servers": secure_broker.bootstrap, "security.protocol": "ssl",
                            "ssl.ca.location": str(secure_broker.ca_file)})
    with pytest.raises(KafkaException):
        tls_only.list_topics(timeout=5)
    # the right user with a wrong password
    wrong = KafkaSettings(**{**agent.model_dump(), "sasl_password": "not-the-password"})
    err = wait_for_error(wrong.confluent_config())
    assert err is not None and err.code() == KafkaError._AUTHENTICATION, err
    # TLS is verified: a client that does not trust the local CA cannot connect either
    untrusted = {**agent.confluent_config(), "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"}
    err = wait_for_error(untrusted)
    assert err is not None and err.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


def test_roles_are_refused_outside_their_acls(secure_broker: LocalKafka) -> None:
    prefix = f"s{uuid.uuid4().hex[:10]}"
    secure_broker.provision(prefix, partitions=1)
    agent = secure_broker.client_settings("agent", prefix)
    subscriber = secure_broker.client_settings("subscriber", prefix)
    topics = agent.topics

    # the agent cannot write findings
    results: list[KafkaError | None] = []
    p = Producer(agent.confluent_config())
    p.produce(topics.anomalies, key=b"h", value=b"{}", on_delivery=lambda err, msg: results.append(err))
    p.flush(20)
    assert len(results) == 1 and results[0] is not None
    assert results[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, results[0]

    refused = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}

    def read_errors(settings: KafkaSettings, topic: str) -> set[int]:
        """Error codes seen while subscribed to `topic` (in a group subscribers may use)."""
        group = f"{settings.topics.subscriber_group_prefix}{uuid.uuid4().hex}"
        c = Consumer({**settings.confluent_config(), "group.id": group, "enable.auto.commit": False})
        c.subscribe([topic])
        codes: set[int] = set()
        try:
            deadline = time.monotonic() + 20
            while not codes & refused and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error() is not None:
                    codes.add(m.error().code())
                elif m is not None:
                    pytest.fail(f"{settings.sasl_username} read a message from {topic}")
            return codes
        finally:
            c.close()

    # the agent cannot read findings, nor its own telemetry back (it has no group either, so the
    # refusal may come from the group before the topic); a subscriber (it has groups) cannot read telemetry
    for topic in (topics.anomalies, topics.telemetry):
        codes = read_errors(agent, topic)
        assert codes and codes <= refused, (topic, codes)
    codes = read_errors(subscriber, topics.telemetry)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    # the agent sees no other topic's metadata: anomalies is refused to it at the topic level
    meta = AdminClient(agent.confluent_config()).list_topics(timeout=10)
    visible = {name for name, t in meta.topics.items() if t.error is None and name.startswith(prefix)}
    assert visible == {topics.telemetry}, visible
    meta = AdminClient(agent.confluent_config()).list_topics(topics.anomalies, timeout=10)
    error = meta.topics[topics.anomalies].error
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_acls_give_each_role_only_its_topics() -> None:
    specs = role_acls("hw", app_id="hw-app", sink_group="hw-sink")
    by_role: dict[str, set[tuple[str, str, str]]] = {}
    for s in specs:
        by_role.setdefault(s.role, set()).update((s.resource, s.name + ("*" if s.prefixed else ""), op)
                                                 for op in s.operations)
    assert by_role["agent"] == {("topic", "hw.telemetry", "WRITE"), ("topic", "hw.telemetry", "DESCRIBE")}
    assert by_role["subscriber"] == {("topic", "hw.anomalies", "READ"), ("topic", "hw.anomalies", "DESCRIBE"),
                                     ("group", "hw-anomalies-*", "READ"),
                                     ("group", "hw-anomalies-*", "DESCRIBE")}
    reads = {role: {name for res, name, op in ops if res == "topic" and op == "READ"} for role, ops in by_role.items()}
    writes = {role: {name for res, name, op in ops if res == "topic" and op == "WRITE"}
              for role, ops in by_role.items()}
    assert reads["worker"] == {"hw.telemetry", "hw.observations", "hw-app-*"}
    assert writes["worker"] == {"hw.observations", "hw.anomalies", "hw.rollouts", "hw.lifecycle", "hw.deadletter",
                                "hw.findings.ocsf", "hw-app-*"}
    assert reads["sink"] == {"hw.telemetry", "hw.anomalies", "hw.rollouts", "hw.lifecycle"}
    assert writes["sink"] == {"hw.deadletter"}
    assert "admin" not in by_role  # a super user
    groups = {role: {name for res, name, op in ops if res == "group"} for role, ops in by_role.items()}
    assert groups == {"agent": set(), "worker": {"hw-app"}, "sink": {"hw-sink"},
                      "subscriber": {"hw-anomalies-*"}}
