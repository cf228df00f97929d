"""The crash tests' fault injection (streams/faults.py): off unless set, and exactly the fault it names."""

from __future__ import annotations

import signal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from stream_helpers import Clock

from streams import faults
from streams.faults import LoseOnce
from streams.settings import WorkerSettings


def msg(partition: int, offset: int, topic: str = "hw.telemetry") -> Any:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def test_only_the_first_delivery_of_the_named_message_is_lost() -> None:
    fault = LoseOnce("hw.telemetry", "2:7", clock=Clock())
    assert [fault.loses(msg(2, o)) for o in (5, 6)] == [False, False]
    assert not fault.loses(msg(2, 7, topic="hw.other")) and not fault.loses(msg(1, 7))
    assert fault.loses(msg(2, 7))
    assert not fault.loses(msg(2, 7))  # fetched again: delivered


def test_the_worker_is_killed_at_the_first_commit_a_second_after_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: kills.append(sig))
    clock = Clock()
    fault = LoseOnce("hw.telemetry", "0:3", clock=clock)
    fault.committed()
    assert kills == []  # nothing lost yet
    fault.loses(msg(0, 3))
    clock.t = 0.5
    fault.committed()
    assert kills == []
    clock.t = 1.2
    fault.committed()
    assert kills == [signal.SIGKILL]


def test_the_setting_is_off_by_default_and_checked() -> None:
    assert WorkerSettings(app_id="x").fault_lose_message == ""
    assert WorkerSettings(app_id="x", fault_lose_message="3:17").fault_lose_message == "3:17"
    with pytest.raises(ValidationError):
        WorkerSettings(app_id="x", fault_lose_message="3")
