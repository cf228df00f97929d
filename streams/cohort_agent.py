"""The cohort stage as a Faust agent: observations in, findings, rollout and lifecycle events out.

The logic (one FamilyEngine per image family, members, timeouts) is `streams/cohorts.py`. Beside the agent
is the timer that drives the stage's periodic work: every `tick_interval_s` it sends a tick message to
each observations partition this worker owns, so timeouts and each engine's `tick` run inside a normal
stream event and their table writes land in the right changelog partition.

The stage's low watermark (streams/cohorts.py) asks `caught_up` whether a telemetry partition is done:
owned by this worker and handled by its host stage up to the partition's high-water mark, with the
observations of those messages sent (streams/host_batch.py keeps them back under a backlog).

Table changes are kept in memory at once and their changelog records, one per changed key, written before
every offset commit (streams/table_writes.py).

An observation the detectors fail on is dead-lettered (component `streams.cohorts`, counted by
`engine_errors{stage="cohorts"}` and `events_dead_lettered`); the stage goes on with the next.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from contract.events import Rejected
from streams import codec, signals
from streams.cohorts import CohortResult, CohortStage
from streams.faust_fixes import OffsetGuard, committed_offset, flush_before_commit
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.stage_loop import handled, run_stage, unsent
from streams.table_writes import MAX_PENDING, TableWrites, deferred
from streams.topology import Topology, partitioner

log = logging.getLogger("herdwatch.streams")

COMPONENT = "streams.cohorts"
CAUGHT_UP_SETTLE_S = 2.0
"""A telemetry partition counts as caught up only after it (and the observations topic) stayed so this long."""
OBSERVATIONS_LOOK_S = 0.01
"""How long one look at the observations topic's high-water marks serves (one watermark asks about every
telemetry partition in a row)."""


def add_cohort_agent(app: Any, topology: Topology, outputs: Outputs, ws: WorkerSettings,
                     guard: OffsetGuard) -> CohortStage:
    observations = topology.observations
    telemetry, observed = topology.telemetry.get_topic_name(), observations.get_topic_name()
    behind_at: dict[int, float] = {}
    """telemetry partition -> wall time it was last seen behind."""
    assignment: dict[str, Any] = {}
    """This worker's telemetry partitions (partition -> TP) and observations TPs, until the next rebalance."""
    observations_read: list[Any] = [-math.inf, False]
    """(wall time, whether the observations topic was read up to its end then): one look serves every
    telemetry partition of one watermark."""

    def done(tp: Any, high: int | None, slack: int = 0) -> bool:
        return high is not None and max(handled.get(tp, 0), committed_offset(app, tp) or 0) + slack >= high

    def assigned() -> tuple[dict[int, Any], list[Any]]:
        if not assignment:
            tps = app.consumer.assignment()
            assignment["telemetry"] = {tp.partition: tp for tp in tps if tp.topic == telemetry}
            assignment["observations"] = [tp for tp in tps if tp.topic == observed]
        return assignment["telemetry"], assignment["observations"]

    def caught_up(partition: int) -> bool | None:
        """True: this worker's host stage handled the partition up to its high-water mark and sent what that
        produced, the cohort stage
        has read the observations topic up to its end (a tick may be pending), and both stayed so for a
        moment (observations still in the producer's buffer); False: behind (or not fetched yet); None: not
        this worker's partition."""
        wall = time.monotonic()
        try:
            consumer = app.consumer
            mine, observing = assigned()
            tp = mine.get(partition)
            if tp is None:
                return None
            ready = done(tp, consumer.highwater(tp)) and tp not in unsent  # its observations are all sent
            if ready:
                if wall - observations_read[0] > OBSERVATIONS_LOOK_S:
                    observations_read[:] = [wall, all(done(o, consumer.highwater(o), slack=1) for o in observing)]
                ready = bool(observations_read[1])
        except Exception:  # during a rebalance the assignment can change under us
            assignment.clear()
            return None
        if not ready:
            behind_at[partition] = wall
            return False
        return wall - behind_at.get(partition, -math.inf) >= CAUGHT_UP_SETTLE_S

    writes = TableWrites()
    flush_before_commit(app, writes.flush)
    stage = CohortStage(deferred(topology.baselines, writes), deferred(topology.rollout_state, writes),
                        deferred(topology.members, writes),
                        partitioner(observations.partitions), ws.host_timeout_s, ws.touch_interval_s, ws.engine,
                        lag_grace_s=ws.lag_grace_s, telemetry_partition_of=partitioner(topology.telemetry.partitions),
                        telemetry_partitions=topology.telemetry.partitions, caught_up=caught_up)

    async def send(result: CohortResult, event: Any) -> None:
        for failure in result.failed:
            signals.engine_errors.emit(stage="cohorts")
            await outputs.dead_letter(Rejected(failure.reason, failure.raw), event, COMPONENT)
        await outputs.publish(result.outputs)
        await outputs.publish_lifecycle(result.lifecycle)

    async def on_observations(event: Any) -> None:
        writes.partition = event.message.partition  # every key the message changes is of its partition
        if len(writes) > MAX_PENDING:
            writes.send()
        try:
            progress = codec.decode_progress(event.value or b"")
            if progress is not None:
                stage.progress(event.message.partition, *progress)
                return
            obs, tick = codec.decode(event.value)
        except (ValueError, KeyError, TypeError) as e:
            await outputs.dead_letter(Rejected(f"bad observation message: {e}", event.value or b""), event,
                                      COMPONENT)
            return
        if tick is not None:
            await send(stage.tick(event.message.partition), event)
        else:
            result = stage.process(obs)
            signals.observations_scored.emit(len(obs) - len(result.failed))
            await send(result, event)

    @app.agent(observations, concurrency=1)  # higher concurrency can commit past unfinished messages
    async def cohorts(stream: Any) -> None:
        await run_stage(app, stream, "cohorts", on_observations, guard, outputs)

    # A timer must never raise: an exception in a timer crashes the whole Faust app. During a rebalance
    # the assignment it reads can change under it; it simply tries again next time.
    @app.timer(ws.tick_interval_s)
    async def tick() -> None:
        wall = time.time()
        try:
            for tp in sorted(app.consumer.assignment()):
                if tp.topic == observations.get_topic_name():
                    await observations.send(value=codec.encode_tick(wall), partition=tp.partition)
        except Exception as e:
            log.warning("tick skipped: %r", e)

    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        stage.reset()  # engines rebuild their caches from the (recovered) tables on next use
        assignment.clear()

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)
    return stage
