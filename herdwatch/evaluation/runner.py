"""Running the detectors over a simulated fleet offline, exactly as the stream workers do.

The loop is the backtest's (`detectors.backtest.Replay`): one `SequenceGap` watches every host's sequence
numbers, per host a `HostState` turns events into observations, per image family a `FamilyEngine` learns
and scores them (`FamilyEngines`). The engines tick once per simulated collector cycle, at the cycle's end.
No Kafka, no Faust: a scenario is evaluated in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contract.events import Kind
from contract.findings import Finding, RolloutEvent
from detectors import EngineConfig
from detectors.backtest import FamilyEngines, HostSeen, Replay
from herdwatch.evaluation.decay import ConfigHistory
from simulator.fleet import Cycle
from streams.checks_data import engine_inputs
from streams.osv_data import osv_source

__all__ = ["DetectionRun", "HostSeen", "run_detectors"]


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
    config: ConfigHistory = field(default_factory=ConfigHistory)
    """Configuration and package history of the hosts that report hardening inputs (the decay chart)."""
    goodbyes: dict[str, datetime] = field(default_factory=dict)
    """host -> time of its agent's goodbye (destroyed hosts)."""


def run_detectors(cycles: Iterable[Cycle], engine_config: EngineConfig | None = None) -> DetectionRun:
    """Feed every batch of every cycle through the detectors; returns their findings and rollout events.

    Every detector's scores are recorded (for the chart), whatever `engine_config.record_scores` says."""
    config = (engine_config or EngineConfig()).replace(record_scores=True)
    engines = FamilyEngines(config, osv=osv_source(config), **engine_inputs(config))
    run = DetectionRun()

    def note_score(record: dict[str, Any]) -> None:
        score = max(engines.last_scores.values(), default=0.0)
        if score > 0:
            per_host = run.scores.setdefault(record["host_id"], {})
            per_host[run.cycles] = max(score, per_host.get(run.cycles, 0.0))

    replay = Replay(engines, on_scores=note_score if engines.record_scores else None)
    t0 = time.perf_counter()
    for cycle in cycles:
        for _host_id, events in cycle.batches:
            run.batches += 1
            for event in events:
                replay.feed(event)
                run.config.add(event)
                if event.kind == Kind.GOODBYE:
                    run.goodbyes[event.host_id] = event.time
        replay.tick(cycle.time)
        run.cycles += 1
        run.cycle_times.append(cycle.time)
    result = replay.finish()
    run.findings, run.rollouts, run.hosts = result.findings, result.rollouts, result.seen
    run.events, run.observations = result.events, result.observations
    if run.cycle_times:
        run.start, run.end = run.cycle_times[0], run.cycle_times[-1]
    run.seconds = time.perf_counter() - t0
    return run
