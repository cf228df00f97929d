"""HostBatch: the host stage's outputs of several telemetry messages sent together, in the order the crash
guarantees need (observations before the changelog records of the messages that produced them; a progress
message after its partition's observations; nothing lost when a send fails; everything sent before Faust
commits offsets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_fakes import FakeApp, FakeTopic

from contract.events import encode_batch
from detectors.types import Observation
from simulator.keys import SimulatedKeys
from simulator.presets import Clones
from streams import codec
from streams.faust_fixes import ChangelogBuffer, OffsetGuard, flush_before_commit
from streams.host_agent import add_host_agent
from streams.host_batch import MAX_MESSAGES, MAX_WAIT_S, HostBatch
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.stage_loop import unsent
from streams.topology import Topology

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FAMILIES = ("web", "app", "api", "cache", "batch")


class Log:
    """What reached Kafka, in order: ("obs", partition, [host, ...]), ("progress", partition), ("changelog", key)."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.fail_next = 0


class Topic:
    def __init__(self, log: Log) -> None:
        self.log = log

    async def send(self, value: bytes, partition: int) -> None:
        await asyncio.sleep(0)  # a real send yields to the loop
        if self.log.fail_next:
            self.log.fail_next -= 1
            raise ConnectionError("broker gone")
        if codec.decode_progress(value) is not None:
            self.log.entries.append(("progress", partition))
        else:
            obs, _ = codec.decode(value)
            self.log.entries.append(("obs", partition, [o.host_id for o in obs]))


class Table(dict[str, Any]):
    """A Faust table's two halves: its in-memory data and its changelog."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log
        self.data = self

    def send_changelog(self, partition: int, key: str, value: Any) -> None:
        self.log.entries.append(("changelog", key, value))


def observation(host: str, family: str, i: int) -> Observation:
    return Observation(host, f"ami-{family}", family, T0 + timedelta(seconds=i), metrics={"cpu_pct": float(i)})


def partition_of(family: str) -> int:
    return FAMILIES.index(family) % 3


def test_observations_go_before_the_changelog_records_of_their_messages() -> None:
    async def scenario() -> None:
        log = Log()
        batch, table = HostBatch(Topic(log), partition_of), Table(log)
        for i, family in enumerate(FAMILIES * 2):
            host = f"h{i}"
            batch.set(table, 0, host, {"seq": i})
            batch.add([observation(host, family, i)])
            batch.handled()
            assert table[host] == {"seq": i}  # the next message of the host reads it at once
        assert log.entries == []
        await batch.send()
        kinds = [e[0] for e in log.entries]
        assert kinds == ["obs"] * 3 + ["changelog"] * 10
        sent = [h for e in log.entries if e[0] == "obs" for h in e[2]]
        assert sorted(sent) == sorted(f"h{i}" for i in range(10))
        for e in log.entries:  # each observations message holds its partition's hosts, in order
            if e[0] == "obs":
                assert all(partition_of(FAMILIES[int(h[1:]) % 5]) == e[1] for h in e[2])
                assert e[2] == sorted(e[2], key=lambda h: int(h[1:]))

    asyncio.run(scenario())


def test_only_the_latest_value_of_a_key_is_written() -> None:
    async def scenario() -> None:
        log = Log()
        batch, table = HostBatch(Topic(log), partition_of), Table(log)
        for i in range(5):
            batch.set(table, 0, "h1", {"seq": i})
            batch.handled()
        await batch.send()
        assert log.entries == [("changelog", "h1", {"seq": 4})]

    asyncio.run(scenario())


def test_a_progress_message_follows_its_partitions_observations() -> None:
    async def scenario() -> None:
        log = Log()
        batch = HostBatch(Topic(log), partition_of)
        batch.add([observation("h1", "web", 1), observation("h2", "app", 2)])
        batch.handled()
        await batch.send_progress(partition_of("web"), codec.encode_progress(0, 2.0))
        assert log.entries == [("obs", partition_of("web"), ["h1"]), ("progress", partition_of("web"))]
        await batch.send()
        assert log.entries[-1] == ("obs", partition_of("app"), ["h2"])

    asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(FAMILIES)), min_size=1, max_size=40),
       st.integers(1, 3))
def test_a_failed_send_loses_nothing_and_writes_no_changelog_first(messages: list[tuple[int, str]],
                                                                   failures: int) -> None:
    async def scenario() -> None:
        log = Log()
        batch, table = HostBatch(Topic(log), partition_of), Table(log)
        for i, (host, family) in enumerate(messages):
            batch.set(table, 0, f"h{host}", {"seq": i})
            batch.add([observation(f"h{host}", family, i)])
            batch.handled()
        log.fail_next = failures
        for _ in range(failures):
            with pytest.raises(ConnectionError):
                await batch.send()
            assert not any(e[0] == "changelog" for e in log.entries)
            assert batch.due(idle=True)
        await batch.send()
        sent = [(e[1], h) for e in log.entries if e[0] == "obs" for h in e[2]]
        expected = [(partition_of(f), f"h{h}") for h, f in messages]
        assert sorted(sent) == sorted(expected)  # every observation, once
        for q in {q for q, _ in expected}:  # in order within each partition
            assert [h for p, h in sent if p == q] == [h for p, h in expected if p == q]
        first_changelog = min(i for i, e in enumerate(log.entries) if e[0] == "changelog")
        assert all(e[0] == "changelog" for e in log.entries[first_changelog:])
        assert {e[1]: e[2] for e in log.entries if e[0] == "changelog"} == dict(table)

    asyncio.run(scenario())


def test_what_is_added_during_a_send_waits_for_the_next() -> None:
    async def scenario() -> None:
        log = Log()
        batch, table = HostBatch(Topic(log), partition_of), Table(log)
        batch.set(table, 0, "h1", {"seq": 1})
        batch.add([observation("h1", "web", 1)])
        batch.handled()
        sending = asyncio.ensure_future(batch.send())
        await asyncio.sleep(0)  # the send is under way
        batch.set(table, 0, "h2", {"seq": 2})
        batch.add([observation("h2", "web", 2)])
        batch.handled()
        await sending
        assert log.entries == [("obs", partition_of("web"), ["h1"]), ("changelog", "h1", {"seq": 1})]
        await batch.send()
        assert log.entries[2:] == [("obs", partition_of("web"), ["h2"]), ("changelog", "h2", {"seq": 2})]

    asyncio.run(scenario())


def test_due_when_idle_full_or_old() -> None:
    now = [0.0]
    batch = HostBatch(None, partition_of, clock=lambda: now[0])
    assert not batch.due(idle=True)  # nothing pending
    batch.handled()
    assert batch.due(idle=True) and not batch.due(idle=False)
    now[0] = MAX_WAIT_S
    assert batch.due(idle=False)
    batch = HostBatch(None, partition_of, clock=lambda: now[0])
    for _ in range(MAX_MESSAGES):
        batch.handled()
    assert batch.due(idle=False)


def test_a_plain_mapping_is_written_at_once() -> None:
    batch, table = HostBatch(None, partition_of), dict[str, Any]()
    batch.set(table, 0, "h1", 1)
    assert table == {"h1": 1} and batch.writes == {}


def test_the_changelog_buffer_sends_what_is_kept_back_before_waiting_for_acknowledgements() -> None:
    async def scenario() -> None:
        buffer = ChangelogBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
        log = Log()
        batch, table = HostBatch(Topic(log), partition_of), Table(log)
        flush_before_commit(SimpleNamespace(producer=SimpleNamespace(buffer=buffer)), batch.send)
        batch.set(table, 0, "h1", {"seq": 1})
        batch.add([observation("h1", "web", 1)])
        batch.handled()
        await buffer.flush()  # what Faust does before committing offsets
        assert [e[0] for e in log.entries] == ["obs", "changelog"]

    asyncio.run(scenario())


def test_observation_messages_decode_as_before() -> None:
    value = codec.encode_observations([observation("h1", "web", 1), observation("h2", "app", 2)])
    obs, tick = codec.decode(value)
    assert tick is None and [o.host_id for o in obs] == ["h1", "h2"]
    assert orjson.loads(value).keys() == {"obs"}


def test_the_hosts_agent_keeps_outputs_back_while_fetched_messages_wait_and_sends_at_the_high_water_mark() -> None:
    tp = TP("t.telemetry", 0)
    app = FakeApp()
    high = {"offset": 12}
    app.consumer = SimpleNamespace(_committed_offset={}, assignment=lambda: {tp},
                                   highwater=lambda _tp: high["offset"])
    topo = Topology(FakeTopic("t.telemetry"), FakeTopic("t.observations"), FakeTopic("t.anomalies"),
                    FakeTopic("t.rollouts"), FakeTopic("t.lifecycle"), FakeTopic("t.deadletter", 1),
                    host_seq={}, host_state={}, baselines={}, rollout_state={}, members={}, host_keys={})
    add_host_agent(app, topo, Outputs(topo), WorkerSettings(app_id="t"), OffsetGuard())
    keys = SimulatedKeys(b"fleet")
    clones = Clones(4, start=T0)
    items = []
    for i in range(12):  # three cycles of four hosts, each one message with its first or next batch
        h = clones.hosts[i % 4]
        events = clones.step(h, T0 + timedelta(seconds=30 * (i // 4)))
        key, value = h.host_id.encode(), encode_batch(events)
        items.append(SimpleNamespace(value=value, key=key, message=SimpleNamespace(
            tp=tp, topic="t.telemetry", partition=0, offset=i, timestamp=T0.timestamp() + 30 * (i // 4),
            timestamp_type=0, headers=keys.headers(key, value))))

    class Stream:
        def __init__(self, part: list[Any]) -> None:
            self.part = part

        async def events(self) -> AsyncIterator[Any]:
            for item in self.part:
                yield item

    def messages() -> list[bytes]:
        return [m["value"] for m in topo.observations.sent if codec.decode_progress(m["value"]) is None]

    def observed() -> list[str]:
        return [o.host_id for value in messages() for o in codec.decode(value)[0]]

    asyncio.run(app.agents["hosts"](Stream(items[:11])))
    # 11 of 12 fetched messages handled: kept back (but for the first, sent before the partition's first sweep)
    assert set(observed()) <= {clones.hosts[0].host_id} and len(messages()) <= 1
    assert len(topo.host_seq) == 4  # the tables have them (a plain mapping is written at once)
    asyncio.run(app.agents["hosts"](Stream(items[11:])))
    assert len(observed()) >= 12 and len(messages()) <= 2  # few messages, every host's changes
    assert set(observed()) == {h.host_id for h in clones.hosts}


def test_a_partition_with_observations_kept_back_is_unsent_until_they_are_sent() -> None:
    async def scenario() -> None:
        log = Log()
        batch = HostBatch(Topic(log), partition_of)
        a, b = TP("t.unsent", 0), TP("t.unsent", 1)
        batch.add([observation("h1", "web", 1)])
        batch.handled(a)
        assert a in unsent  # the cohort stage's low watermark does not count it caught up
        log.fail_next = 1
        with pytest.raises(ConnectionError):
            await batch.send()
        assert a in unsent
        sending = asyncio.ensure_future(batch.send())
        await asyncio.sleep(0)
        batch.add([observation("h2", "web", 2)])
        batch.handled(b)  # arrives while the send is under way: its observations wait
        await sending
        assert a not in unsent and b in unsent
        await batch.send()
        assert b not in unsent

    asyncio.run(scenario())
