"""The osquery stage without a broker: lines in, signed telemetry out, malformed lines dead-lettered and
counted; its telemetry passes the host stage (signatures required) with no data loss reported. One short
test through the real broker runs a worker with the stage on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from stream_fakes import FakeApp, FakeTopic

from contract.events import decode_batch
from contract.signing import Status, verify
from streams import codec, osquery_stage, signals
from streams.faust_fixes import OffsetGuard
from streams.host_agent import add_host_agent
from streams.osquery_map import OsqueryHost
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.topology import Topology

DECORATIONS = {"instance_id": "i-0abc123", "ami_id": "ami-0web42"}


def result(name: str, t: int, **rest: Any) -> bytes:
    return orjson.dumps({"name": name, "hostIdentifier": "web-7", "calendarTime": "x", "unixTime": t,
                         "epoch": 0, "counter": 0, "numerics": False, "decorations": DECORATIONS, **rest})


LINES = [
    result("processes", 1772366590, snapshot=[{"pid": "1", "path": "/usr/lib/systemd/systemd",
                                               "cmdline": "/sbin/init", "uid": "0", "username": "root"}]),
    b"not json at all",
    result("process_open_sockets", 1772366600, action="added", columns={
        "pid": "812", "family": "2", "protocol": "6", "local_address": "10.0.1.7", "remote_address": "10.77.0.5",
        "local_port": "51234", "remote_port": "4444", "state": "ESTABLISHED", "exe": "/usr/bin/nc"}),
]


class FakeStream:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    async def events(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item


def message(topic: str, offset: int, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
    return SimpleNamespace(value=value, key=key, message=SimpleNamespace(
        tp=(topic, 0), topic=topic, partition=0, offset=offset, timestamp=time.time(), timestamp_type=0,
        headers=headers or []))


def topology() -> Topology:
    return Topology(FakeTopic("t.telemetry"), FakeTopic("t.observations"), FakeTopic("t.anomalies"),
                    FakeTopic("t.rollouts"), FakeTopic("t.lifecycle"), FakeTopic("t.deadletter", 1),
                    host_seq={}, host_state={}, baselines={}, rollout_state={}, members={}, host_keys={},
                    osquery=FakeTopic("t.osquery.results"), osquery_hosts={})


def test_lines_become_signed_telemetry_the_host_stage_accepts() -> None:
    ws = WorkerSettings(app_id="t", osquery=True, osquery_key_secret=SecretStr("s3cret"))
    app, topo = FakeApp(), topology()
    outputs = Outputs(topo)
    osquery_stage.add_osquery_agent(app, topo, outputs, ws, OffsetGuard())
    add_host_agent(app, topo, outputs, ws, OffsetGuard())
    dead = osquery_stage.lines_dead_lettered.value()

    asyncio.run(app.agents["osquery"](FakeStream([message("t.osquery.results", i, v)
                                                  for i, v in enumerate(LINES)])))

    [letter] = topo.deadletter.sent
    assert dict(letter["headers"])["component"] == b"streams.osquery" and letter["value"] == b"not json at all"
    assert osquery_stage.lines_dead_lettered.value() == dead + 1
    batches = topo.telemetry.sent
    assert [b["key"] for b in batches] == [b"i-0abc123", b"i-0abc123"]
    sig = verify(batches[0]["headers"], batches[0]["key"], batches[0]["value"])
    assert sig.status is Status.SIGNED
    assert OsqueryHost.from_json(topo.osquery_hosts["i-0abc123"]).seq == 1

    lost = signals.events_lost.value()
    asyncio.run(app.agents["hosts"](FakeStream([message("t.telemetry", i, b["value"], b["key"], b["headers"])
                                                for i, b in enumerate(batches)])))
    assert topo.deadletter.sent == [letter]  # nothing refused: signed, valid, in sequence
    assert signals.events_lost.value() == lost and topo.anomalies.sent == []  # no false data loss
    sent = [m for m in topo.observations.sent if codec.decode_progress(m["value"]) is None]  # not progress
    added = [f for m in sent for o in orjson.loads(m["value"])["obs"] for f in o["added"]]
    assert "dest:tcp/4444@10.77.0.0/24" in added and any(f.startswith("proc:/usr/lib/systemd") for f in added)
    details = [o.get("details", {}) for m in sent for o in orjson.loads(m["value"])["obs"]]
    assert {"raddr": "10.77.0.5", "rport": 4444, "pid": 812, "exe": "/usr/bin/nc"}.items() <= \
        next(d for d in details if d)["dest:tcp/4444@10.77.0.0/24"].items()


def test_a_worker_that_would_publish_refused_telemetry_does_not_start() -> None:
    with pytest.raises(ValueError, match="OSQUERY_KEY_SECRET"):
        osquery_stage.check_settings(WorkerSettings(app_id="t", osquery=True))
    osquery_stage.check_settings(WorkerSettings(app_id="t", osquery=True, require_signatures=False))


def test_keys_are_per_host_and_the_same_on_every_worker() -> None:
    a, b = osquery_stage.host_signer("x"), osquery_stage.host_signer("x")
    assert a("h1", b"h1", b"v") == b("h1", b"h1", b"v")
    assert dict(a("h1", b"h1", b"v"))["herdwatch-key"] != dict(a("h2", b"h2", b"v"))["herdwatch-key"]
    assert osquery_stage.host_signer(None)("h1", b"h1", b"v") == []


def test_decoded_batches_are_valid_telemetry() -> None:
    ws = WorkerSettings(app_id="t", osquery=True, require_signatures=False)
    app, topo = FakeApp(), topology()
    osquery_stage.add_osquery_agent(app, topo, Outputs(topo), ws, OffsetGuard())
    asyncio.run(app.agents["osquery"](FakeStream([message("t.osquery.results", 0, LINES[0])])))
    [batch] = topo.telemetry.sent
    events, rejected = decode_batch(batch["value"], key=batch["key"])
    assert not rejected and events[0].kind.value == "process.inventory" and batch["headers"] == []


@pytest.mark.integration
def test_worker_reads_osquery_lines_from_the_broker(stream_env_factory: Any) -> None:
    """A worker with the stage on: lines on <prefix>.osquery.results become signed telemetry of the host,
    a malformed line is dead-lettered by the osquery stage, the host stage refuses nothing."""
    from confluent_kafka import Producer
    from stream_helpers import dump_logs

    env = stream_env_factory(osquery="true", osquery_key_secret="s3cret")
    name = env.kafka.topics.osquery
    producer = Producer(env.kafka.confluent_config())
    for value in LINES:  # osquery's Kafka logger keys every message <hostname>_<logger name>
        producer.produce(name, key=b"web-7_osquery", value=value)
    telemetry, deadletter = env.topic(env.kafka.topics.telemetry), env.topic(env.kafka.topics.deadletter)
    env.start_worker()
    assert producer.flush(30) == 0
    assert telemetry.wait_for(lambda ms: len(ms) >= 2, 40), dump_logs(env)
    assert deadletter.wait_for(lambda ms: len(ms) >= 1, 10), dump_logs(env)
    deadletter.poll(1.0)
    assert [dict(m.headers())["component"] for m in deadletter.messages] == [b"streams.osquery"]
    events = [e for m in telemetry.messages for e in decode_batch(m.value(), key=m.key())[0]]
    assert [e.seq for e in events] == [0, 1] and {e.host_id for e in events} == {"i-0abc123"}
    assert all(verify(m.headers(), m.key(), m.value()).status is Status.SIGNED for m in telemetry.messages)
