"""The agents' handlers without a broker: a stand-in app records what they send.

The cohort stage dead-letters an observation the detectors fail on, like the host stage dead-letters
malformed telemetry, and goes on with the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from stream_fakes import FakeApp, FakeTopic

from detectors.types import Observation
from streams import codec, signals
from streams.cohort_agent import add_cohort_agent
from streams.cohorts import CohortStage
from streams.faust_fixes import OffsetGuard
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.topology import Topology

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeStream:
    def __init__(self, values: list[bytes], topic: str) -> None:
        self.items = [SimpleNamespace(value=v, key=b"web", message=SimpleNamespace(
            tp=(topic, 0), topic=topic, partition=0, offset=i)) for i, v in enumerate(values)]

    async def events(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item


def fake_topology() -> Topology:
    return Topology(FakeTopic("t.telemetry"), FakeTopic("t.observations"), FakeTopic("t.anomalies"),
                    FakeTopic("t.rollouts"), FakeTopic("t.lifecycle"), FakeTopic("t.deadletter", 1),
                    host_seq={}, host_state={}, baselines={}, rollout_state={}, members={})


class FailsFor:
    """An engine that raises on one host's observations and otherwise does what the real one does."""

    def __init__(self, inner: Any, host: str) -> None:
        self.inner, self.host = inner, host

    def process(self, obs: Observation) -> Any:
        if obs.host_id == self.host:
            raise ValueError(f"cannot score {obs.host_id}")
        return self.inner.process(obs)

    def tick(self, now: Any) -> Any:
        return self.inner.tick(now)


def obs(host: str, seconds: float, **kw: Any) -> Observation:
    return Observation(host, "ami-1", "web", T0 + timedelta(seconds=seconds), **kw)


def test_an_observation_the_engine_fails_on_is_dead_lettered_and_the_stage_goes_on() -> None:
    app, topo = FakeApp(), fake_topology()
    stage: CohortStage = add_cohort_agent(app, topo, Outputs(topo), WorkerSettings(app_id="t"), OffsetGuard())
    stage.engines["web"] = FailsFor(stage.engine("web"), "bad")  # type: ignore[assignment]
    bad = obs("bad", 0, first=True, added=("proc:/tmp/x",))
    messages = [codec.encode_observations([obs("a", 0, first=True), bad, obs("b", 0, first=True)]),
                codec.encode_observations([obs("c", 5, first=True)])]
    errors = signals.engine_errors.value(stage="cohorts")
    dead = signals.events_dead_lettered.value(reason="detectors failed")

    asyncio.run(app.agents["cohorts"](FakeStream(messages, "t.observations")))

    [letter] = topo.deadletter.sent
    headers = dict(letter["headers"])
    assert headers["component"] == b"streams.cohorts" and headers["source"] == b"t.observations"
    assert headers["reason"] == b"detectors failed: ValueError('cannot score bad')"
    assert letter["key"] == b"t.observations:0:0"
    assert codec.decode(letter["value"]) == ([bad], None)  # an observations message: it can be replayed
    assert signals.engine_errors.value(stage="cohorts") == errors + 1
    assert signals.events_dead_lettered.value(reason="detectors failed") == dead + 1
    # the rest of the message and the next message were processed
    ups = [orjson.loads(m["value"])["host_id"] for m in topo.lifecycle.sent]
    assert ups == ["a", "bad", "b", "c"]
    assert stage.engine("web").inner.baseline.n("ami-1") == 3  # type: ignore[attr-defined]


def test_a_tick_the_engine_fails_on_is_dead_lettered_too() -> None:
    app, topo = FakeApp(), fake_topology()
    stage = add_cohort_agent(app, topo, Outputs(topo), WorkerSettings(app_id="t"), OffsetGuard())
    stage.partition_of = lambda family: 0

    class TickFails(FailsFor):
        def tick(self, now: Any) -> Any:
            raise RuntimeError("tick broke")

    stage.engines["web"] = TickFails(stage.engine("web"), "nobody")  # type: ignore[assignment]
    messages = [codec.encode_observations([obs("a", 0, first=True)]), codec.encode_tick(1772366400.0),
                codec.encode_observations([obs("a", 10)])]
    asyncio.run(app.agents["cohorts"](FakeStream(messages, "t.observations")))
    [letter] = topo.deadletter.sent
    assert dict(letter["headers"])["reason"].startswith(b"detectors failed on tick: RuntimeError")
    assert letter["key"] == b"t.observations:0:1"
    assert orjson.loads(letter["value"])["image_family"] == "web"
