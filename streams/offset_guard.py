"""Every message of a source partition reaches the worker's handler once per assignment, in offset order.

Around a restart or rebalance, faust-streaming 0.15 can lose messages it has already fetched: they are
cleared from the stream queues or dropped as "already read", while the Kafka position moves past them.
Seen under CPU load: a restarted worker skipped a single message (a false sequence gap), or a whole
partition's backlog (its hosts timed out). Nothing in Faust notices, so the guard does.

Per source partition it keeps the next offset the handler must see, starting where the partition was
assigned (its committed offset). A message

- at that offset is processed;
- below it was processed already since the assignment (a second delivery) and is skipped;
- above it means messages were lost on the way: the partition is sought back to the missing offset and
  this message is skipped (it comes again). Messages fetched before the seek keep arriving for a while
  and can move Faust's read position past the seek again, so each of them seeks again (quietly) until
  the missing offset arrives.

A partition whose fetch position has moved past the next offset while nothing arrived for `stall_s`
lost its tail the same way, and is sought back too; if nothing comes then either, the log has no
messages there (a transaction marker at the end) and the position is accepted. A gap in the middle that
the log really has is accepted after `max_refetch` seeks, with an error: herdwatch's own producers never
write transactionally, so source offsets are contiguous.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any


class Verdict(Enum):
    PROCESS = "process"
    SKIP = "skip"  # processed before: a second delivery
    REWIND = "rewind"  # messages were lost: seek back (and report it), skip this one
    RESEEK = "reseek"  # still waiting for the lost messages: seek back again quietly, skip this one
    ACCEPT_GAP = "accept_gap"  # the lost messages never came after max_refetch seeks: process this one


class OffsetGuard:
    def __init__(self, stall_s: float = 20.0, max_refetch: int = 5000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.max_refetch = max_refetch
        self.clock = clock
        self.next: dict[Any, int] = {}
        """partition -> next offset the handler must see."""
        self.since: dict[Any, tuple[int, float, bool]] = {}
        """partition -> (next offset, clock time it was first seen stuck there, sought back since)."""
        self.asked: dict[Any, tuple[int, int]] = {}
        """partition -> (offset sought back to and not yet arrived, seeks since)."""

    def reset(self) -> None:
        """Forget everything (on every rebalance: partitions restart from their committed offsets)."""
        self.next.clear()
        self.since.clear()
        self.asked.clear()

    def admit(self, tp: Any, offset: int, committed: int | None) -> tuple[Verdict, int]:
        """What to do with the message at `offset`, and the offset to seek to for REWIND and RESEEK."""
        want = self.next.get(tp, committed)
        if want is None or offset == want:
            return self._process(tp, offset)
        if offset < want:
            return Verdict.SKIP, want
        asked, seeks = self.asked.get(tp, (want, 0))
        if asked != want:
            seeks = 0
        if seeks >= self.max_refetch:
            self._process(tp, offset)
            return Verdict.ACCEPT_GAP, want
        self.asked[tp] = (want, seeks + 1)
        return (Verdict.REWIND if seeks == 0 else Verdict.RESEEK), want

    def _process(self, tp: Any, offset: int) -> tuple[Verdict, int]:
        self.next[tp] = offset + 1
        self.asked.pop(tp, None)
        return Verdict.PROCESS, offset

    def stalled(self, tp: Any, position: int | None, committed: int | None) -> int | None:
        """The offset to seek `tp` back to if its fetch position passed messages that never arrived.

        If nothing arrives after that seek either, the log has no messages there (a transaction marker
        at the end, say): the position is accepted as the next offset.
        """
        want = self.next.get(tp, committed)
        if want is None or position is None or position <= want:
            self.since.pop(tp, None)
            return None
        now = self.clock()
        seen = self.since.get(tp)
        if seen is None or seen[0] != want:
            self.since[tp] = (want, now, False)
            return None
        if now - seen[1] < self.stall_s:
            return None
        if seen[2]:
            self.next[tp] = position
            self.since.pop(tp, None)
            return None
        self.since[tp] = (want, now, True)
        return want
