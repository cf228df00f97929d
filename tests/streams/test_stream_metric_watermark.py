"""Metric reports are scored at the cohort stage's low watermark, so partitions at different event times
never compare a report with stale peers.

Hosts h0-h2 live on telemetry partition 0, h3-h9 on partition 1. Partition 0 is read ten cycles ahead of
partition 1 (a worker catching up on a backlog). A traffic spike on every host of the cohort is not a
deviation: scored on arrival, h0-h2's spiked reports would be compared with h3-h9's pre-spike ones for
ten reports in a row. A spike on one host alone still is.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from stream_helpers import Clock

from contract.findings import Finding, FindingKind
from detectors.types import Observation
from streams.cohorts import CohortStage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTS = [f"h{i}" for i in range(10)]
AHEAD = {"h0", "h1", "h2"}
CYCLE = 30.0
LEAD = 10
"""Cycles partition 0 is read ahead of partition 1 (within the peers' window: they still count)."""
ENGINE = {"peer_window_s": 600.0}
CYCLES = 40
SPIKE = range(18, 30)


def report(host: str, k: int, spiking: set[str]) -> Observation:
    """Host `host`'s metrics of cycle k (every host reports a few seconds apart, as live)."""
    jitter = (HOSTS.index(host) * 7919 + k * 104729) % 1000 / 1000.0  # fixed, no randomness needed
    cpu = 20.0 + 4.0 * jitter + (60.0 if host in spiking and k in SPIKE else 0.0)
    conns = 200.0 + 20.0 * jitter + (900.0 if host in spiking and k in SPIKE else 0.0)
    return Observation(host, "ami-web", "web", T0 + timedelta(seconds=k * CYCLE + 2.0 * HOSTS.index(host)),
                       first=k == 0, metrics={"cpu_pct": cpu, "conns": conns, "mem_pct": 40.0 + jitter})


def make_stage(behind: set[int]) -> CohortStage:
    return CohortStage({}, {}, {}, lambda family: 0, host_timeout_s=600, touch_interval_s=30, engine_config=ENGINE,
                       wall=Clock(1000.0), lag_grace_s=30, telemetry_partitions=2,
                       telemetry_partition_of=lambda host: 0 if host in AHEAD else 1,
                       caught_up=lambda p: p not in behind)


def drain(stage: CohortStage, spiking: set[str], behind: set[int]) -> list[Finding]:
    """Partition 0 delivers cycle k + LEAD while partition 1 delivers cycle k; ticks run meanwhile."""
    out: list[Any] = []
    for k in range(-LEAD, CYCLES):
        if k + LEAD < CYCLES:
            out += stage.process([report(h, k + LEAD, spiking) for h in sorted(AHEAD)]).outputs
        if k >= 0:
            out += stage.process([report(h, k, spiking) for h in HOSTS if h not in AHEAD]).outputs
        out += stage.tick(0).outputs
    behind.clear()  # caught up: everything left is scored
    out += stage.tick(0).outputs
    return [f for f in out if isinstance(f, Finding) and f.kind == FindingKind.METRIC_DEVIATION]


def test_a_cohort_wide_spike_read_from_partitions_at_different_event_times_is_no_deviation() -> None:
    behind = {0, 1}
    stage = make_stage(behind)
    assert drain(stage, set(HOSTS), behind) == []
    engine = stage.engine("web")
    assert engine.peers.recent["ami-web"]["h0"][-1][0] == (T0 + timedelta(seconds=(CYCLES - 1) * CYCLE)).timestamp()
    assert engine._reports == [] and stage.watermark(0) == math.inf  # every report was scored in the end


def test_a_spike_on_one_host_is_still_a_deviation_and_only_on_that_host() -> None:
    behind = {0, 1}
    found = drain(make_stage(behind), {"h1"}, behind)
    assert found and {f.host_id for f in found} == {"h1"}
    assert {f.subject for f in found} <= {"metric:cpu_pct", "metric:conns"}
    first = min(f.time for f in found)
    assert T0 + timedelta(seconds=SPIKE[0] * CYCLE) <= first <= T0 + timedelta(seconds=(SPIKE[0] + 6) * CYCLE)


def test_scored_on_arrival_the_same_spike_is_a_false_alarm() -> None:
    """What the watermark prevents: the same delivery order with both partitions counted as caught up
    (no watermark) compares h0-h2's spiked reports with h3-h9's older ones."""
    behind: set[int] = set()
    found = drain(make_stage(behind), set(HOSTS), behind)
    assert {f.host_id for f in found} <= AHEAD and found


def test_reports_waiting_for_the_watermark_survive_a_restart() -> None:
    """The waiting reports are stored with each host's latest metrics: a stage rebuilt from its tables
    (a restarted worker) scores them when the watermark reaches them."""
    behind = {0, 1}
    stage = make_stage(behind)
    for k in range(3):
        stage.process([report(h, k + LEAD, set()) for h in sorted(AHEAD)])
        stage.process([report(h, k, set()) for h in HOSTS if h not in AHEAD])
    waiting = sorted((t, h) for t, h, _, _ in stage.engine("web")._reports)
    assert len(waiting) >= 3 * len(AHEAD)
    stage.reset()  # a rebalance or restart: engines are rebuilt from the tables
    rebuilt = stage.engine("web")
    rebuilt.load()
    assert sorted((t, h) for t, h, _, _ in rebuilt._reports) == waiting
    behind.clear()
    stage.tick(0)
    assert rebuilt._reports == []
    assert rebuilt.peers.recent["ami-web"]["h0"][-1][0] == max(t for t, h in waiting if h == "h0")
