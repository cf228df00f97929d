"""Kafka down for a while under steady load (HERDWATCH_TEST_OUTAGE_S, default 20 s; the benchmark uses
60 s), then back: zero events lost, per-host order preserved,
and the sequence numbers show there is no gap. Also: the spool survives an agent restart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import read_events

from collectors.agent import Agent
from collectors.probes import MetricsProbe, ProcessProbe
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("HERDWATCH_TEST_OUTAGE_S", "20"))


def churn(stop: threading.Event) -> None:
    """Steady load: a short-lived process every 0.3 s (process.start/exit events)."""
    while not stop.is_set():
        subprocess.Popen(["sleep", "0.6"])
        stop.wait(0.3)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of its own, so stopping it does not disturb other tests sharing the session broker."""
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()


def test_broker_outage_loses_nothing(own_broker: LocalKafka, agent_settings: CollectorSettings) -> None:
    """The broker is killed (SIGKILL) under load, stays down, and restarts on the same ports and data."""
    kafka_settings = KafkaSettings(bootstrap=own_broker.bootstrap, topic_prefix="outage")
    settings = agent_settings.copy(heartbeat_interval_s=2.0, shutdown_flush_s=60.0, replay_rate_msgs=20.0)
    agent = Agent(settings, kafka_settings, probes=[ProcessProbe(0.2, 600), MetricsProbe(0.5)])
    stop_churn = threading.Event()
    load = threading.Thread(target=churn, args=(stop_churn,), daemon=True)
    runner = threading.Thread(target=agent.run, kwargs={"duration": OUTAGE_S + 16})
    load.start()
    runner.start()
    try:
        time.sleep(4)
        acked_before = agent.delivery.sent
        own_broker.kill()
        time.sleep(OUTAGE_S)
        spooled_during = agent.delivery.pending
    finally:
        own_broker.start()
    runner.join(timeout=OUTAGE_S + 120)
    stop_churn.set()
    assert not runner.is_alive()
    assert acked_before > 0 and spooled_during > 0  # the outage really held events back

    messages = read_events(kafka_settings, until=agent.seq.next, timeout=60)
    seqs = [e.seq for _, _, batch in messages for e in batch]
    assert seqs == list(range(agent.seq.next))  # nothing lost, nothing repeated, in order
    kinds = [e.kind for _, _, batch in messages for e in batch]
    assert kinds[-1] is Kind.GOODBYE and kinds.count(Kind.PROCESS_START) > 10
    assert agent.delivery.pending == 0 and agent.dropped_total() == 0


def test_spooled_events_survive_agent_restart(kafka_settings: KafkaSettings,
                                              agent_settings: CollectorSettings) -> None:
    """Broker unreachable during the first run: everything waits on disk; the next run sends it first,
    and the sequence continues where it stopped."""
    unreachable = kafka_settings.model_copy(update={"bootstrap": "127.0.0.1:1"})
    env = {**os.environ, "HERDWATCH_KAFKA_BOOTSTRAP": unreachable.bootstrap,
           "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
           "HERDWATCH_COLLECTOR_STATE_DIR": str(agent_settings.state_dir),
           "HERDWATCH_COLLECTOR_HOST_ID": agent_settings.host_id or "",
           "HERDWATCH_COLLECTOR_CLOUD_METADATA": "false", "HERDWATCH_COLLECTOR_SHUTDOWN_FLUSH_S": "1"}
    first = subprocess.run([sys.executable, "-m", "herdwatch.cli", "collect", "--duration", "2"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "waiting in spool" in first.stdout and "acknowledged 0" in first.stdout

    agent = Agent(agent_settings, kafka_settings)
    first_new_seq = agent.seq.next
    assert first_new_seq > 0 and agent.delivery.pending == first_new_seq
    agent.run(once=True)
    messages = read_events(kafka_settings, until=agent.seq.next)
    events = [e for _, _, batch in messages for e in batch]
    assert [e.seq for e in events] == list(range(agent.seq.next))
    hellos = [e for e in events if e.kind is Kind.HELLO]
    assert [h.seq for h in hellos] == [0, first_new_seq]  # second run continued the sequence
    goodbye = next(e for e in events if e.kind is Kind.GOODBYE)
    assert goodbye.seq == first_new_seq - 1 and goodbye.payload["reason"] == "duration"
