"""The loop every stage agent runs: admit each message once (OffsetGuard), handle it, time it.

A message whose handler raises is logged, counted (`engine_errors{stage}`) and sent to the dead-letter
topic with the error as reason; the stage goes on with the next one, never retrying forever.

`handled` records, per source partition, the offset after the last message a stage finished with: the
cohort stage compares it with the partition's high-water mark to tell a caught-up telemetry partition
from one still behind (its low watermark, streams/cohorts.py); `unsent` names the telemetry partitions
whose observations the host stage has not sent yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from contract.events import Rejected
from streams import metrics, signals
from streams.faust_fixes import OffsetGuard, admit
from streams.outputs import Outputs

log = logging.getLogger("herdwatch.streams")

Handler = Callable[[Any], Awaitable[None]]
After = Callable[[Any], Awaitable[None]]
"""Called with the stream after each handled message (the host stage sends its pending outputs there)."""
Lose = Callable[[Any], bool]
"""Fault injection only: whether a delivered message is lost before the stage sees it (streams/faults.py)."""

handled: dict[Any, int] = {}
"""Source partition (TP) -> the offset after the last message a stage of this process finished handling."""
unsent: set[Any] = set()
"""Telemetry partitions (TPs) whose handled messages' observations the host stage still keeps back
(streams/host_batch.py): not caught up yet, whatever `handled` says."""


async def run_stage(app: Any, stream: Any, stage: str, handle: Handler, guard: OffsetGuard,
                    outputs: Outputs, after: After | None = None, lose: Lose | None = None) -> None:
    seconds = metrics.processing_seconds.labels(stage)  # looked up once, not per message
    async for event in stream.events():
        if lose is not None and lose(event.message):
            continue  # fault injection (streams/faults.py): lost before the stage saw it
        if not admit(guard, app, event):
            continue
        started = time.perf_counter()
        try:
            await handle(event)
        except Exception as e:
            msg = event.message
            log.exception("%s failed on %s:%s@%s", stage, msg.topic, msg.partition, msg.offset)
            signals.engine_errors.emit(stage=stage)
            await outputs.dead_letter(Rejected(f"processing failed: {e!r}", event.value or b""), event,
                                      f"streams.{stage}")
        msg = event.message
        handled[msg.tp] = msg.offset + 1
        if after is not None:
            await after(stream)
        seconds.observe(time.perf_counter() - started)
