"""The cohort stage's table changes are in memory at once and reach the changelogs as one record per changed
key (its latest value, or a deletion) before Faust commits offsets; with deferred records the stage judges
exactly as it did with a record per assignment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from stream_fakes import FakeApp, FakeTopic

from detectors.types import Observation
from streams import codec
from streams.cohort_agent import add_cohort_agent
from streams.faust_fixes import ChangelogBuffer, OffsetGuard
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.table_writes import DeferredTable, TableWrites, deferred
from streams.topology import Topology

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FaustTable(dict[str, Any]):
    """A Faust table's two halves: assigning to it writes a changelog record at once (what Faust does);
    `data` is its in-memory store, `send_changelog` its changelog."""

    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.data: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.send_changelog(0, key, value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.send_changelog(0, key, None, value_serializer="raw")

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def send_changelog(self, partition: int, key: str, value: Any, value_serializer: str | None = None) -> None:
        assert (value is None) == (value_serializer == "raw")  # a deletion is a tombstone, as Faust sends it
        self.log.append((self.name, partition, key, value))


def test_changes_are_seen_at_once_and_written_once_per_key() -> None:
    log: list[tuple[Any, ...]] = []
    writes = TableWrites()
    table = FaustTable("members", log)
    members = deferred(table, writes)
    assert isinstance(members, DeferredTable)
    writes.partition = 3
    members["a"] = {"v": 1}
    members["b"] = {"v": 1}
    members["a"] = {"v": 2}
    writes.partition = 5
    members["c"] = {"v": 1}
    del members["b"]
    assert dict(members) == {"a": {"v": 2}, "c": {"v": 1}} and "b" not in members and members.get("b") is None
    assert log == [] and len(writes) == 3
    writes.send()  # each key once, with its latest value and the partition of its latest change
    assert log == [("members", 3, "a", {"v": 2}), ("members", 5, "b", None), ("members", 5, "c", {"v": 1})]
    writes.send()
    assert len(log) == 3  # sent once
    with pytest.raises(KeyError):
        del members["b"]


def test_a_plain_mapping_is_used_as_it_is() -> None:
    plain: dict[str, Any] = {}
    assert deferred(plain, TableWrites()) is plain


class FakeStream:
    def __init__(self, values: list[bytes], partition: int) -> None:
        self.items = [SimpleNamespace(value=v, key=None, message=SimpleNamespace(
            tp=("t.observations", partition), topic="t.observations", partition=partition, offset=i))
            for i, v in enumerate(values)]

    async def events(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item


def run_stage(tables: dict[str, Any], messages: list[bytes], buffer: ChangelogBuffer | None = None) -> Topology:
    app = FakeApp()
    if buffer is not None:
        app.producer = SimpleNamespace(buffer=buffer)  # type: ignore[attr-defined]
    topo = Topology(FakeTopic("t.telemetry"), FakeTopic("t.observations"), FakeTopic("t.anomalies"),
                    FakeTopic("t.rollouts"), FakeTopic("t.lifecycle"), FakeTopic("t.deadletter", 1),
                    host_seq={}, host_state={}, **tables)
    stage = add_cohort_agent(app, topo, Outputs(topo), WorkerSettings(app_id="t"), OffsetGuard())
    stage.partition_of = lambda family: 2
    asyncio.run(app.agents["cohorts"](FakeStream(messages, 2)))
    return topo


def cohort_traffic() -> list[bytes]:
    """Four clones reporting metrics and features for a while; one runs something the others do not, and
    one leaves."""
    messages = []
    for i in range(40):
        batch = []
        for h in range(4):
            host = f"h{h}"
            t = T0 + timedelta(seconds=30 * i + h)
            if h == 3 and i == 30:
                batch.append(Observation(host, "ami-1", "web", t, gone=True))
                continue
            if h == 3 and i > 30:
                continue
            added = ("proc:/usr/sbin/nginx",) if i == 0 else ("proc:/tmp/xmrig",) if (h, i) == (1, 20) else ()
            cpu = 95.0 if h == 2 and i >= 25 else 10.0 + h
            batch.append(Observation(host, "ami-1", "web", t, added=added, first=i == 0,
                                     metrics={"cpu_pct": cpu, "mem_pct": 40.0}))
        messages.append(codec.encode_observations(batch))
        if i % 5 == 4:
            messages.append(codec.encode_tick((T0 + timedelta(seconds=30 * i + 20)).timestamp()))
    return messages


def test_deferred_records_change_nothing_the_stage_says_and_end_in_the_same_tables() -> None:
    messages = cohort_traffic()
    names = ("baselines", "rollout_state", "members")
    plain: dict[str, dict[str, Any]] = {name: {} for name in names}  # no changelog: nothing deferred
    said_plain = run_stage(plain, messages)

    log: list[tuple[Any, ...]] = []
    tables = {name: FaustTable(name, log) for name in names}
    buffer = ChangelogBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    said = run_stage(tables, messages, buffer)  # type: ignore[arg-type]

    def outputs(topo: Topology) -> list[Any]:
        return [orjson.loads(m["value"]) for t in (topo.anomalies, topo.lifecycle, topo.rollouts)
                for m in t.sent]  # type: ignore[attr-defined]

    assert outputs(said) == outputs(said_plain)
    assert any(o.get("kind") == "rare_feature" for o in outputs(said))
    assert any(o.get("status") == "gone" for o in outputs(said))
    for name, table in tables.items():
        assert table.data == plain[name]
    assert log == []  # nothing written before the commit
    asyncio.run(buffer.flush())  # what Faust does before committing offsets
    written = {(name, key): value for name, _, key, value in log}
    assert len(written) == len(log)  # one record per key
    assert {p for _, p, _, _ in log} == {2}  # the partition of the messages that changed them
    for name, table in tables.items():
        assert {k: v for (n, k), v in written.items() if n == name and v is not None} == table.data
    assert ("members", "h3") in written and written[("members", "h3")] is None  # h3 left: a tombstone
