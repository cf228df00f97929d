"""Pacing (no timing assertions: only what the clock decides) and the simulator staying light."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from simulator import SimClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_as_fast_as_possible_never_waits() -> None:
    clock = SimClock(T0, speed=None)
    assert clock.wait_until(T0 + timedelta(hours=5)) == 0.0
    assert clock.lag(T0 + timedelta(hours=5)) == 0.0


def test_a_time_already_due_does_not_wait() -> None:
    clock = SimClock(T0, speed=10.0)
    assert clock.wait_until(T0 - timedelta(seconds=30)) == 0.0
    assert clock.lag(T0 - timedelta(seconds=30)) > 0  # behind schedule


def test_future_times_are_scheduled_by_speed() -> None:
    fast, slow = SimClock(T0, speed=1000.0), SimClock(T0, speed=1.0)
    later = T0 + timedelta(seconds=100)
    assert slow.lag(later) < fast.lag(later) < 0  # both ahead; real time is 1000x further ahead


@pytest.mark.parametrize("speed", [0.0, -1.0])
def test_speed_must_be_positive(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        SimClock(T0, speed=speed)


def test_simulator_imports_nothing_heavy() -> None:
    code = (
        "import sys, simulator, simulator.publish; "
        "heavy = [m for m in ('faust', 'sklearn', 'chdb', 'clickhouse_connect', 'numpy', 'detectors') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
