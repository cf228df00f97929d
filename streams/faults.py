"""Fault injection for the crash tests (WorkerSettings.fault_lose_message; off unless set).

`LoseOnce` makes the fault Faust can cause around a restart happen on purpose: the first delivery of one
telemetry message never reaches the host stage (the offset guard sees the next one, skips it and asks for
a refetch), and the worker kills itself with SIGKILL right after its first offset commit a second or more
later: after Faust has counted the messages past the lost one as done, before the refetch (about two
seconds after the loss) brings it back. A worker that committed past the lost message comes back without
it (a false sequence gap); one whose commits stop at it (faust_fixes.cap_commits) handles it after the
restart.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("herdwatch.streams")

KILL_AFTER_S = 1.0
"""How long after the loss the first commit kills the worker (Faust commits every second)."""


class LoseOnce:
    def __init__(self, topic: str, spec: str, clock: Callable[[], float] = time.monotonic) -> None:
        partition, offset = spec.split(":")
        self.topic, self.partition, self.offset = topic, int(partition), int(offset)
        self.clock = clock
        self.lost_at: float | None = None

    def loses(self, msg: Any) -> bool:
        """Whether this delivery of `msg` is lost (the first delivery of the chosen message only)."""
        if self.lost_at is None and (msg.topic, msg.partition, msg.offset) == (self.topic, self.partition,
                                                                               self.offset):
            self.lost_at = self.clock()
            log.warning("fault injection: losing %s:%s@%s", msg.topic, msg.partition, msg.offset)
            return True
        return False

    def committed(self) -> None:
        """Called after every offset commit: SIGKILL once the loss is KILL_AFTER_S old."""
        if self.lost_at is not None and self.clock() - self.lost_at >= KILL_AFTER_S:
            log.warning("fault injection: killing the worker after a commit, before the lost message returns")
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self, consumer: Any) -> None:
        """Call `committed` after each of `consumer`'s commits (Faust's Consumer._commit); once per consumer."""
        if getattr(consumer, "_herdwatch_fault", None) is self:
            return
        consumer._herdwatch_fault = self
        commit = consumer._commit

        async def commit_then_check(offsets: Any) -> bool:
            done: bool = await commit(offsets)
            self.committed()
            return done

        consumer._commit = commit_then_check
