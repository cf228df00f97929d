"""The Faust application: topics, tables, the two agents and the timers.

    telemetry (key host) --hosts agent--> observations (key image_family) --cohorts agent--> anomalies
         |                  host_seq, host_state                   baselines, rollouts, members  rollouts
         +--> deadletter (malformed), anomalies (data loss)                                      lifecycle

`build_app` makes a fresh app per call (tests run several in one process); `herdwatch worker` runs one.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.types import EventT, StreamT

from contract.events import Event, Rejected, decode_batch
from contract.findings import Finding
from contract.settings import KafkaSettings
from detectors.types import Observation
from streams import codec, faust_fixes, metrics, signals
from streams.cohorts import CohortStage
from streams.hosts import process_host_batch
from streams.offset_guard import OffsetGuard, Verdict
from streams.settings import WorkerSettings, faust_broker_kwargs
from streams.worker import COHORT_TABLES, HOST_TABLES

log = logging.getLogger("herdwatch.streams")

_REASON_LABEL = re.compile(r"[:'\"0-9]")
SWEEP_INTERVAL_S = 60.0
"""How often (wall time) each telemetry partition looks for hosts past their retention."""


def partitioner(partitions: int) -> Any:
    """Partition of a key as Kafka's Java client, aiokafka and librdkafka's murmur2 compute it."""

    @lru_cache(maxsize=65536)
    def partition_of(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


def build_app(kafka: KafkaSettings, ws: WorkerSettings, datadir: Path,
              partitions: dict[str, int] | None = None) -> faust.App:
    """The worker's Faust app. `partitions` maps topic name -> partition count when the topics exist."""
    names = kafka.topics
    parts = partitions or {}
    n_tel = parts.get(names.telemetry, ws.partitions)
    n_obs = parts.get(names.observations, ws.partitions)
    app = faust.App(
        ws.app_id,
        **faust_broker_kwargs(kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=bool(ws.web_port),
        web_port=ws.web_port or 6066,
        web_bind="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=ws.partitions,
        broker_session_timeout=ws.session_timeout_s,
        broker_heartbeat_interval=min(3.0, ws.session_timeout_s / 3),
        broker_commit_interval=1.0,
        producer_linger=0.02,
        producer_max_batch_size=1_000_000,
        producer_compression_type="lz4",
        consumer_auto_offset_reset="earliest",
    )
    faust_fixes.install(app)  # see the module: crash guarantees Faust alone does not give

    def topic(name: str, n: int) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=n, internal=False)

    telemetry = topic(names.telemetry, n_tel)
    observations = topic(names.observations, n_obs)
    anomalies = topic(names.anomalies, parts.get(names.anomalies, ws.partitions))
    rollouts = topic(names.rollouts, parts.get(names.rollouts, ws.partitions))
    lifecycle = topic(names.lifecycle, parts.get(names.lifecycle, ws.partitions))
    deadletter = topic(names.deadletter, parts.get(names.deadletter, 1))

    def table(name: str, n: int) -> Any:
        schema: Any = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        return app.Table(name, partitions=n, schema=schema, help=f"herdwatch {name}")

    tables = {name: table(name, n_tel) for name in HOST_TABLES}
    tables.update({name: table(name, n_obs) for name in COHORT_TABLES})
    host_seq, host_state = (tables[name] for name in HOST_TABLES)
    baselines, rollout_state, members = (tables[name] for name in COHORT_TABLES)

    host_partition = partitioner(n_tel)
    stage = CohortStage(baselines, rollout_state, members, partitioner(n_obs), ws.host_timeout_s,
                        ws.touch_interval_s, ws.engine, lag_grace_s=ws.lag_grace_s)
    last_sweep: dict[int, float] = {}

    async def dead_letter(r: Rejected, event: EventT, component: str) -> None:
        msg = event.message
        # the metric label keeps the reason's leading words only (no values: bounded cardinality)
        label = _REASON_LABEL.split(r.reason, maxsplit=1)[0].strip()[:40] or "other"
        signals.events_dead_lettered.emit(reason=label)
        await deadletter.send(key=f"{msg.topic}:{msg.partition}:{msg.offset}".encode(), value=r.raw,
                              headers=[("reason", r.reason.encode()), ("source", msg.topic.encode()),
                                       ("component", component.encode())])

    async def publish(items: list[Any]) -> None:
        now = time.time()
        for item in items:
            if isinstance(item, Finding):
                signals.findings.emit(kind=item.kind.value, severity=item.severity.value)
                metrics.event_delay_seconds.observe(max(0.0, now - item.time.timestamp()))
                await anomalies.send(key=item.host_id.encode(), value=codec.encode_output(item))
            else:
                signals.rollout_events.emit(status=item.status.value)
                await rollouts.send(key=item.image_family.encode(), value=codec.encode_output(item))

    def sweep(partition: int, now: float) -> None:
        """Delete per-host state of hosts silent past the retention period (this partition's hosts only)."""
        wall = time.monotonic()
        if wall - last_sweep.get(partition, wall - SWEEP_INTERVAL_S - 1) < SWEEP_INTERVAL_S:
            return
        last_sweep[partition] = wall
        for host, rec in list(host_seq.items()):
            if rec and now - rec[3] > ws.host_retention_s and host_partition(host) == partition:
                del host_seq[host]
                host_state.pop(host, None)
                signals.hosts_forgotten.emit()

    async def on_telemetry(event: EventT) -> None:
        signals.messages_in.emit()
        events, rejected = decode_batch(event.value)
        for r in rejected:
            await dead_letter(r, event, "streams.hosts")
        key = event.key.decode(errors="replace") if isinstance(event.key, bytes) else None
        by_host: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            if key and e.host_id != key:  # its state belongs to another partition's owner
                await dead_letter(Rejected(f"host_id {e.host_id!r} differs from the message key {key!r}",
                                           orjson.dumps(e.to_dict())), event, "streams.hosts")
                continue
            by_host[e.host_id].append(e)
        newest = 0.0
        for host, evs in by_host.items():
            signals.events_in.emit(len(evs))
            old_seq = host_seq.get(host)
            res = process_host_batch(evs, old_seq, host_state.get(host), ws.host_timeout_s,
                                     ws.touch_interval_s)
            if res.seq and res.seq != old_seq:
                host_seq[host] = res.seq
                newest = max(newest, res.seq[3])
            if res.state is not None:
                host_state[host] = res.state
            signals.events_duplicate.emit(res.duplicates)
            signals.events_lost.emit(res.lost)
            await publish(list(res.findings))
            by_family: dict[str, list[Observation]] = defaultdict(list)
            for o in res.observations:
                by_family[o.image_family].append(o)
            for family, obs in by_family.items():
                signals.observations.emit(len(obs))
                await observations.send(key=family.encode(), value=codec.encode_observations(obs))
        if newest:
            sweep(event.message.partition, newest)

    async def on_observations(event: EventT) -> None:
        try:
            obs, tick = codec.decode(event.value)
        except (ValueError, KeyError, TypeError) as e:
            await dead_letter(Rejected(f"bad observation message: {e}", event.value or b""), event,
                              "streams.cohorts")
            return
        if tick is not None:
            out, life = stage.tick(event.message.partition)
        else:
            out, life = stage.process(obs)
            signals.observations_scored.emit(len(obs))
        await publish(out)
        for item in life:
            signals.lifecycle_events.emit(status=item["status"], reason=item["reason"].split(" ")[0])
            await lifecycle.send(key=item["host_id"].encode(), value=orjson.dumps(item))

    guard = OffsetGuard()
    sources = (telemetry.get_topic_name(), observations.get_topic_name())

    def committed(tp: Any) -> int | None:
        return app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]  # read only

    async def run_stage(stream: StreamT, stage_name: str, handle: Any) -> None:
        """Process each message; one that fails is logged, counted and dead-lettered, never retried forever."""
        async for event in stream.events():
            msg = event.message
            verdict = guard.admit(msg.tp, msg.offset, committed(msg.tp))
            if verdict is not Verdict.PROCESS:
                signals.messages_skipped.emit()
                if verdict is Verdict.LOST:
                    log.warning("messages of %s:%s before offset %s were lost after fetching; fetching them again",
                                msg.topic, msg.partition, msg.offset)
                continue
            started = time.perf_counter()
            try:
                await handle(event)
            except Exception as e:
                log.exception("%s failed on %s:%s@%s", stage_name, event.message.topic,
                              event.message.partition, event.message.offset)
                signals.engine_errors.emit(stage=stage_name)
                await dead_letter(Rejected(f"processing failed: {e!r}", event.value or b""), event,
                                  f"streams.{stage_name}")
            metrics.processing_seconds.labels(stage_name).observe(time.perf_counter() - started)

    @app.agent(telemetry, concurrency=1)
    async def hosts(stream: StreamT) -> None:
        await run_stage(stream, "hosts", on_telemetry)

    @app.agent(observations, concurrency=1)
    async def cohorts(stream: StreamT) -> None:
        await run_stage(stream, "cohorts", on_observations)

    # Timers must never raise: an exception in a timer crashes the whole Faust app. During a rebalance
    # the assignment they read can change under them; they simply try again next time.
    @app.timer(ws.tick_interval_s)
    async def tick() -> None:
        wall = time.time()
        try:
            for tp in sorted(app.consumer.assignment()):
                if tp.topic == observations.get_topic_name():
                    await observations.send(value=codec.encode_tick(wall), partition=tp.partition)
        except Exception as e:
            log.warning("tick skipped: %r", e)

    @app.timer(2.0)
    async def gauges() -> None:
        try:
            await update_gauges()
        except Exception as e:
            log.debug("gauges skipped: %r", e)

    @app.timer(1.0)
    async def refetch_lost() -> None:
        """Seek back partitions whose fetched messages Faust lost (see streams/offset_guard.py)."""
        try:
            for r in guard.refetches():
                if r.given_up:
                    log.error("offsets before %s of %s:%s never arrived after %d seeks; going on without them",
                              r.offset, r.tp.topic, r.tp.partition, guard.max_refetch)
                    signals.messages_unrecoverable.emit(r.missing)
                else:
                    signals.messages_refetched.emit(r.missing, reason="gap")
                await app.consumer.seek(r.tp, r.offset)  # what was skipped meanwhile comes again
            for tp in sorted(app.consumer.assignment()):
                if tp.topic in sources:
                    position = await app.consumer.position(tp)
                    offset = guard.stalled(tp, position, committed(tp))
                    if offset is not None and position is not None:
                        log.warning("messages of %s:%s from offset %s were fetched but never arrived; "
                                    "fetching them again", tp.topic, tp.partition, offset)
                        signals.messages_refetched.emit(position - offset, reason="stall")
                        await app.consumer.seek(tp, offset)
        except Exception as e:
            log.warning("re-fetch skipped: %r", e)

    async def update_gauges() -> None:
        for name, t in tables.items():
            metrics.table_entries.labels(name).set(len(t))
        lag: dict[str, int] = dict.fromkeys(sources, 0)
        owned: dict[str, int] = dict.fromkeys(sources, 0)
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic not in sources:
                continue
            owned[tp.topic] += 1
            position = await consumer.position(tp)
            high = consumer.highwater(tp)
            if position is not None and high is not None:
                lag[tp.topic] += max(0, high - position)
        for name in sources:
            metrics.consumer_lag.labels(name).set(lag[name])
            metrics.assigned_partitions.labels(name).set(owned[name])

    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        stage.reset()  # engines rebuild their caches from the (recovered) tables on next use
        guard.reset()  # partitions restart from their committed offsets

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)

    app.herdwatch_stage = stage  # type: ignore[attr-defined]
    return app
