"""Running the detectors over a simulated fleet offline, exactly as the stream workers do.

Per host a `HostState` turns events into observations; per image family a `FamilyEngine` learns and scores
them; one `SequenceGap` watches every host's sequence numbers; `engine.tick(now)` runs once per simulated
collector cycle. No Kafka, no Faust: a scenario is evaluated in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collectors.simulator.fleet import Cycle
from detectors import FamilyEngine, HostState, SequenceGap
from detectors.types import Finding, RolloutEvent


@dataclass
class HostSeen:
    host_id: str
    image_id: str
    image_family: str
    first: datetime
    last: datetime


@dataclass
class DetectionRun:
    """Everything the detectors said about a run, plus what was seen (for host-hours)."""

    findings: list[Finding] = field(default_factory=list)
    rollouts: list[RolloutEvent] = field(default_factory=list)
    hosts: dict[str, HostSeen] = field(default_factory=dict)
    events: int = 0
    batches: int = 0
    observations: int = 0
    cycles: int = 0
    seconds: float = 0.0
    start: datetime | None = None
    end: datetime | None = None
    scores: dict[str, dict[int, float]] = field(default_factory=dict)
    """host -> cycle index -> the highest detector score of the host's observations in that cycle."""
    cycle_times: list[datetime] = field(default_factory=list)


def run_detectors(cycles: Iterable[Cycle], engine_config: dict[str, Any] | None = None) -> DetectionRun:
    """Feed every batch of every cycle through the detectors; returns their findings and rollout events."""
    config = {"record_scores": True, **(engine_config or {})}
    states: dict[str, HostState] = {}
    engines: dict[str, FamilyEngine] = {}
    gaps = SequenceGap()
    run = DetectionRun()
    t0 = time.perf_counter()

    def collect(out: Iterable[Any]) -> None:
        for item in out:
            if isinstance(item, Finding):
                run.findings.append(item)
            elif isinstance(item, RolloutEvent):
                run.rollouts.append(item)

    for cycle in cycles:
        for host_id, events in cycle.batches:
            run.batches += 1
            for event in events:
                run.events += 1
                gap = gaps.check(event)
                if gap is not None:
                    run.findings.append(gap)
                hs = states.get(host_id)
                if hs is None:
                    hs = states[host_id] = HostState(host_id, event.image_id, event.image_family)
                seen = run.hosts.get(host_id)
                if seen is None:
                    run.hosts[host_id] = HostSeen(host_id, event.image_id, event.image_family, event.time, event.time)
                else:
                    seen.last = event.time
                    seen.image_id = event.image_id
                obs = hs.apply(event)
                if obs is None:
                    continue
                run.observations += 1
                engine = engines.get(obs.image_family)
                if engine is None:
                    engine = engines[obs.image_family] = FamilyEngine(**config)
                collect(engine.process(obs))
                if engine.last_scores:
                    score = max(engine.last_scores.values())
                    if score > 0:
                        per_host = run.scores.setdefault(host_id, {})
                        per_host[run.cycles] = max(score, per_host.get(run.cycles, 0.0))
        for engine in engines.values():
            collect(engine.tick(cycle.time))
        run.cycles += 1
        run.cycle_times.append(cycle.time)
        if run.start is None:
            run.start = cycle.time
        run.end = cycle.time
    run.seconds = time.perf_counter() - t0
    return run
