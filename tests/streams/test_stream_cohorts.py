"""The cohort stage's logic with plain dicts for tables: store slicing, lifecycle, timeouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stream_helpers import Clock

from detectors.types import Observation
from streams.cohorts import CohortStage, FamilyStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_family_store_slices_and_routes_keys() -> None:
    baselines: dict[str, Any] = {"other|h|x": 1}
    rollouts: dict[str, Any] = {}
    store = FamilyStore("web", baselines, rollouts)
    store["h|host1"] = [1]
    store["r|web"] = {"status": "started"}
    assert baselines["web|h|host1"] == [1] and rollouts["web|r|web"] == {"status": "started"}
    assert sorted(store) == ["h|host1", "r|web"] and len(store) == 2
    del store["h|host1"]
    assert store.get("h|host1") is None and "other|h|x" in baselines


def make_stage(clock: Clock) -> tuple[CohortStage, dict[str, Any]]:
    members: dict[str, Any] = {}
    stage = CohortStage({}, {}, members, lambda family: 0, host_timeout_s=60, touch_interval_s=10,
                        lag_grace_s=5, wall=clock)
    return stage, members


def obs(host: str, seconds: float, **kw: Any) -> Observation:
    return Observation(host, "ami-1", "web", T0 + timedelta(seconds=seconds), **kw)


def test_lifecycle_up_and_goodbye() -> None:
    stage, members = make_stage(Clock(1000.0))
    life = stage.process([obs("a", 0, first=True, added=("proc:x",)), obs("a", 5)]).lifecycle
    assert [(e.host_id, e.status, e.reason) for e in life] == [("a", "up", "first event")]
    life = stage.process([obs("a", 20, gone=True)]).lifecycle
    assert [(e.status, e.reason) for e in life] == [("gone", "goodbye")] and members == {}
    d = life[0].to_dict()
    assert d["first_seen"].endswith("12:00:00Z") and d["last_seen"].endswith("12:00:20Z")


def test_silent_host_times_out_in_event_time_after_wall_grace() -> None:
    clock = Clock(1000.0)
    stage, members = make_stage(clock)
    stage.process([obs("a", 0, first=True), obs("b", 0, first=True)])
    for t in range(10, 100, 10):
        stage.process([obs("b", t)])
    # a is 90 s silent in event time, but it was heard from 0 s ago in wall time: a backlog, wait
    assert stage.tick(0).lifecycle == []
    clock.t += 6
    life = stage.tick(0).lifecycle
    assert [(e.host_id, e.status, e.reason) for e in life] == [("a", "gone", "timeout")]
    assert "a" not in members and "b" in members
    assert stage.engine("web").baseline.n("ami-1") == 1
