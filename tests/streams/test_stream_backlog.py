"""A backlog drained by one real worker finds what the offline evaluation finds.

The `ci` scenario is published in full before the worker starts, so the worker reads every telemetry
partition from the beginning, partitions at different event times. Judgements (rare features, config
drift, host timeouts) and metric reports wait for the low watermark over the telemetry partitions, so no
partition running ahead makes them early: the judged findings (kind, host, subject) equal those of
`run_detectors` on the same events. Multivariate outliers are not judged at the watermark (scored at the
stage's ticks, wall-clock paced): every one the offline run has must be there too, but catch-up can add
some (docs/streams.md, Known limits).
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import Clock, StreamEnv, dump_logs

from collectors.publisher import Publisher
from contract.findings import Finding, FindingKind
from detectors.types import Observation
from herdwatch.evaluation.runner import run_detectors
from simulator.fleet import Fleet
from simulator.keys import SIMULATED
from streams import codec
from streams.cohorts import CohortStage

STREAM_ONLY = {FindingKind.DATA_LOSS.value}
"""A host that vanished owing events is a stream-stage finding (the offline replay has no members table)."""
SCENARIO = os.environ.get("HERDWATCH_BACKLOG_SCENARIO", "ci")
"""By hand, a longer one: HERDWATCH_BACKLOG_SCENARIO=normal pytest tests/streams/test_stream_backlog.py"""
ON_ARRIVAL = {FindingKind.MULTIVARIATE_OUTLIER.value}
"""Scored at a tick, not judged at the watermark."""


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BASE = ("proc:/usr/sbin/nginx|nginx: worker process|www-data", "listen:tcp/80@any|/usr/sbin/nginx")
NEW = "dest:tcp/8443@45.137.0.0/16"


def obs(host: str, s: float, added: tuple[str, ...] = (), first: bool = False) -> Observation:
    return Observation(host, "ami-web", "web", T0 + timedelta(seconds=s), added, (), {}, False, first)


def ten_clones_then_a_new_destination_on_h0(stage: CohortStage) -> list[object]:
    out = []
    for i in range(10):
        out += stage.process([obs(f"h{i}", 0, BASE, first=True)]).outputs
    return out + stage.process([obs("h0", 60, (NEW,))]).outputs


def test_judgements_wait_for_the_partition_that_is_behind() -> None:
    """Hosts h0-h4 live on telemetry partition 0, h5-h9 on partition 1. Partition 0 is read 10 minutes
    ahead: h0 shows a new destination; the same one reached h5-h9 early on, but partition 1 has not
    delivered that yet. No judgement until partition 1 catches up; then it spread: nothing to report."""
    behind = {1}
    wall = Clock(1000.0)
    stage = CohortStage({}, {}, {}, lambda family: 0, host_timeout_s=300, touch_interval_s=30, wall=wall,
                        lag_grace_s=30, telemetry_partition_of=lambda host: int(host[1:]) // 5,
                        telemetry_partitions=2, caught_up=lambda p: p not in behind)

    out = ten_clones_then_a_new_destination_on_h0(stage)
    for s in range(90, 600, 30):  # partition 0 runs ahead; ticks run meanwhile
        out += stage.process([obs(f"h{i}", s) for i in range(5)]).outputs
        out += stage.tick(0).outputs
    assert stage.watermark(0) == T0.timestamp()  # partition 1 delivered nothing after its first reports
    assert [o for o in out if isinstance(o, Finding)] == []
    for s, added in ((65, (NEW,)), (600, ())):  # partition 1 catches up, in its own (event-time) order:
        for i in range(5, 10):  # the destination reached all its hosts within seconds
            out += stage.process([obs(f"h{i}", s, added)]).outputs
    behind.clear()
    out += stage.tick(0).outputs
    assert [o for o in out if isinstance(o, Finding)] == []
    # without the watermark the judgement at 90 s had found NEW on 1 of 10 hosts: a rare feature
    naive = CohortStage({}, {}, {}, lambda family: 0, host_timeout_s=300, touch_interval_s=30, wall=wall)
    early = ten_clones_then_a_new_destination_on_h0(naive)
    for s in range(90, 600, 30):
        early += naive.process([obs(f"h{i}", s) for i in range(5)]).outputs
    assert [(f.kind, f.host_id) for f in early if isinstance(f, Finding)] == [(FindingKind.RARE_FEATURE, "h0")]


def test_a_partition_feeding_other_cohorts_holds_judgements_only_until_its_progress_arrives() -> None:
    """Under steady load a telemetry partition is always a little behind its high-water mark. One whose hosts
    all belong to other families never sends this cohort partition an observation, so only the host
    stage's progress messages tell it how far that partition got; without them its judgements would wait
    for a moment with no traffic at all (the demo on a loaded machine lost every rare feature that way)."""
    wall = Clock(1000.0)
    stage = CohortStage({}, {}, {}, lambda family: 0, host_timeout_s=300, touch_interval_s=30, wall=wall,
                        lag_grace_s=30, telemetry_partition_of=lambda host: 0, telemetry_partitions=2,
                        caught_up=lambda p: False)  # both partitions always a little behind

    out = ten_clones_then_a_new_destination_on_h0(stage)
    for s in range(90, 300, 30):
        out += stage.process([obs(f"h{i}", s) for i in range(10)]).outputs
        out += stage.tick(0).outputs
    assert stage.watermark(0) == -math.inf  # partition 1 has said nothing to this cohort partition
    assert [o for o in out if isinstance(o, Finding)] == []
    for s in range(90, 300, 30):  # its progress arrives (it handled other families' hosts up to s)
        stage.progress(0, 1, T0.timestamp() + s)
        out += stage.tick(0).outputs
    assert stage.watermark(0) == T0.timestamp() + 270
    assert [(f.kind, f.host_id) for f in out if isinstance(f, Finding)] == [(FindingKind.RARE_FEATURE, "h0")]
    stage.progress(0, 7, 1e12)  # a partition that does not exist changes nothing
    assert stage.watermark(0) == T0.timestamp() + 270


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values.map(lambda v: orjson.dumps({"progress": v})),
                 st.binary(max_size=40).map(lambda b: b'{"progress"' + b)))
def test_a_hostile_progress_message_is_refused_or_well_formed(value: bytes) -> None:
    try:
        got = codec.decode_progress(value)
    except (ValueError, KeyError, TypeError):  # what the cohort stage dead-letters
        return
    assert got is not None
    p, t = got
    assert type(p) is int and p >= 0 and isinstance(t, float)


def test_progress_messages_round_trip_and_refuse_nonsense() -> None:
    assert codec.decode_progress(codec.encode_progress(3, 1234.5)) == (3, 1234.5)
    assert codec.decode_progress(codec.encode_tick(1.0)) is None
    assert codec.decode_progress(codec.encode_observations([])) is None
    for bad in (b'{"progress": [-1, 5]}', b'{"progress": ["1", 5]}', b'{"progress": [1, "x"]}',
                b'{"progress": [1]}', b'{"progress": 7}', b'{"progress": [1, 5'):
        with pytest.raises((ValueError, TypeError)):
            codec.decode_progress(bad)


@pytest.mark.integration
def test_a_backlog_published_before_the_worker_starts_gives_the_offline_findings(stream_env_factory: Any) -> None:
    fleet = Fleet.from_scenario(SCENARIO)
    span = (fleet.scenario.end - fleet.scenario.start).total_seconds()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=span + 3600)
    cycles = list(Fleet.from_scenario(SCENARIO, start=start).cycles())
    offline = run_detectors(iter(cycles))
    expected = {(f.kind.value, f.host_id, f.subject) for f in offline.findings if f.kind.value not in STREAM_ONLY}
    assert expected, "the ci scenario has findings"

    env: StreamEnv = stream_env_factory(host_timeout_s=300, touch_interval_s=30, lag_grace_s=8)
    pub = Publisher(env.kafka, SIMULATED)
    for cycle in cycles:
        for _host, events in cycle.batches:
            pub.publish(events)
    assert pub.flush(60) == 0
    anomalies = env.topic(env.kafka.topics.anomalies)
    events = sum(len(evs) for c in cycles for _, evs in c.batches)
    began = time.monotonic()
    env.start_worker()
    anomalies.wait_for(lambda ms: expected <= {(f["kind"], f["host_id"], f["subject"]) for f in anomalies.values()},
                       240 + events / 500)
    anomalies.settle(quiet=15.0 + events / 20000, timeout=120.0 + events / 500)
    print(f"{SCENARIO}: {events:,} events drained and judged in {time.monotonic() - began:.0f} s; "
          f"{len(anomalies.messages)} findings, offline {len(offline.findings)}")
    got = {(f["kind"], f["host_id"], f["subject"]) for f in anomalies.values() if f["kind"] not in STREAM_ONLY}
    judged, judged_offline = ({f for f in s if f[0] not in ON_ARRIVAL} for s in (got, expected))
    extra = [(f["time"], f["host_id"], f["explanation"]) for f in anomalies.values()
             if (f["kind"], f["host_id"], f["subject"]) in judged - judged_offline]
    assert judged == judged_offline, (
        f"missing {sorted(judged_offline - judged)}\nextra {extra}\n{dump_logs(env)}")
    assert expected - got == set(), f"metric findings missing {sorted(expected - got)}\n{dump_logs(env)}"
