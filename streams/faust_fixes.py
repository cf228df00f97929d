"""Two faust-streaming 0.15 behaviours the worker's crash guarantees depend on, and what works around them.

1. **The changelog flush gives up.** Faust writes every table change to the table's changelog topic
   through `ProducerBuffer`, a queue that a background task drains into the Kafka producer, and flushes
   that buffer before committing consumer offsets. But `ProducerBuffer.flush` returns after 0.1 s without
   progress and does not count the message its task is handing over, so on a busy machine offsets were
   committed ahead of the table changes they depend on, and a worker killed then came back with state
   older than its offsets. `ChangelogBuffer.flush` waits until the broker has acknowledged every message
   put into the buffer before the flush began, and raises if one of them failed, so Faust never commits
   past a lost table change (the worker stops instead, and the messages are processed again by whoever
   takes the partitions over). `install_changelog_buffer` gives a new app's producer one.

2. **Fetched messages get lost.** Around a restart or rebalance Faust can lose messages it has already
   fetched: they are cleared from the stream queues or dropped as "already read" (below the consumer's
   read offset), while the Kafka position moves past them. Seen under CPU load: a restarted worker
   skipped a single message (a false sequence gap), or a whole partition's backlog (its hosts timed out).
   Nothing in Faust notices, so `OffsetGuard` does: every message of a source partition reaches the
   stage handler once per assignment, in offset order.

   Per source partition it keeps the next offset the handler must see, starting where the partition was
   assigned (its committed offset; without one, the log's first offset at the assignment, where the
   consumer starts: `auto_offset_reset=earliest`). A message

   - at that offset is processed;
   - below it was processed already since the assignment (a second delivery) and is skipped;
   - above it means messages were lost on the way: it is skipped, and so is everything after it until
     the missing offset arrives. The refetch timer (`add_refetch_timer`) seeks the partition back to the
     missing offset once the messages fetched before are out of the way (`refetch_every_s`), and again
     every `refetch_every_s` until it arrives. After `max_refetch` seeks the log evidently has no
     messages there (a transactional producer's markers; herdwatch's own producers never write
     transactionally): the guard goes on from the first offset that did arrive, and says so.

   A partition whose fetch position has moved past the next offset while nothing arrived for `stall_s`
   lost its tail the same way and is sought back too; if nothing comes after that seek either, the log
   has no messages there (a marker at the end) and the position is accepted.

   Faust's commits do not know about such losses either, and can pass them: a message missing just after
   the committed offset is not seen as a gap (`Consumer._new_offset` allows one offset of difference,
   off by one: the committed offset is already the next one to read), and a jump in what is fetched is
   counted as done (`Consumer._add_gap`). The skipped messages after a loss are acknowledged like any
   other, so Faust committed past the lost one before the guard had fetched it again; a worker killed
   then never handled it (seen: a false sequence gap after a kill -9). `cap_commits` makes every commit
   stop at the guard's next offset: nothing is committed that the stage has not handled.

Both lean on Faust internals (`ProducerBuffer`, `Consumer._committed_offset`, `Consumer.seek` resetting
the read offset, `Consumer._filter_committable_offsets`); tests/streams/test_stream_faust_fixes.py checks
that those still exist and still behave as described, so a Faust upgrade that changes them fails the tests
instead of losing data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from faust.transport.producer import ProducerBuffer

from streams import signals

log = logging.getLogger("herdwatch.streams")

# ---------------------------------------------------------------------------------------------------------
# 1. Commit offsets only after every table change is acknowledged
# ---------------------------------------------------------------------------------------------------------

STOP_TIMEOUT_S = 30.0
"""How long a stopping worker waits for its last table changes to be acknowledged."""


class ChangelogWriteFailed(RuntimeError):
    """A table change never reached its changelog topic; committing offsets now would lose it."""


class ChangelogBuffer(ProducerBuffer):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.unacked: set[asyncio.Future[Any]] = set()
        self.before_flush: list[Callable[[], Awaitable[None]]] = []
        """Sends of outputs kept back (streams/host_batch.py), made before every flush (flush_before_commit)."""

    def put(self, fut: Any) -> None:
        self.unacked.add(fut)
        fut.add_done_callback(self.unacked.discard)
        super().put(fut)

    async def flush(self) -> None:
        """Send what is kept back, then wait for the broker's acknowledgement of every message put before
        this call (and by those sends)."""
        for send in list(self.before_flush):
            await send()
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


def flush_before_commit(app: Any, send: Callable[[], Awaitable[None]]) -> None:
    """Make `send` (of outputs a stage keeps back) before every offset commit: Faust flushes the producer,
    and so its ChangelogBuffer, before committing. An app without one (tests' stand-ins) has no commits."""
    buffer = getattr(getattr(app, "producer", None), "buffer", None)
    if isinstance(buffer, ChangelogBuffer):
        buffer.before_flush.append(send)


def install_changelog_buffer(app: Any) -> None:
    """Give a new app's producer a ChangelogBuffer (before the app starts)."""
    if app.conf.producer_threaded:
        raise ValueError("ChangelogBuffer does not support producer_threaded=True")
    producer = app.producer
    buffer = ChangelogBuffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = app
    producer.buffer = buffer


# ---------------------------------------------------------------------------------------------------------
# 2. Every source message once per assignment, in offset order
# ---------------------------------------------------------------------------------------------------------


class Verdict(Enum):
    PROCESS = "process"
    SKIP = "skip"  # a second delivery, or a message after a loss (it comes again)
    LOST = "lost"  # the first sign of a loss: skip it, report it; the timer fetches the rest again


@dataclass
class Loss:
    want: int
    """The first offset that did not arrive."""
    first: int
    """The smallest offset that did arrive past it."""
    since: float
    """Clock time of the last seek (or of the detection)."""
    seeks: int = 0


@dataclass
class Refetch:
    tp: Any
    offset: int
    """Where to seek to: the missing offset, or for a gap given up on, the first offset that did arrive."""
    missing: int
    given_up: bool = False


class OffsetGuard:
    def __init__(self, stall_s: float = 20.0, refetch_every_s: float = 2.0, max_refetch: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.refetch_every_s = refetch_every_s
        self.max_refetch = max_refetch
        self.clock = clock
        self.next: dict[Any, int] = {}
        """partition -> next offset the handler must see."""
        self.start: dict[Any, int] = {}
        """partition -> its log's first offset when assigned (the start of a partition never committed)."""
        self.lost: dict[Any, Loss] = {}
        self.since: dict[Any, tuple[int, float, bool]] = {}
        """partition -> (next offset, clock time it was first seen stuck there, sought back since)."""

    def reset(self) -> None:
        """Forget everything (on every rebalance: partitions restart from their committed offsets)."""
        self.next.clear()
        self.start.clear()
        self.lost.clear()
        self.since.clear()

    def admit(self, tp: Any, offset: int, committed: int | None) -> Verdict:
        """What the handler does with the message at `offset` of `tp`."""
        want = self._want(tp, committed)
        if want is None or offset == want:
            self.next[tp] = offset + 1
            self.lost.pop(tp, None)
            return Verdict.PROCESS
        if offset < want:
            return Verdict.SKIP
        loss = self.lost.get(tp)
        if loss is None or loss.want != want:
            self.lost[tp] = Loss(want, offset, self.clock())
            return Verdict.LOST
        loss.first = min(loss.first, offset)
        return Verdict.SKIP

    def refetches(self) -> list[Refetch]:
        """The seeks to make now for partitions with a loss (called periodically)."""
        now = self.clock()
        out = []
        for tp, loss in list(self.lost.items()):
            if now - loss.since < self.refetch_every_s:
                continue
            if loss.seeks >= self.max_refetch:
                del self.lost[tp]
                self.next[tp] = loss.first
                out.append(Refetch(tp, loss.first, loss.first - loss.want, given_up=True))
                continue
            loss.seeks += 1
            loss.since = now
            out.append(Refetch(tp, loss.want, loss.first - loss.want))
        return out

    def _want(self, tp: Any, committed: int | None) -> int | None:
        """The next offset the handler must see (None: unknown, the first message to arrive sets it)."""
        return self.next.get(tp, committed if committed is not None else self.start.get(tp))

    def committable(self, tp: Any, offset: int) -> int | None:
        """The offset to commit for `tp` when Faust proposes `offset`: never past the next message the
        handler must see (None: nothing handled since the assignment, nothing to commit)."""
        want = self.next.get(tp)
        return None if want is None else min(offset, want)

    def stalled(self, tp: Any, position: int | None, committed: int | None) -> int | None:
        """The offset to seek `tp` back to if its fetch position passed messages that never arrived."""
        want = self._want(tp, committed)
        if want is None or position is None or position <= want or tp in self.lost:
            self.since.pop(tp, None)
            return None
        now = self.clock()
        seen = self.since.get(tp)
        if seen is None or seen[0] != want:
            self.since[tp] = (want, now, False)
            return None
        if now - seen[1] < self.stall_s:
            return None
        if seen[2]:  # sought back once and still nothing: the log has no messages there
            self.next[tp] = position
            self.since.pop(tp, None)
            return None
        self.since[tp] = (want, now, True)
        return want


def committed_offset(app: Any, tp: Any) -> int | None:
    """The offset Faust last committed for `tp` (read only; Faust keeps it in a private mapping)."""
    return app.consumer._committed_offset.get(tp)  # type: ignore[no-any-return]


def admit(guard: OffsetGuard, app: Any, event: Any) -> bool:
    """Whether the stage handles `event`; skipped messages are counted, the first sign of a loss logged."""
    msg = event.message
    verdict = guard.admit(msg.tp, msg.offset, committed_offset(app, msg.tp))
    if verdict is Verdict.PROCESS:
        return True
    signals.messages_skipped.emit()
    if verdict is Verdict.LOST:
        log.warning("messages of %s:%s before offset %s were lost after fetching; fetching them again",
                    msg.topic, msg.partition, msg.offset)
    return False


def cap_commits(consumer: Any, guard: OffsetGuard) -> None:
    """Make `consumer` commit no offset past what `guard` saw handled (once per consumer; see above)."""
    if getattr(consumer, "_herdwatch_capped_by", None) is guard:
        return
    propose = consumer._filter_committable_offsets

    def committable(tps: Iterable[Any]) -> dict[Any, int]:
        offsets = {}
        for tp, offset in propose(tps).items():
            capped = guard.committable(tp, offset)
            if capped is not None and consumer._should_commit(tp, capped):
                offsets[tp] = capped
        return offsets

    consumer._filter_committable_offsets = committable
    consumer._herdwatch_capped_by = guard


def add_refetch_timer(app: Any, guard: OffsetGuard, sources: Iterable[str], interval_s: float = 1.0) -> None:
    """Seek back partitions whose fetched messages Faust lost; forget the guard's offsets on rebalances;
    cap the consumer's commits at the guard's offsets."""
    topics = frozenset(sources)

    # A timer must never raise: an exception in a timer crashes the whole Faust app. During a rebalance
    # the assignment it reads can change under it; it simply tries again next time.
    @app.timer(interval_s)
    async def refetch_lost() -> None:
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
                if tp.topic in topics:
                    position = await app.consumer.position(tp)
                    offset = guard.stalled(tp, position, committed_offset(app, tp))
                    if offset is not None and position is not None:
                        log.warning("messages of %s:%s from offset %s were fetched but never arrived; "
                                    "fetching them again", tp.topic, tp.partition, offset)
                        signals.messages_refetched.emit(position - offset, reason="stall")
                        await app.consumer.seek(tp, offset)
        except Exception as e:
            log.warning("re-fetch skipped: %r", e)

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        guard.reset()  # partitions restart from their committed offsets

    async def on_assigned(sender: Any, assigned: Iterable[Any], /, *args: Any, signal: Any, **kwargs: Any) -> None:
        guard.reset()
        cap_commits(app.consumer, guard)  # before the first assignment's first commit
        mine = [tp for tp in assigned if tp.topic in topics]
        if mine:  # where a partition without a committed offset starts; unknown (as before) if this fails
            try:
                guard.start.update(await app.consumer.earliest_offsets(*mine))
            except Exception as e:
                log.warning("log start offsets unknown: %r", e)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)
