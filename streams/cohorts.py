"""The cohort stage's logic: one FamilyEngine per image family over Faust tables, plus host lifecycle.

Tables (all written while processing a message of the family's observations partition, so every key of
one family lives in that partition's changelog):

    baselines["<family>|<engine key>"]   the engine's durable state: many small values (see detectors)
    rollouts["<family>|r|<family>"]       the engine's rollout state ("r|" keys) for that family
    members[host]                         Member.to_json(): family, image, first/last seen of a live host

`last_seen` in members is refreshed at most every `touch_interval_s`, so lifecycle times are that precise.
Time is event time: per family the stage keeps the newest event time it saw and lets it advance with the
wall clock while the family is silent, so hosts that stop reporting still time out. A host times out when
it has been silent for `host_timeout_s` of event time *and* nothing arrived from it for `lag_grace_s` of
wall time: while a worker catches up on a backlog, some partitions run ahead of others in event time, and
hosts on the slower ones must not be declared gone for that.

Judgements wait for the low watermark: per telemetry partition (a host's partition follows from its id)
the stage keeps the newest event time its observations brought, per observations partition (each is read
at its own pace); the watermark is the least of them over the telemetry partitions still behind. A
partition is caught up when this worker owns it, its host stage has handled everything up to the
high-water mark and the observations topic has been read to its end; one this worker does not own holds
the watermark back only
while its observations keep arriving (for lag_grace_s of wall time after the last). Pending rare
features, configuration grace, rollout progress and host timeouts are judged at the smaller of the
family's time and the watermark, so a backlog read partition by partition, out of event-time order, is
judged as if it had been read in order.

An observation the engine fails on does not stop the stage: it is returned in `CohortResult.failed`, and
the agent sends it to the dead-letter topic.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from contract.findings import Finding, FindingKind, HostLifecycle, RolloutEvent, Severity
from detectors import EngineConfig, FamilyEngine
from detectors.types import Observation
from streams.checks_data import engine_inputs
from streams.osv_data import osv_source

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


@dataclass(frozen=True, slots=True)
class Member:
    """A live host of a family: the members table's value (JSON via to_json / from_json)."""

    image_family: str
    image_id: str
    first_seen: float
    """Event time (epoch seconds) the host joined."""
    last_seen: float
    """Event time it was last heard of (refreshed at most every touch_interval_s)."""
    seq_written: int = -1
    """The highest seq the host announced written (heartbeat/goodbye), as the host stage last reported it."""
    seq_received: int = -1
    """The last seq of the host the host stage had received then."""

    def to_json(self) -> dict[str, Any]:
        return {"image_family": self.image_family, "image_id": self.image_id, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "seq_written": self.seq_written, "seq_received": self.seq_received}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Member:
        return cls(image_family=str(d["image_family"]), image_id=str(d["image_id"]),
                   first_seen=float(d["first_seen"]), last_seen=float(d["last_seen"]),
                   seq_written=int(d.get("seq_written", -1)), seq_received=int(d.get("seq_received", -1)))

    @property
    def missing(self) -> int:
        """Events announced written but not received: lost if the host ends now without goodbye."""
        return max(0, self.seq_written - self.seq_received)


def lifecycle_event(host: str, image: str, family: str, status: Literal["up", "gone"], t: float, first: float,
                    last: float, reason: str, missing_events: int = 0) -> HostLifecycle:
    def at(x: float) -> datetime:
        return datetime.fromtimestamp(x, UTC)

    return HostLifecycle(host_id=host, image_id=image, image_family=family, status=status, time=at(t),
                         first_seen=at(first), last_seen=at(last), reason=reason, missing_events=missing_events)


def tail_loss_finding(host: str, rec: Member, now: float) -> Finding:
    """A host that timed out owes events it announced written: they will never arrive."""
    missing = rec.missing
    severity = Severity.HIGH if missing >= 100 else Severity.MEDIUM if missing >= 10 else Severity.LOW
    return Finding(
        kind=FindingKind.DATA_LOSS, host_id=host, image_id=rec.image_id, image_family=rec.image_family,
        time=datetime.fromtimestamp(now, UTC), score=min(1.0, 0.3 + missing / 200.0), severity=severity,
        subject="seq",
        explanation=(f"{missing} event(s) host {host} wrote to its spool (up to seq {rec.seq_written}) never "
                     f"arrived: the host went silent without goodbye after seq {rec.seq_received} (destroyed, "
                     f"crashed or cut off); whatever it did last is not in its record"),
        details={"missing": missing, "from_seq": rec.seq_received, "to_seq": rec.seq_written,
                 "reason": "timeout"})


@dataclass(frozen=True, slots=True)
class Failure:
    """Input the detectors failed on: dead-lettered with `reason` (the original `raw` bytes kept)."""

    reason: str
    raw: bytes


@dataclass
class CohortResult:
    outputs: list[Output] = field(default_factory=list)
    """Findings and rollout events to publish."""
    lifecycle: list[HostLifecycle] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


class CohortStage:
    """Feeds observations to their family's engine and keeps the members table (host lifecycle)."""

    def __init__(self, baselines: MutableMapping[str, Any], rollouts: MutableMapping[str, Any],
                 members: MutableMapping[str, Any], partition_of: Callable[[str], int],
                 host_timeout_s: float, touch_interval_s: float, engine_config: dict[str, Any] | None = None,
                 lag_grace_s: float = 30.0, wall: Callable[[], float] = time.time,
                 telemetry_partition_of: Callable[[str], int] | None = None, telemetry_partitions: int = 0,
                 caught_up: Callable[[int], bool | None] | None = None) -> None:
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
        self.osv = osv_source(EngineConfig.from_mapping(self.engine_config))
        self.checks = engine_inputs(EngineConfig.from_mapping(self.engine_config))
        """The parsed hardening checks and policy rules every engine of this stage takes."""
        """OSV data read once per worker and shared by its engines (reloaded when it changes on disk)."""
        self.clock: dict[str, tuple[float, float]] = {}
        """family -> (newest event time seen, wall time when it was seen)."""
        self.telemetry_partition_of = telemetry_partition_of
        self.telemetry_partitions = telemetry_partitions if telemetry_partition_of is not None else 0
        self.caught_up: Callable[[int], bool | None] = caught_up or (lambda partition: None)
        """telemetry partition -> True when its host stage handled everything, False when it is behind,
        None when this worker does not know (it does not own the partition)."""
        self.marks: dict[tuple[int, int], tuple[float, float]] = {}
        """(observations partition, telemetry partition) -> (newest event time of the telemetry partition's
        hosts' observations read from that observations partition, wall time it arrived). Per observations
        partition: the host stage sends each telemetry partition's observations to it in order, so
        everything older than the mark has been read; another observations partition may be read ahead."""

    def watermark(self, partition: int) -> float:
        """The low watermark of observations partition `partition`: least newest event time over the
        telemetry partitions still behind (inf when none is, -inf while one that is behind has not
        delivered anything to it yet)."""
        low = math.inf
        wall = self.wall()
        for p in range(self.telemetry_partitions):
            state = self.caught_up(p)
            if state is True:
                continue
            mark = self.marks.get((partition, p))
            if state is None:  # not ours: it holds the watermark back only while it is active
                if mark is None or wall - mark[1] > self.lag_grace_s:
                    continue
                low = min(low, mark[0])
            else:
                low = min(low, mark[0] if mark is not None else -math.inf)
        return low

    def _mark(self, obs: Observation) -> None:
        if self.telemetry_partition_of is None:
            return
        self.progress(self.partition_of(obs.image_family), self.telemetry_partition_of(obs.host_id),
                      obs.time.timestamp())

    def progress(self, partition: int, telemetry_partition: int, t: float) -> None:
        """The host stage handled `telemetry_partition` up to event time `t`, and everything it sent to
        observations partition `partition` before saying so has been read: the same as a mark."""
        if 0 <= telemetry_partition < self.telemetry_partitions:
            mark = self.marks.get((partition, telemetry_partition))
            self.marks[(partition, telemetry_partition)] = (max(t, mark[0]) if mark is not None else t, self.wall())

    def reset(self) -> None:
        """Forget cached engines (after a rebalance the tables are the truth)."""
        self.engines.clear()

    def engine(self, family: str) -> FamilyEngine:
        e = self.engines.get(family)
        if e is None:
            e = self.engines[family] = FamilyEngine(FamilyStore(family, self.baselines, self.rollouts),
                                                    EngineConfig.from_mapping(self.engine_config), osv=self.osv,
                                                    **self.checks)
        return e

    def now(self, family: str) -> float:
        t, seen = self.clock.get(family, (0.0, 0.0))
        return t + max(0.0, self.wall() - seen)

    def member(self, host: str) -> Member | None:
        value = self.members.get(host)
        return None if value is None else Member.from_json(value)

    def _score(self, engine: FamilyEngine, obs: Observation, result: CohortResult) -> None:
        """Learn and score one observation; one the engine fails on is logged and kept as a failure."""
        try:
            result.outputs += engine.process(obs)
        except Exception as e:  # one bad observation must not stop the worker
            log.exception("detectors failed on an observation of %s (family %s)", obs.host_id, obs.image_family)
            result.failed.append(Failure(f"detectors failed: {e!r}", orjson.dumps({"obs": [obs.to_dict()]})))

    def _tick(self, engine: FamilyEngine, family: str, now: float, result: CohortResult) -> None:
        try:
            result.outputs += engine.tick(now)
        except Exception as e:  # the next tick tries again
            log.exception("detectors failed on the periodic work of family %s", family)
            result.failed.append(Failure(f"detectors failed on tick: {e!r}",
                                         orjson.dumps({"tick": now, "image_family": family})))

    def process(self, observations: list[Observation]) -> CohortResult:
        """Learn and score one observations message. Under a backlog it holds several telemetry messages'
        observations (streams/host_batch.py): each host's run of consecutive observations (one telemetry
        message's) is marked and scored before the next run is marked, as if it had come alone, so a
        judgement never runs at a watermark raised by observations not learned yet."""
        result = CohortResult()
        start = 0
        while start < len(observations):
            end = start + 1
            while end < len(observations) and observations[end].host_id == observations[start].host_id:
                end += 1
            self._process(observations[start:end], result)
            start = end
        return result

    def _process(self, observations: list[Observation], result: CohortResult) -> None:
        for obs in observations:
            self._mark(obs)
        watermarks: dict[int, float] = {}
        for obs in observations:
            family, host = obs.image_family, obs.host_id
            t = obs.time.timestamp()
            if t > self.clock.get(family, (0.0, 0.0))[0]:
                self.clock[family] = (t, self.wall())
            self.heard[host] = self.wall()
            rec = self.member(host)
            if obs.gone:
                if rec is not None:
                    del self.members[host]
                    result.lifecycle.append(lifecycle_event(host, rec.image_id, rec.image_family, "gone", t,
                                                            rec.first_seen, t, "goodbye"))
            elif rec is None or rec.image_id != obs.image_id:
                self.members[host] = Member(family, obs.image_id, t, t, obs.seq_written, obs.seq_received).to_json()
                reason = "first event" if rec is None else f"re-imaged from {rec.image_id}"
                result.lifecycle.append(lifecycle_event(host, obs.image_id, family, "up", t, t, t, reason))
            elif t - rec.last_seen >= self.touch_interval_s or (
                    obs.seq_received >= 0 and (obs.seq_written, obs.seq_received) != (rec.seq_written,
                                                                                       rec.seq_received)
                    and max(0, obs.seq_written - obs.seq_received) != rec.missing):
                self.members[host] = Member(rec.image_family, rec.image_id, rec.first_seen, max(t, rec.last_seen),
                                            obs.seq_written, obs.seq_received).to_json()
            engine = self.engine(family)
            q = self.partition_of(family)
            if q not in watermarks:
                watermarks[q] = self.watermark(q)
            engine.watermark = watermarks[q]
            self._score(engine, obs, result)

    def tick(self, partition: int) -> CohortResult:
        """Time out silent hosts and run every engine's periodic work, for the families of `partition`."""
        silent: dict[str, list[tuple[str, Member]]] = {}
        families = {f for f in self.engines if self.partition_of(f) == partition}
        for host, value in list(self.members.items()):
            rec = Member.from_json(value)
            family = rec.image_family
            if self.partition_of(family) != partition:
                continue
            families.add(family)
            if family not in self.clock:  # after a restart: start the family's clock at its newest host
                self.clock[family] = (rec.last_seen, self.wall())
            elif rec.last_seen > self.clock[family][0]:
                self.clock[family] = (rec.last_seen, self.clock[family][1])
            silent.setdefault(family, []).append((host, rec))
        result = CohortResult()
        watermark = self.watermark(partition)
        for family in sorted(families):
            now = min(self.now(family), watermark)
            if now == -math.inf:
                continue  # a partition that is behind has not delivered anything yet: nothing can be judged
            engine = self.engine(family)
            engine.watermark = watermark
            wall = self.wall()
            for host, rec in silent.get(family, ()):
                heard = self.heard.setdefault(host, wall)
                if now - rec.last_seen > self.host_timeout_s and wall - heard > self.lag_grace_s:
                    del self.members[host]
                    self.heard.pop(host, None)
                    result.lifecycle.append(lifecycle_event(host, rec.image_id, family, "gone", now, rec.first_seen,
                                                            rec.last_seen, "timeout", rec.missing))
                    if rec.missing:
                        result.outputs.append(tail_loss_finding(host, rec, now))
                    gone = Observation(host, rec.image_id, family, datetime.fromtimestamp(now, UTC), gone=True)
                    self._score(engine, gone, result)
            self._tick(engine, family, now, result)
        return result
