"""The host stage as a Faust agent: telemetry in, per-host tables, observations out (logic in hosts.py).

One telemetry message is one host's batch. Rejected envelopes, and events whose host differs from the
message key (their state belongs to another partition's owner), go to the dead-letter topic; per host the
batch is applied to `host-seq` / `host-state`, data-loss findings are published and the observations go to
the observations partition of their image family. Observations and host-table changelog records of
several messages are sent together under a backlog (streams/host_batch.py). Hosts silent past the
retention period are swept from the tables while their partition has traffic.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from contract.events import Event, Rejected, arrival_time, decode_batch, encode_event
from contract.signing import load_verifier, verify
from streams import codec, signals
from streams.faults import LoseOnce
from streams.faust_fixes import OffsetGuard, flush_before_commit
from streams.host_batch import MAX_WAIT_S, HostBatch
from streams.host_keys import HostKey, check_identity
from streams.hosts import HostSeq, process_host_batch
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.stage_loop import handled, run_stage
from streams.topology import Topology, partitioner

log = logging.getLogger("herdwatch.streams")

COMPONENT = "streams.hosts"
AIOKAFKA_LOG_APPEND_TIME = 1
"""aiokafka's timestamp_type for a time the broker set on arrival (0 is the producer's CreateTime)."""
SWEEP_INTERVAL_S = 60.0
"""How often (wall time) each telemetry partition looks for hosts past their retention."""
PROGRESS_INTERVAL_S = 1.0
"""How often (wall time, at most) each telemetry partition tells every observations partition how far it got."""


class Progress:
    """When to tell the cohort stage how far a telemetry partition got in event time (codec progress
    messages): the cohort partitions none of its hosts feeds would otherwise not know, and would hold their
    judgements back while it is behind. An observation is a mark too (streams/cohorts.py), so an
    observations partition the telemetry partition sent observations to since its last progress message
    needs none: under load that is nearly all of them, and the progress messages (up to one per second
    per telemetry partition and observations partition) would outnumber the observations."""

    def __init__(self, partitions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.partitions = partitions
        self.clock = clock
        self.sent: dict[int, tuple[float, float]] = {}
        self.fed: dict[int, set[int]] = {}
        """telemetry partition -> observations partitions it sent observations to since its last progress."""

    def feed(self, partition: int, observations_partition: int) -> None:
        self.fed.setdefault(partition, set()).add(observations_partition)

    def due(self, partition: int, event_time: float) -> list[int]:
        """The observations partitions to send `partition`'s progress to now (none: not yet)."""
        wall = self.clock()
        last = self.sent.get(partition)
        if last is not None and (event_time <= last[0] or wall - last[1] < PROGRESS_INTERVAL_S):
            return []
        self.sent[partition] = (event_time, wall)
        fed = self.fed.pop(partition, set())
        return [q for q in range(self.partitions) if q not in fed]


class HostSweep:
    """Deletes per-host state of hosts silent past the retention period, per telemetry partition."""

    def __init__(self, topology: Topology, retention_s: float, partitions: int) -> None:
        self.host_seq = topology.host_seq
        self.host_state = topology.host_state
        self.retention_s = retention_s
        self.partition_of = partitioner(partitions)
        self.last: dict[int, float] = {}

    def due(self, partition: int) -> bool:
        """Whether `partition` is swept now (at most every SWEEP_INTERVAL_S of wall time)."""
        wall = time.monotonic()
        if wall - self.last.get(partition, wall - SWEEP_INTERVAL_S - 1) < SWEEP_INTERVAL_S:
            return False
        self.last[partition] = wall
        return True

    def __call__(self, partition: int, now: float) -> None:
        """Sweep `partition`'s hosts at event time `now` (call when `due`)."""
        for host, value in list(self.host_seq.items()):
            if value and now - HostSeq.from_json(value).last_seen > self.retention_s \
                    and self.partition_of(host) == partition:
                del self.host_seq[host]
                self.host_state.pop(host, None)
                signals.hosts_forgotten.emit()


def add_host_agent(app: Any, topology: Topology, outputs: Outputs, ws: WorkerSettings, guard: OffsetGuard) -> None:
    load_verifier()  # fails here, with the fix, if the install lacks the signature check
    host_seq, host_state, observations = topology.host_seq, topology.host_state, topology.observations
    host_keys = topology.host_keys
    sweep = HostSweep(topology, ws.host_retention_s, topology.telemetry.partitions)
    progress = Progress(observations.partitions)
    family_partition = partitioner(observations.partitions)
    batch = HostBatch(observations, family_partition)
    flush_before_commit(app, batch.send)

    async def on_telemetry(event: Any) -> None:
        signals.messages_in.emit()
        msg = event.message  # the contract checks the key (a host's state lives in its key's partition)
        received = arrival_time(msg.timestamp * 1000, set_by_broker=msg.timestamp_type == AIOKAFKA_LOG_APPEND_TIME)
        events, rejected = decode_batch(event.value, key=event.key, received=received)
        for r in rejected:
            await outputs.dead_letter(r, event, COMPONENT)
        by_host: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            by_host[e.host_id].append(e)
        newest = 0.0
        signature = verify(getattr(msg, "headers", None), event.key, event.value) if by_host else None
        judged_at = float(msg.timestamp) if msg.timestamp else time.time()  # the message's time: stable on replay
        for host, evs in by_host.items():
            assert signature is not None
            stored_key = host_keys.get(host)
            pin = HostKey.from_json(stored_key) if stored_key else None
            known = host_state.get(host) or {}
            ident = check_identity(host, signature, pin, ws.require_signatures, judged_at,
                                   known.get("i", "unknown"), known.get("f", "unknown"), ws.repin)
            if ident.record is not None:
                host_keys[host] = ident.record.to_json()
            if not ident.accepted:  # forged or unsigned: none of its events touch the host's state
                await outputs.dead_letter(Rejected(ident.reason, event.value or b""), event, COMPONENT)
                if ident.finding is not None:
                    await outputs.publish([ident.finding])
                continue
            signals.events_in.emit(len(evs))
            stored = host_seq.get(host)
            old_seq = HostSeq.from_json(stored) if stored else None
            res = process_host_batch(evs, old_seq, host_state.get(host), ws.host_timeout_s, ws.touch_interval_s,
                                     sent_written=signature.written)
            partition = msg.partition
            if res.seq is not None and res.seq != old_seq:
                batch.set(host_seq, partition, host, res.seq.to_json())
                newest = max(newest, res.seq.last_seen)
            if res.state is not None:
                batch.set(host_state, partition, host, res.state)
            signals.events_duplicate.emit(res.duplicates)
            signals.events_lost.emit(res.lost)
            for bad, why in res.rejected:  # the detectors failed on these events: each is dead-lettered alone
                await outputs.dead_letter(Rejected(why, encode_event(bad)), event, COMPONENT)
            await outputs.publish(res.findings)
            if res.observations:
                signals.observations.emit(len(res.observations))
                batch.add(res.observations)
                for o in res.observations:
                    progress.feed(partition, family_partition(o.image_family))
        batch.handled(msg.tp)
        if newest:
            partition = msg.partition
            if sweep.due(partition):
                await batch.send()  # its table writes first: a deleted host is not written back
                sweep(partition, newest)
            for q in progress.due(partition, newest):  # after this message's observations: they come first
                await batch.send_progress(q, codec.encode_progress(partition, newest))

    telemetry_name = topology.telemetry.get_topic_name()
    assignment: list[Any] = []
    """This worker's telemetry partitions (TPs), until the next rebalance; empty: not looked at yet."""

    def fetched_all() -> bool:
        """Whether the stage has handled every telemetry message up to each of its partitions' high-water
        mark as last fetched (live traffic: after nearly every message; True when it cannot tell)."""
        try:
            consumer = app.consumer
            if not assignment:
                assignment[:] = [tp for tp in consumer.assignment() if tp.topic == telemetry_name] or [None]
            for tp in assignment:
                high = consumer.highwater(tp) if tp is not None else None
                if high is not None and handled.get(tp, 0) < high:
                    return False
        except Exception:  # during a rebalance the assignment can change under us
            assignment.clear()
        return True

    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assignment.clear()

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)

    async def after(stream: Any) -> None:
        if batch.due(idle=fetched_all()):
            await batch.send()

    fault = LoseOnce(telemetry_name, ws.fault_lose_message) if ws.fault_lose_message else None
    if fault is not None:
        log.warning("fault injection on (HERDWATCH_WORKER_FAULT_LOSE_MESSAGE=%s): for crash tests only; this "
                    "worker will lose that message once and kill itself", ws.fault_lose_message)

        def install_fault(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            fault.install(app.consumer)

        app.on_partitions_assigned.connect(install_fault)

    @app.agent(topology.telemetry, concurrency=1)  # higher concurrency can commit past unfinished messages
    async def hosts(stream: Any) -> None:
        await run_stage(app, stream, "hosts", on_telemetry, guard, outputs, after=after,
                        lose=fault.loses if fault is not None else None)

    # A timer must never raise: an exception in a timer crashes the whole Faust app.
    @app.timer(MAX_WAIT_S)
    async def send_host_batch() -> None:
        try:
            if batch.due(idle=False):
                await batch.send()
        except Exception as e:
            log.warning("host stage outputs not sent yet: %r", e)
