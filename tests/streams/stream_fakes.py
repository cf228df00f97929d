"""In-memory stand-ins for the Faust app and topics, for stage tests that run an agent without a broker."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


class FakeTopic:
    def __init__(self, name: str, partitions: int = 4) -> None:
        self.name, self.partitions = name, partitions
        self.sent: list[dict[str, Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


class FakeSignal:
    def connect(self, fn: Callable[..., Any]) -> None:
        pass


class FakeApp:
    """Records agents and timers instead of running them."""

    def __init__(self) -> None:
        self.agents: dict[str, Callable[[Any], Any]] = {}
        self.consumer = SimpleNamespace(_committed_offset={}, assignment=set)
        self.on_partitions_assigned = self.on_partitions_revoked = FakeSignal()

    def agent(self, topic: Any, concurrency: int) -> Callable[[Any], Any]:
        def register(fn: Callable[[Any], Any]) -> Any:
            self.agents[fn.__name__] = fn
            return fn
        return register

    def timer(self, interval: float) -> Callable[[Any], Any]:
        return lambda fn: fn
