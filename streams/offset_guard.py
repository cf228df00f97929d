"""Every message of a source partition reaches the worker's handler once per assignment, in offset order.

Around a restart or rebalance, faust-streaming 0.15 can lose messages it has already fetched: they are
cleared from the stream queues or dropped as "already read", while the Kafka position moves past them.
Seen under CPU load: a restarted worker skipped a single message (a false sequence gap), or a whole
partition's backlog (its hosts timed out). Nothing in Faust notices, so the guard does.

Per source partition it keeps the next offset the handler must see, starting where the partition was
assigned (its committed offset). A message

- at that offset is processed;
- below it was processed already since the assignment (a second delivery) and is skipped;
- above it means messages were lost on the way: it is skipped, and so is everything after it until the
  missing offset arrives. The worker's timer seeks the partition back to the missing offset once the
  messages fetched before are out of the way (`refetch_every_s`), and again every `refetch_every_s`
  until it arrives. After `max_refetch` seeks the log evidently has no messages there (a transactional
  producer's markers; herdwatch's own producers never write transactionally): the guard goes on from the
  first offset that did arrive, and says so.

A partition whose fetch position has moved past the next offset while nothing arrived for `stall_s`
lost its tail the same way and is sought back too; if nothing comes after that seek either, the log has
no messages there (a marker at the end) and the position is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


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
        self.lost: dict[Any, Loss] = {}
        self.since: dict[Any, tuple[int, float, bool]] = {}
        """partition -> (next offset, clock time it was first seen stuck there, sought back since)."""

    def reset(self) -> None:
        """Forget everything (on every rebalance: partitions restart from their committed offsets)."""
        self.next.clear()
        self.lost.clear()
        self.since.clear()

    def admit(self, tp: Any, offset: int, committed: int | None) -> Verdict:
        """What the handler does with the message at `offset` of `tp`."""
        want = self.next.get(tp, committed)
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

    def stalled(self, tp: Any, position: int | None, committed: int | None) -> int | None:
        """The offset to seek `tp` back to if its fetch position passed messages that never arrived."""
        want = self.next.get(tp, committed)
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
