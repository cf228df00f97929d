"""A host killed during a partition is reported with the exact count of the events it never delivered.

A real agent runs in a network namespace joined to the broker by a veth pair. The link is cut (silently:
packets dropped) while the agent keeps spooling; then the agent stops producing new events, the link heals
and the spool starts to replay, slowly (one record in flight, two per second), and the host is killed
(SIGKILL: a destroyed instance) half way through. Every message the agent sent carries its signed
`herdwatch-written` header, so the stream worker, started afterwards on what reached the broker, knows how
far the spool went. When the host times out without goodbye the worker must report `data_loss` with exactly
the number of events the dead host's spool still held unsent, and the lifecycle event must keep it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from confluent_kafka import Consumer, Message
from netns_link import AGENT, Link, namespaced_link, wait_for_line
from stream_helpers import StreamEnv, dump_logs

from collectors.spool import Spool
from contract.events import decode_batch
from contract.settings import KafkaSettings
from contract.signing import HEADER_WRITTEN
from herdwatch.kafka_local import LocalKafka, free_port
from streams.settings import WorkerSettings
from streams.worker import prepare_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def link() -> Iterator[Link]:
    with namespaced_link() as lk:
        yield lk


class Telemetry:
    """Reads the telemetry topic from the beginning: `host`'s seqs and the herdwatch-written values seen."""

    def __init__(self, kafka: KafkaSettings, host: str) -> None:
        self.host = host
        self.consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"tail-{uuid.uuid4().hex}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([kafka.topics.telemetry])
        self.seqs: list[int] = []
        self.written: list[int] = []

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            events, _ = decode_batch(msg.value())
            self.seqs += [e.seq for e in events if e.host_id == self.host]
            self.written += [int(v) for k, v in msg.headers() or [] if k == HEADER_WRITTEN]

    def close(self) -> None:
        self.consumer.close()


def test_host_killed_during_partition_is_reported_with_the_exact_count(link: Link, tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(), listen=link.host_ip)
    broker.start()
    agent: subprocess.Popen[str] | None = None
    env: StreamEnv | None = None
    log = tmp_path / "agent.log"
    state = tmp_path / "state"
    host = f"tail-{uuid.uuid4().hex[:8]}"
    try:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
        prepare_topics(kafka, WorkerSettings(app_id=f"{kafka.topic_prefix}-app", partitions=4))
        cfg = {"state": str(state), "host": host, "bootstrap": broker.listen_address, "prefix": kafka.topic_prefix,
               "settings": {"heartbeat_interval_s": 3600.0, "max_inflight": 1, "replay_rate_msgs": 2.0}}
        with open(log, "w") as err:
            agent = subprocess.Popen(["ip", "netns", "exec", link.ns, sys.executable, "-c", AGENT, json.dumps(cfg)],
                                     stdout=subprocess.PIPE, stderr=err, text=True, cwd=Path(__file__).parents[2])
        assert wait_for_line(log, "first event acknowledged", 90) is not None, log.read_text()[-3000:]
        python = next(p for p in [psutil.Process(agent.pid), *psutil.Process(agent.pid).children(recursive=True)]
                      if "python" in p.name())
        telemetry = Telemetry(kafka, host)
        telemetry.poll(3)
        link.cut()
        time.sleep(10)  # about ten records (one per agent cycle) spooled behind the partition
        (state / "stop-ticking").touch()  # nothing new from here on: what the spool holds is all there is
        telemetry.poll(1)
        before = len(telemetry.seqs)
        link.heal()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(telemetry.seqs) == before:  # the replay has begun ...
            telemetry.poll(0.1)
        python.send_signal(signal.SIGKILL)  # ... and the host is destroyed
        agent.wait(10)
        telemetry.poll(3)
        telemetry.close()
        seqs, written = telemetry.seqs, telemetry.written
        spool = Spool(state / "spool")  # the dead host's disk: what it had written
        assert spool.last_seq is not None
        never_delivered = spool.last_seq - max(seqs)
        print(f"\nwritten up to seq {spool.last_seq}, received {len(seqs)} (up to {max(seqs)}), "
              f"announced written {max(written)}, never delivered {never_delivered}")
        assert seqs == list(range(len(seqs)))  # what arrived came in order, once
        assert never_delivered > 0, "the host was killed after its spool had drained: nothing to account"

        env = StreamEnv(kafka, tmp_path, host_timeout_s=10, lag_grace_s=2)
        anomalies, lifecycle = env.topic(kafka.topics.anomalies), env.topic(kafka.topics.lifecycle)
        env.start_worker()

        def gone(messages: list[Message]) -> bool:
            return any(orjson.loads(m.value()).get("host_id") == host and orjson.loads(m.value()).get("status")
                       == "gone" for m in messages)

        assert lifecycle.wait_for(gone, timeout=120), dump_logs(env)
        anomalies.settle(quiet=3, timeout=30)
        (row,) = [v for v in lifecycle.values() if v.get("host_id") == host and v.get("status") == "gone"]
        assert (row["reason"], row["missing_events"]) == ("timeout", never_delivered)
        losses = [f for f in anomalies.values() if f.get("host_id") == host and f.get("kind") == "data_loss"]
        assert len(losses) == 1, losses
        assert losses[0]["details"]["missing"] == never_delivered
        assert (losses[0]["details"]["from_seq"], losses[0]["details"]["to_seq"]) == (max(seqs), spool.last_seq)
    finally:
        if env is not None:
            env.close()
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        broker.stop()
