"""The cohort stage's logic: one FamilyEngine per image family over Faust tables, plus host lifecycle.

Tables (all written while processing a message of the family's observations partition, so every key of
one family lives in that partition's changelog):

    baselines["<family>|<engine key>"]   the engine's durable state: many small values (see detectors)
    rollouts["<family>|r|<family>"]       the engine's rollout state ("r|" keys) for that family
    members[host]                         [family, image, first_seen, last_seen] of every live host

`last_seen` in members is refreshed at most every `touch_interval_s`, so lifecycle times are that precise.
Time is event time: per family the stage keeps the newest event time it saw and lets it advance with the
wall clock while the family is silent, so hosts that stop reporting still time out. A host times out when
it has been silent for `host_timeout_s` of event time *and* nothing arrived from it for `lag_grace_s` of
wall time: while a worker catches up on a backlog, some partitions run ahead of others in event time, and
hosts on the slower ones must not be declared gone for that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from contract.findings import Finding, RolloutEvent
from detectors import FamilyEngine
from detectors.types import Observation
from streams import signals

log = logging.getLogger("herdwatch.streams")

Output = Finding | RolloutEvent


class FamilyStore(MutableMapping[str, Any]):
    """One family's slice of the cohort tables, as the MutableMapping FamilyEngine keeps its state in."""

    def __init__(self, family: str, baselines: MutableMapping[str, Any],
                 rollouts: MutableMapping[str, Any]) -> None:
        self.prefix = f"{family}|"
        self.baselines = baselines
        self.rollouts = rollouts

    def _table(self, key: str) -> MutableMapping[str, Any]:
        return self.rollouts if key.startswith("r|") else self.baselines

    def __getitem__(self, key: str) -> Any:
        return self._table(key)[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._table(key)[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self._table(key)[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        for table in (self.baselines, self.rollouts):
            for key in list(table.keys()):
                if key.startswith(self.prefix):
                    yield key[n:]

    def __len__(self) -> int:
        return sum(1 for _ in self)


def lifecycle_event(host: str, image: str, family: str, status: str, t: float, first: float, last: float,
                    reason: str) -> dict[str, Any]:
    def iso(x: float) -> str:
        return datetime.fromtimestamp(x, UTC).isoformat().replace("+00:00", "Z")

    return {"host_id": host, "image_id": image, "image_family": family, "status": status, "time": iso(t),
            "first_seen": iso(first), "last_seen": iso(last), "reason": reason}


class CohortStage:
    """Feeds observations to their family's engine and keeps the members table (host lifecycle)."""

    def __init__(self, baselines: MutableMapping[str, Any], rollouts: MutableMapping[str, Any],
                 members: MutableMapping[str, Any], partition_of: Callable[[str], int],
                 host_timeout_s: float, touch_interval_s: float, engine_config: dict[str, Any] | None = None,
                 lag_grace_s: float = 30.0, wall: Callable[[], float] = time.time) -> None:
        self.baselines = baselines
        self.rollouts = rollouts
        self.members = members
        self.partition_of = partition_of
        self.host_timeout_s = host_timeout_s
        self.touch_interval_s = touch_interval_s
        self.lag_grace_s = lag_grace_s
        # Timeouts are decided here (they need lifecycle events), never by the engine on its own.
        self.engine_config = {**(engine_config or {}), "host_timeout_s": float("inf")}
        self.wall = wall
        self.heard: dict[str, float] = {}
        """host -> wall time its last observation arrived (memory only; a restart grants a fresh grace)."""
        self.engines: dict[str, FamilyEngine] = {}
        self.clock: dict[str, tuple[float, float]] = {}
        """family -> (newest event time seen, wall time when it was seen)."""

    def reset(self) -> None:
        """Forget cached engines (after a rebalance the tables are the truth)."""
        self.engines.clear()

    def engine(self, family: str) -> FamilyEngine:
        e = self.engines.get(family)
        if e is None:
            e = self.engines[family] = FamilyEngine(FamilyStore(family, self.baselines, self.rollouts),
                                                    **self.engine_config)
        return e

    def now(self, family: str) -> float:
        t, seen = self.clock.get(family, (0.0, 0.0))
        return t + max(0.0, self.wall() - seen)

    def _run(self, family: str, fn: Callable[[], list[Output]]) -> list[Output]:
        try:
            return fn()
        except Exception:  # one bad observation must not stop the worker
            log.exception("detectors failed for family %s", family)
            signals.engine_errors.emit(stage="cohorts")
            return []

    def process(self, observations: list[Observation]) -> tuple[list[Output], list[dict[str, Any]]]:
        out: list[Output] = []
        life: list[dict[str, Any]] = []
        for obs in observations:
            family, host = obs.image_family, obs.host_id
            t = obs.time.timestamp()
            if t > self.clock.get(family, (0.0, 0.0))[0]:
                self.clock[family] = (t, self.wall())
            self.heard[host] = self.wall()
            rec = self.members.get(host)
            if obs.gone:
                if rec is not None:
                    del self.members[host]
                    life.append(lifecycle_event(host, rec[1], rec[0], "gone", t, rec[2], t, "goodbye"))
            elif rec is None or rec[1] != obs.image_id:
                self.members[host] = [family, obs.image_id, t, t]
                life.append(lifecycle_event(host, obs.image_id, family, "up", t, t, t,
                                            "first event" if rec is None else f"re-imaged from {rec[1]}"))
            elif t - rec[3] >= self.touch_interval_s:
                self.members[host] = [rec[0], rec[1], rec[2], t]
            engine = self.engine(family)
            out += self._run(family, lambda e=engine, o=obs: e.process(o))  # type: ignore[misc]
        return out, life

    def tick(self, partition: int) -> tuple[list[Output], list[dict[str, Any]]]:
        """Time out silent hosts and run every engine's periodic work, for the families of `partition`."""
        silent: dict[str, list[tuple[str, list[Any]]]] = {}
        families = {f for f in self.engines if self.partition_of(f) == partition}
        for host, rec in list(self.members.items()):
            family = rec[0]
            if self.partition_of(family) != partition:
                continue
            families.add(family)
            if family not in self.clock:  # after a restart: start the family's clock at its newest host
                self.clock[family] = (rec[3], self.wall())
            elif rec[3] > self.clock[family][0]:
                self.clock[family] = (rec[3], self.clock[family][1])
            silent.setdefault(family, []).append((host, rec))
        out: list[Output] = []
        life: list[dict[str, Any]] = []
        for family in sorted(families):
            now = self.now(family)
            engine = self.engine(family)
            wall = self.wall()
            for host, rec in silent.get(family, ()):
                heard = self.heard.setdefault(host, wall)
                if now - rec[3] > self.host_timeout_s and wall - heard > self.lag_grace_s:
                    del self.members[host]
                    self.heard.pop(host, None)
                    life.append(lifecycle_event(host, rec[1], family, "gone", now, rec[2], rec[3], "timeout"))
                    gone = Observation(host, rec[1], family, datetime.fromtimestamp(now, UTC), gone=True)
                    out += self._run(family, lambda e=engine, o=gone: e.process(o))  # type: ignore[misc]
            out += self._run(family, lambda e=engine, t=now: e.tick(t))  # type: ignore[misc]
        return out, life
