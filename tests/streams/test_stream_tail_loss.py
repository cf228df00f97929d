"""Accounted tail loss: a host announces (heartbeat `seq_written`) events it wrote to its spool; when it then
goes silent without goodbye, the cohort stage's timeout reports the ones that never arrived as data_loss and
the lifecycle event and its stored row keep the number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from stream_helpers import Clock

from contract.events import Event, HostIdentity, Kind
from contract.findings import Finding, FindingKind, HostLifecycle
from storage.rows import lifecycle_row
from streams.cohorts import CohortStage
from streams.hosts import HostSeq, process_host_batch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = HostIdentity(host_id="i-tail", boot_id="b1", image_id="ami-1", image_family="web", tags={})


def events(first: int, last: int, written: int | None = None) -> list[Event]:
    """Metrics events first..last (one per second); the last one a heartbeat announcing `written`."""
    out = []
    for seq in range(first, last + 1):
        t = T0 + timedelta(seconds=seq)
        if written is not None and seq == last:
            out.append(Event.new(HOST, Kind.HEARTBEAT, seq, {"events_sent": seq, "events_dropped": 0,
                                                             "seq_written": written}, time=t))
        else:
            out.append(Event.new(HOST, Kind.METRICS, seq, {"values": {"cpu_pct": 1.0}, "scope": "host"}, time=t))
    return out


def run(batches: list[list[Event]], stage: CohortStage) -> tuple[HostSeq | None, list[Any]]:
    seq: HostSeq | None = None
    state: dict[str, Any] | None = None
    for batch in batches:
        res = process_host_batch(batch, seq, state, host_timeout_s=60, touch_interval_s=30)
        seq = res.seq or seq
        state = res.state or state
        stage.process(res.observations)
    return seq, []


def test_silent_host_owing_twenty_events_times_out_with_data_loss_of_twenty() -> None:
    clock = Clock(1000.0)
    members: dict[str, Any] = {}
    stage = CohortStage({}, {}, members, lambda family: 0, host_timeout_s=60, touch_interval_s=30,
                        lag_grace_s=5, wall=clock)
    # seq 0..99 arrive; the heartbeat at seq 100 says 120 were written; 101..120 never arrive
    seq, _ = run([events(0, 49), events(50, 100, written=120)], stage)
    assert seq is not None and seq.seq == 100 and seq.written == 120
    assert HostSeq.from_json(orjson.loads(orjson.dumps(seq.to_json()))) == seq
    assert members["i-tail"]["seq_written"] == 120 and members["i-tail"]["seq_received"] == 100
    clock.t += 200  # silence, in wall time and (advancing with it) in event time
    result = stage.tick(0)
    (gone,) = result.lifecycle
    assert (gone.status, gone.reason, gone.missing_events) == ("gone", "timeout", 20)
    losses = [o for o in result.outputs if isinstance(o, Finding) and o.kind is FindingKind.DATA_LOSS]
    assert len(losses) == 1 and losses[0].details["missing"] == 20
    assert (losses[0].details["from_seq"], losses[0].details["to_seq"]) == (100, 120)
    assert HostLifecycle.from_dict(gone.to_dict()) == gone
    _, row = lifecycle_row(orjson.dumps(gone.to_dict()), 0, 7)
    assert orjson.loads(row)["missing_events"] == 20


def test_tail_that_arrives_later_is_not_lost() -> None:
    clock = Clock(1000.0)
    members: dict[str, Any] = {}
    stage = CohortStage({}, {}, members, lambda family: 0, host_timeout_s=60, touch_interval_s=30,
                        lag_grace_s=5, wall=clock)
    # the announcement arrives first, the tail in a later batch with nothing else new: still no loss
    run([events(0, 100, written=120), events(101, 120)], stage)
    assert members["i-tail"]["seq_received"] == 120
    clock.t += 200
    result = stage.tick(0)
    (gone,) = result.lifecycle
    assert gone.missing_events == 0 and not any(isinstance(o, Finding) for o in result.outputs)


def test_lifecycle_without_the_field_reads_as_zero() -> None:
    old = {"host_id": "h", "image_id": "i", "image_family": "f", "status": "gone", "time": "2026-03-01T12:00:00Z",
           "first_seen": "2026-03-01T11:00:00Z", "last_seen": "2026-03-01T11:59:00Z", "reason": "timeout"}
    assert HostLifecycle.from_dict(old).missing_events == 0
    assert orjson.loads(lifecycle_row(orjson.dumps(old), 0, 1)[1])["missing_events"] == 0


def test_the_signed_send_time_announcement_counts_like_a_heartbeat() -> None:
    res = process_host_batch(events(0, 9), None, None, 60, 30, sent_written=25)
    assert res.seq is not None and (res.seq.seq, res.seq.written) == (9, 25)
    later = process_host_batch(events(10, 14), res.seq, res.state, 60, 30, sent_written=20)
    assert later.seq is not None and later.seq.written == 25  # never goes back
    assert all(o.seq_written == 25 and o.seq_received == 14 for o in later.observations)


def test_a_new_boot_starts_its_announcements_afresh() -> None:
    res = process_host_batch(events(0, 9), None, None, 60, 30, sent_written=40)
    reboot = HostIdentity(host_id="i-tail", boot_id="b2", image_id="ami-1", image_family="web", tags={})
    fresh = [Event.new(reboot, Kind.METRICS, 41 + i, {"values": {"cpu_pct": 1.0}, "scope": "host"},
                       time=T0 + timedelta(seconds=100 + i)) for i in range(3)]
    after = process_host_batch(fresh, res.seq, res.state, 60, 30)
    assert after.seq is not None and (after.seq.boot_id, after.seq.seq, after.seq.written) == ("b2", 43, -1)
