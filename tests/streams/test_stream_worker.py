"""The real Faust worker (`herdwatch worker` subprocesses) against the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from stream_helpers import StreamEnv, dump_logs

from collectors.publisher import Publisher
from contract.events import Event
from simulator.keys import SIMULATED
from simulator.presets import Clones

pytestmark = pytest.mark.integration


def past_fleet(hosts: int, seconds_ago: float = 900, **kw: Any) -> Clones:
    return Clones(hosts, start=datetime.now(UTC) - timedelta(seconds=seconds_ago), **kw)


def host_findings(values: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(f["kind"], f["host_id"], f["subject"]) for f in values}


def test_misbehaving_host_is_reported_with_explanation(stream_env_factory: Any) -> None:
    env: StreamEnv = stream_env_factory()
    fleet = past_fleet(10)
    bad, lossy, leaver, silent = fleet.hosts[3], fleet.hosts[5], fleet.hosts[7], fleet.hosts[8]
    pub = Publisher(env.kafka, SIMULATED)
    for h in fleet.hosts:
        pub.publish(fleet.step(h, fleet.at(0)))
    for c in range(1, 31):
        for h in fleet.hosts:
            if h is silent and c > 3:
                continue  # stops reporting: must time out (HOST_TIMEOUT_S=120, 10 s per cycle)
            if h is leaver and c == 20:
                pub.publish(fleet.goodbye(h, fleet.at(c * 10)))
            if h is leaver and c >= 20:
                continue
            if h is bad and c == 10:
                fleet.attack(h, "cryptominer", exe="/tmp/.x/xmrig")
            events = fleet.step(h, fleet.at(c * 10))
            if h is lossy and c == 12:
                h.seq += 7  # seven events lost on the way
            pub.publish(events)
    # malformed input: not JSON at all, and one bad envelope inside an otherwise good batch
    pub.producer.produce(env.kafka.topics.telemetry, key=b"junk", value=b"{not json")
    h0, h1 = fleet.hosts[0].host_id, fleet.hosts[1].host_id
    good = fleet.step(fleet.hosts[0], fleet.at(310))
    broken = [good[0].to_dict(), {**good[1].to_dict(), "seq": "seven"}]
    value = orjson.dumps(broken)  # signed like h0's other batches: only the bad envelope is refused
    pub.producer.produce(env.kafka.topics.telemetry, key=h0.encode(), value=value,
                         headers=SIMULATED.headers(h0.encode(), value))
    stray = fleet.step(fleet.hosts[1], fleet.at(310))[:1]  # another host's event under h0's key
    pub.producer.produce(env.kafka.topics.telemetry, key=h0.encode(), value=orjson.dumps([stray[0].to_dict()]))
    assert pub.flush() == 0

    anomalies = env.topic(env.kafka.topics.anomalies)
    lifecycle = env.topic(env.kafka.topics.lifecycle)
    deadletter = env.topic(env.kafka.topics.deadletter)
    worker = env.start_worker()

    assert anomalies.wait_for(lambda ms: any(b"xmrig" in m.value() for m in ms), 90), dump_logs(env)
    assert lifecycle.wait_for(lambda ms: sum(b'"gone"' in m.value() for m in ms) >= 2, 60), dump_logs(env)
    assert deadletter.wait_for(lambda ms: len(ms) >= 3, 30), dump_logs(env)
    anomalies.poll(2.0)

    found = anomalies.values()
    miner = [f for f in found if "xmrig" in f["subject"]]
    assert miner and all(f["host_id"] == bad.host_id for f in miner)
    assert any(f["kind"] == "rare_feature" and "/tmp/.x/xmrig" in f["explanation"]
               and f"of {len(fleet.hosts)} hosts" in f["explanation"] for f in miner), miner
    others = [f for f in found if f["host_id"] != bad.host_id and f["kind"] != "data_loss"]
    assert others == [], others
    loss = [f for f in found if f["kind"] == "data_loss"]
    assert [(f["host_id"], f["details"]["missing"]) for f in loss] == [(lossy.host_id, 7)]
    for m in anomalies.messages:  # keyed by host for any Kafka client
        assert m.key().decode() == orjson.loads(m.value())["host_id"]

    life = lifecycle.values()
    ups = {e["host_id"] for e in life if e["status"] == "up"}
    assert ups == {h.host_id for h in fleet.hosts}
    gone = {e["host_id"]: e["reason"] for e in life if e["status"] == "gone"}
    assert gone == {leaver.host_id: "goodbye", silent.host_id: "timeout"}, life

    reasons = sorted(dict(m.headers())["reason"].decode().split(":")[0] for m in deadletter.messages)
    assert reasons == ["envelope field 'seq' must be int, got str",
                       f"host_id '{h1}' disagrees with the message key '{h0}'; key each message with the "
                       "host_id of its events", "not JSON"], reasons
    assert all(dict(m.headers())["component"] == b"streams.hosts" for m in deadletter.messages)
    junk = next(m for m in deadletter.messages if dict(m.headers())["reason"].startswith(b"not JSON"))
    assert junk.value() == b"{not json"  # the original bytes, untouched
    assert worker.metric("herdwatch_streams_events_dead_lettered_total") == 3
    assert worker.metric("herdwatch_streams_events_dead_lettered_total", reason="not JSON") == 1
    assert worker.metric("herdwatch_streams_events_lost_total") == 7
    assert worker.metric("herdwatch_streams_findings_total", kind="rare_feature") >= 1
    assert worker.stop() == 0  # graceful shutdown on SIGTERM


def test_rollout_gives_rollout_events_and_no_host_anomalies(stream_env_factory: Any) -> None:
    env: StreamEnv = stream_env_factory()
    fleet = past_fleet(6, seconds_ago=1200, image="ami-old")
    pub = Publisher(env.kafka, SIMULATED)
    for h in fleet.hosts:
        pub.publish(fleet.step(h, fleet.at(0)))
    fleet.add_image("ami-new", packages={"nginx": "1.26.1", "openssl": "3.0.15"})
    new_hosts: list[Any] = []
    old = list(fleet.hosts)
    rollouts = env.topic(env.kafka.topics.rollouts)
    anomalies = env.topic(env.kafka.topics.anomalies)
    for c in range(1, 61):
        t = fleet.at(c * 10)
        if c == 10:  # the old cohort is known before the rollout: its hosts were seen by the worker
            assert pub.flush() == 0
            life = env.topic(env.kafka.topics.lifecycle)
            env.start_worker()
            assert life.wait_for(lambda ms: len(ms) >= 6, 60), dump_logs(env)
        if c >= 10 and c % 3 == 0 and len(new_hosts) < 6:  # replace one old host every 30 s
            [h] = fleet.add_hosts(1, "ami-new", at=c * 10)
            new_hosts.append(h)
            pub.publish(fleet.step(h, t))
            leaving = old.pop(0)
            pub.publish(fleet.goodbye(leaving, t))
        for h in old + new_hosts:
            pub.publish(fleet.step(h, t))
    assert pub.flush() == 0

    assert rollouts.wait_for(lambda ms: any(b'"completed"' in m.value() for m in ms), 90), dump_logs(env)
    anomalies.poll(3.0)
    events = rollouts.values()
    assert events[0]["status"] == "started" and events[0]["old_image"] == "ami-old"
    assert events[0]["new_image"] == "ami-new"
    assert any("pkg:nginx=1.26.1" in e.get("diff", {}).get("added", []) for e in events), events
    assert [m.key() for m in rollouts.messages] == [b"web"] * len(events)
    assert anomalies.values() == []


def _kill_scenario(fleet: Clones) -> tuple[list[list[Event]], list[list[Event]]]:
    first: list[list[Event]] = [fleet.step(h, fleet.at(0)) for h in fleet.hosts]
    second: list[list[Event]] = []
    for c in range(1, 41):
        part = first if c <= 15 else second
        for i, h in enumerate(fleet.hosts):
            if i == 2 and c == 25:
                fleet.attack(h, "cryptominer", exe="/tmp/.x/xmrig")
            events = fleet.step(h, fleet.at(c * 10))
            if i == 4 and c == 30:
                h.seq += 3
            part.append(events)
    return first, second


def test_killed_worker_recovers_and_finds_the_same(stream_env_factory: Any) -> None:
    start = datetime.now(UTC) - timedelta(seconds=900)
    runs = {}
    losses = {}
    envs = {name: stream_env_factory() for name in ("steady", "killed")}
    batches = {name: _kill_scenario(Clones(8, start=start)) for name in envs}
    host_ids = [h.host_id for h in Clones(8, start=start).hosts]  # the same clones for the same seed
    # the uninterrupted run
    steady = envs["steady"]
    pub = Publisher(steady.kafka, SIMULATED)
    for events in batches["steady"][0] + batches["steady"][1]:
        pub.publish(events)
    pub.flush()
    steady.start_worker("steady")
    # the interrupted run: first half, worker A, second half while A runs, kill -9 A, worker B
    killed = envs["killed"]
    pub = Publisher(killed.kafka, SIMULATED)
    for events in batches["killed"][0]:
        pub.publish(events)
    pub.flush()
    life = killed.topic(killed.kafka.topics.lifecycle)
    a = killed.start_worker("a")
    assert life.wait_for(lambda ms: len(ms) >= 8, 60), dump_logs(killed)
    telemetry = killed.kafka.topics.telemetry
    deadline = time.monotonic() + 30
    while killed.committed(telemetry) < len(batches["killed"][0]) and time.monotonic() < deadline:
        time.sleep(0.2)  # B must go on from A's commits, the path a lost commit guarantee would break
    assert killed.committed(telemetry) == len(batches["killed"][0]), dump_logs(killed)
    for events in batches["killed"][1][:60]:
        pub.publish(events)
    pub.flush()
    a.kill()
    for events in batches["killed"][1][60:]:
        pub.publish(events)
    pub.flush()
    b = killed.start_worker("b")

    for name, env in envs.items():
        topic = env.topic(env.kafka.topics.anomalies)
        ok = topic.wait_for(lambda ms: any(b"xmrig" in m.value() for m in ms)
                            and any(b"data_loss" in m.value() for m in ms), 90)
        assert ok, dump_logs(env)
        topic.settle()  # metric findings need several cycles: compare what each run said in the end
        runs[name] = host_findings(topic.values())
        losses[name] = [f for f in topic.values() if f["kind"] == "data_loss"]
    life.poll(1.0)
    assert runs["killed"] == runs["steady"], (losses, dump_logs(killed))
    assert ("data_loss", host_ids[4], "seq") in runs["killed"]
    # B went on from A's commits: of what A had handled, only messages after its last commit come again
    consumed, new = b.metric("herdwatch_streams_messages_in_total"), len(batches["killed"][1]) - 60
    assert new <= consumed <= new + 60, dump_logs(killed)
    # recovered membership: B announces no host anew. Delivery is at least once, so a message A sent just
    # before the kill may come again from B, but only as the same event (storage keeps one row of it).
    ups = {(e["host_id"], e["time"]) for e in life.values() if e["status"] == "up"}
    assert sorted(host for host, _ in ups) == sorted(host_ids)


def test_a_worker_killed_while_a_lost_message_is_fetched_again_comes_back_without_a_gap(
        stream_env_factory: Any) -> None:
    """Faust can lose a fetched message; the offset guard fetches it again about two seconds later. A worker
    killed in between must not have committed past it: its successor handles it, no false data_loss."""
    env: StreamEnv = stream_env_factory()
    fleet = past_fleet(8, seconds_ago=1200)
    pub = Publisher(env.kafka, SIMULATED)
    cycle = 0

    def publish_cycle() -> None:
        nonlocal cycle
        for h in fleet.hosts:
            pub.publish(fleet.step(h, fleet.at(cycle * 10)))
        cycle += 1

    for _ in range(10):
        publish_cycle()
    assert pub.flush() == 0
    telemetry = env.kafka.topics.telemetry
    highs = env.high_watermarks(telemetry)
    partition = max(range(len(highs)), key=lambda p: highs[p])
    lost = highs[partition] // 2  # a host's message in the middle of the backlog
    a = env.start_worker("a", fault_lose_message=f"{partition}:{lost}")
    deadline = time.monotonic() + 90
    while a.proc.poll() is None and time.monotonic() < deadline:  # live traffic: acks and commits go on
        publish_cycle()
        pub.flush()
        time.sleep(0.3)
    assert a.proc.poll() == -9, dump_logs(env)
    assert "fault injection: losing" in a.log.read_text()
    assert env.committed_offsets(telemetry)[partition] <= lost, dump_logs(env)  # not past the lost message

    anomalies = env.topic(env.kafka.topics.anomalies)
    b = env.start_worker("b")
    for _ in range(3):
        publish_cycle()
    assert pub.flush() == 0
    sent = sum(env.high_watermarks(telemetry))
    deadline = time.monotonic() + 90
    while env.committed(telemetry) < sent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert env.committed(telemetry) == sent, dump_logs(env)
    anomalies.settle(quiet=3.0)
    assert [f for f in anomalies.values() if f["kind"] == "data_loss"] == [], dump_logs(env)
    assert b.metric("herdwatch_streams_events_lost_total") == 0
