"""Impersonation end to end, on the real broker with a real `herdwatch worker` and the real sink: a second
producer sends a forged huge-seq batch and a forged goodbye for a live host. Both the worker and the sink
dead-letter them (counted), the worker publishes an identity_conflict finding, and the real host's later
events are processed and stored; after a sink restart the pin still holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from stream_helpers import StreamEnv, dump_logs

from collectors.publisher import Publisher
from contract.settings import StorageSettings
from contract.signing import fingerprint
from simulator.keys import SIMULATED, SimulatedKeys
from simulator.presets import Clones
from storage.client import connect
from storage.schema import migrate
from storage.settings import SinkSettings
from storage.sink import Sink

pytestmark = pytest.mark.integration

FORGER = SimulatedKeys(b"not the real host")


def run_sink(env: StreamEnv, storage: StorageSettings) -> Sink:
    client = connect(storage)
    settings = SinkSettings(batch_size=500, batch_timeout=0.3, group_id=f"{env.kafka.topic_prefix}-sink")
    migrate(client, settings)
    sink = Sink(client, env.kafka, settings)
    sink.run(until_idle=3)
    return sink


def test_forged_goodbye_and_seq_are_refused_by_worker_and_sink(stream_env_factory: Any,
                                                               storage_settings: StorageSettings) -> None:
    env: StreamEnv = stream_env_factory()
    fleet = Clones(3, start=datetime.now(UTC) - timedelta(seconds=600))
    h = fleet.hosts[0]
    real = Publisher(env.kafka, SIMULATED)  # the simulated hosts sign with their own (simulation) keys
    forger = Publisher(env.kafka, signer=FORGER)
    sent: dict[str, int] = {}

    def cycle(c: int) -> None:
        for host in fleet.hosts:
            events = fleet.step(host, fleet.at(c * 10))
            real.publish(events)
            sent[host.host_id] = sent.get(host.host_id, 0) + len(events)

    for c in range(3):
        cycle(c)
    assert real.flush() == 0
    # another producer claims h: a batch with a huge seq, then a goodbye
    real_seq = h.seq
    forged_seq = [e.replace(seq=2**62 + i) for i, e in enumerate(fleet.step(h, fleet.at(35)))]
    forger.publish(forged_seq)
    forger.publish(fleet.goodbye(h, fleet.at(36)))
    assert forger.flush() == 0
    h.seq = real_seq  # the real host goes on with its own sequence
    for c in range(4, 7):
        cycle(c)
    assert real.flush() == 0
    total_real = sum(sent.values())

    anomalies, lifecycle = env.topic(env.kafka.topics.anomalies), env.topic(env.kafka.topics.lifecycle)
    deadletter = env.topic(env.kafka.topics.deadletter)
    worker = env.start_worker()
    assert anomalies.wait_for(lambda ms: any(b"identity_conflict" in m.value() for m in ms), 90), dump_logs(env)
    assert deadletter.wait_for(lambda ms: len(ms) >= 2, 30), dump_logs(env)

    def events_in() -> float:
        return worker.metric("herdwatch_streams_events_in_total")

    assert lifecycle.wait_for(lambda ms: events_in() >= total_real, 60), (events_in(), total_real, dump_logs(env))
    lifecycle.poll(2.0)
    anomalies.poll(1.0)

    real_fp, forged_fp = (fingerprint(k.key_for(h.host_id.encode()).public) for k in (SIMULATED, FORGER))
    [conflict] = [f for f in anomalies.values() if f["kind"] == "identity_conflict"]
    assert conflict["host_id"] == h.host_id
    assert (conflict["details"]["pinned"], conflict["details"]["offered"]) == (real_fp, forged_fp)
    assert not [f for f in anomalies.values() if f["kind"] == "data_loss"]  # the forged seq moved nothing
    assert not [e for e in lifecycle.values() if e["status"] == "gone"]  # the forged goodbye did nothing
    worker_dead = [m for m in deadletter.messages if dict(m.headers())["component"] == b"streams.hosts"]
    assert len(worker_dead) == 2
    assert all(dict(m.headers())["reason"].startswith(b"identity conflict") for m in worker_dead)
    assert worker.metric("herdwatch_streams_events_dead_lettered_total", reason="identity conflict") == 2
    assert events_in() == total_real  # every real event, none of the forged ones
    assert worker.metric("herdwatch_streams_events_duplicate_total") == 0

    sink = run_sink(env, storage_settings)
    assert sink.stats.identity_refused == 2 and sink.stats.dead_lettered == 2
    client = connect(storage_settings)
    stored = dict(client.query("SELECT host_id, count() FROM events GROUP BY host_id").result_rows)
    assert stored == sent
    assert client.query("SELECT max(seq), countIf(kind = 'agent.goodbye') FROM events WHERE host_id = {h:String}",
                        parameters={"h": h.host_id}).result_rows[0] == (h.seq - 1, 0)
    assert client.query("SELECT gone_at FROM host_lifecycle WHERE host_id = {h:String}",
                        parameters={"h": h.host_id}).result_rows[0][0] is None
    pins = dict(client.query("SELECT host_id, any(fingerprint) FROM host_keys GROUP BY host_id").result_rows)
    assert pins == {host.host_id: fingerprint(SIMULATED.key_for(host.host_id.encode()).public)
                    for host in fleet.hosts}

    # the sink restarts: the pin still holds against a new forgery
    forger.publish(fleet.goodbye(h, fleet.at(80)))
    assert forger.flush() == 0
    again = run_sink(env, storage_settings)
    assert again.stats.identity_refused == 1
    assert client.query("SELECT countIf(kind = 'agent.goodbye') FROM events WHERE host_id = {h:String}",
                        parameters={"h": h.host_id}).result_rows[0][0] == 0
    deadletter.wait_for(lambda ms: sum(dict(m.headers())["component"] == b"sink" for m in ms) >= 3, 20)
    sink_dead = [m for m in deadletter.messages if dict(m.headers())["component"] == b"sink"]
    assert len(sink_dead) == 3
    assert all(dict(m.headers())["reason"].startswith(b"identity conflict") for m in sink_dead)
    assert all(orjson.loads(m.value()) for m in sink_dead)  # the refused batches' own bytes
    assert worker.stop() == 0
