"""Pacing simulated event time against the wall clock.

`SimClock(speed=None)` runs as fast as possible; `SimClock(speed=10)` lets ten seconds of fleet time pass
per wall-clock second; `speed=1` is real time.
"""

from __future__ import annotations

import time
from datetime import datetime


class SimClock:
    """Sleeps until the wall clock catches up with simulated time (at `speed` x real time)."""

    def __init__(self, sim_start: datetime, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.sim_start = sim_start
        self.speed = speed
        self.wall_start = time.monotonic()

    def wait_until(self, sim_time: datetime) -> float:
        """Block until `sim_time` is due; returns the seconds slept (0 when running flat out or late)."""
        if self.speed is None:
            return 0.0
        due = self.wall_start + (sim_time - self.sim_start).total_seconds() / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def lag(self, sim_time: datetime) -> float:
        """Seconds the generator is behind schedule (negative: ahead)."""
        if self.speed is None:
            return 0.0
        due = self.wall_start + (sim_time - self.sim_start).total_seconds() / self.speed
        return time.monotonic() - due
