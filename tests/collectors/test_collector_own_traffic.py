"""The agent counts its own Kafka traffic (librdkafka's statistics) and reports it beside the interface
counters, so the host stage can leave it out of the host's figures (detectors/host_state.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import orjson
import pytest
from collector_helpers import read_events
from hypothesis import given
from hypothesis import strategies as st

import collectors.delivery
from collectors.agent import Agent
from collectors.own_traffic import FIELDS, KafkaTraffic
from collectors.probes import MetricsProbe
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings


def stats(name: str, tx_bytes: int, rx_bytes: int = 0, tx: int = 0, rx: int = 0) -> bytes:
    return orjson.dumps({"name": name, "type": "producer", "tx_bytes": tx_bytes, "rx_bytes": rx_bytes, "tx": tx,
                         "rx": rx, "brokers": {}})


def test_totals_add_up_over_producer_instances_and_resets() -> None:
    t = KafkaTraffic()
    t.on_stats(stats("rdkafka#producer-1", 1000, 200, 4, 4))
    t.on_stats(stats("rdkafka#producer-1", 2500, 300, 9, 9))
    t.on_stats(stats("rdkafka#producer-2", 700, 50, 2, 2))  # the delivery made a new producer
    assert t.totals() == {"agent_net_bytes_out": 3200.0, "agent_net_bytes_in": 350.0,
                          "agent_net_requests_out": 11.0, "agent_net_responses_in": 11.0}
    t.on_stats(stats("rdkafka#producer-2", 100))  # lower than before: counted again from zero
    assert t.totals()["agent_net_bytes_out"] == 3300.0


@given(st.lists(st.one_of(st.binary(max_size=64),
                          st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
                              st.sampled_from(["name", *FIELDS]),
                              st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=3), st.none(),
                                        st.booleans()), max_size=6))), max_size=12))
def test_any_statistics_document_never_raises_and_totals_never_go_down(documents: list[bytes]) -> None:
    t = KafkaTraffic()
    before = t.totals()
    for doc in documents:
        t.on_stats(doc)
        now = t.totals()
        assert all(now[k] >= before[k] and now[k] < 2**70 for k in now)
        before = now


@pytest.mark.integration
def test_the_agents_metrics_carry_its_own_kafka_traffic(kafka_settings: KafkaSettings,
                                                        agent_settings: CollectorSettings,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(collectors.delivery, "STATS_INTERVAL_MS", 300)
    agent = Agent(agent_settings, kafka_settings, probes=[MetricsProbe(0.5)])
    probe = agent.probes[0]
    assert isinstance(probe, MetricsProbe)
    probe.own_traffic = agent.delivery.traffic.totals  # as build_probes wires it
    runner = threading.Thread(target=agent.run, kwargs={"duration": 5.0})
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    reports = [e.payload["values"] for _k, _p, events in read_events(kafka_settings, timeout=30)
               for e in events if e.kind == Kind.METRICS and e.payload.get("scope") == "host"]
    assert len(reports) >= 4
    own = sum(r.get("agent_net_bytes_out", 0.0) for r in reports)
    assert own > 0 and sum(r.get("agent_net_requests_out", 0.0) for r in reports) > 0
    # loopback counts what the agent sends to the broker, so the interface saw at least the agent's share
    assert sum(r.get("net_bytes_out", 0.0) for r in reports) >= own
