"""A fix to faust-streaming 0.15 that the worker's crash guarantees depend on; `install` applies it.

Faust writes every table change to the table's changelog topic through `ProducerBuffer`, a queue that a
background task drains into the Kafka producer, and flushes that buffer before committing consumer
offsets. But `ProducerBuffer.flush` returns after 0.1 s without progress and does not count the message
its task is handing over, so on a busy machine offsets were committed ahead of the table changes they
depend on, and a worker killed then came back with state older than its offsets. `ChangelogBuffer.flush`
waits until the broker has acknowledged every message put into the buffer before the flush began, and
raises if one of them failed, so Faust never commits past a lost table change (the worker stops instead,
and the messages are processed again by whoever takes the partitions over).

The other Faust loss, messages dropped after they were fetched, is caught in `streams/offset_guard.py`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.producer import ProducerBuffer

log = logging.getLogger("herdwatch.streams")

STOP_TIMEOUT_S = 30.0
"""How long a stopping worker waits for its last table changes to be acknowledged."""


class ChangelogWriteFailed(RuntimeError):
    """A table change never reached its changelog topic; committing offsets now would lose it."""


class ChangelogBuffer(ProducerBuffer):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.unacked: set[asyncio.Future[Any]] = set()

    def put(self, fut: Any) -> None:
        self.unacked.add(fut)
        fut.add_done_callback(self.unacked.discard)
        super().put(fut)

    async def flush(self) -> None:
        """Wait for the broker's acknowledgement of every message put before this call."""
        waiting = list(self.unacked)
        if not waiting:
            return
        await asyncio.wait(waiting)
        failed = [f for f in waiting if not f.cancelled() and f.exception() is not None]
        if failed:
            raise ChangelogWriteFailed(f"{len(failed)} table change(s) were not written to their changelog: "
                                       f"{failed[0].exception()!r}; offsets are not committed")

    async def on_stop(self) -> None:
        waiting = list(self.unacked)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=STOP_TIMEOUT_S)
            if late:
                log.error("stopping with %d table change(s) not acknowledged by the broker", len(late))


def install(app: Any) -> None:
    """Give a new app's producer a ChangelogBuffer (before the app starts)."""
    if app.conf.producer_threaded:
        raise ValueError("ChangelogBuffer does not support producer_threaded=True")
    producer = app.producer
    buffer = ChangelogBuffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = app
    producer.buffer = buffer
