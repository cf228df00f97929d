"""A backlog drained by one real worker finds what the offline evaluation finds.

The `ci` scenario is published in full before the worker starts, so the worker reads every telemetry
partition from the beginning, partitions at different event times. Judgements (rare features, config
drift, host timeouts) wait for the low watermark over the telemetry partitions, so no partition running
ahead makes them early: the judged findings (kind, host, subject) equal those of `run_detectors` on the
same events. Metric findings are scored when a report arrives, not held for the watermark: every one the
offline run has must be there too, but catch-up can add some (docs/streams.md, Known limits).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stream_helpers import StreamEnv, dump_logs

from collectors.publisher import Publisher
from contract.findings import FindingKind
from herdwatch.evaluation.runner import run_detectors
from simulator.fleet import Fleet
from simulator.keys import SIMULATED

pytestmark = pytest.mark.integration

STREAM_ONLY = {FindingKind.DATA_LOSS.value}
"""A host that vanished owing events is a stream-stage finding (the offline replay has no members table)."""
ON_ARRIVAL = {FindingKind.METRIC_DEVIATION.value}
"""Scored when the report arrives (peers' latest reports), not judged at the watermark."""


def test_a_backlog_published_before_the_worker_starts_gives_the_offline_findings(stream_env_factory: Any) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    cycles = list(Fleet.from_scenario("ci", start=start).cycles())
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
    env.start_worker()
    anomalies.wait_for(lambda ms: expected <= {(f["kind"], f["host_id"], f["subject"]) for f in anomalies.values()},
                       240)
    anomalies.settle(quiet=15.0, timeout=120.0)
    got = {(f["kind"], f["host_id"], f["subject"]) for f in anomalies.values() if f["kind"] not in STREAM_ONLY}
    judged, judged_offline = ({f for f in s if f[0] not in ON_ARRIVAL} for s in (got, expected))
    extra = [(f["time"], f["host_id"], f["explanation"]) for f in anomalies.values()
             if (f["kind"], f["host_id"], f["subject"]) in judged - judged_offline]
    assert judged == judged_offline, (
        f"missing {sorted(judged_offline - judged)}\nextra {extra}\n{dump_logs(env)}")
    assert expected - got == set(), f"metric findings missing {sorted(expected - got)}\n{dump_logs(env)}"
