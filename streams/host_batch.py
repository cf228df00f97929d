"""What the host stage's handled telemetry messages produce, kept and sent together (streams/host_agent.py).

Each telemetry message is one host's batch. Sent at once, every message cost a produced and a consumed
observations record and two changelog records, and that Faust and aiokafka work per record cost more than
the detectors. Under a backlog `HostBatch` keeps what the handled messages produce and sends it together:

- observations: one message per observations partition (`{"obs": [...]}`, several hosts and families, in
  the order their telemetry messages were handled; codec.py);
- host-table writes (`host_seq`, `host_state`): each key's latest value. The in-memory table has it at
  once (the host's next message reads it); its changelog record is written after the observations.

It is sent when the stage has handled every message fetched so far (up to each telemetry partition's
high-water mark: live traffic, after every message as before), when MAX_MESSAGES messages are pending, by
a timer MAX_WAIT_S after the first pending one, before a progress message to an observations partition (it
must follow that partition's observations), before a sweep deletes hosts, and before Faust commits offsets
(`faust_fixes.flush_before_commit`): offsets are committed only after everything their messages produced
is acknowledged, as before. A worker killed after the observations went out but before the changelog
records did replays those messages and sends their observations again (outputs are at least once);
never the other way round, which would lose them (the replayed events would be skipped as duplicates).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from detectors.types import Observation
from streams import codec, signals
from streams.stage_loop import unsent

MAX_MESSAGES = 200
"""Telemetry messages whose outputs are kept at most (about two collector cycles of a 120-host fleet)."""
MAX_WAIT_S = 0.2
"""How long the outputs of a handled message wait at most (well within the cohort stage's CAUGHT_UP_SETTLE_S)."""


class HostBatch:
    def __init__(self, observations: Any, partition_of: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = observations
        self.partition_of = partition_of
        """image family -> observations partition."""
        self.clock = clock
        self.observations: dict[int, list[Observation]] = {}
        """observations partition -> the observations to send to it, in order."""
        self.writes: dict[tuple[int, str], tuple[Any, int, Any]] = {}
        """(table id, key) -> (table, telemetry partition, latest value) of the changelog records to write."""
        self.messages = 0
        self.tps: set[Any] = set()
        """Telemetry partitions (TPs) of the pending messages (also in stage_loop.unsent until sent)."""
        self.since: float | None = None
        """Clock time of the first pending message."""
        self.lock = asyncio.Lock()

    def set(self, table: MutableMapping[str, Any], partition: int, key: str, value: Any) -> None:
        """table[key] = value now; the changelog record with the next send (a table without a changelog,
        a plain mapping, is simply written)."""
        if not hasattr(table, "send_changelog"):
            table[key] = value
            return
        table.data[key] = value  # type: ignore[attr-defined]
        self.writes[(id(table), key)] = (table, partition, value)

    def add(self, observations: list[Observation]) -> None:
        for o in observations:
            self.observations.setdefault(self.partition_of(o.image_family), []).append(o)

    def handled(self, tp: Any = None) -> None:
        """One more message's outputs (of telemetry partition `tp`) are pending."""
        self.messages += 1
        if tp is not None:
            self.tps.add(tp)
            unsent.add(tp)
        if self.since is None:
            self.since = self.clock()

    def due(self, idle: bool) -> bool:
        if self.since is None:
            return False
        return idle or self.messages >= MAX_MESSAGES or self.clock() - self.since >= MAX_WAIT_S

    async def send(self) -> None:
        """Send the pending observations, then write the pending changelog records. What the stage adds
        meanwhile waits for the next send; what failed to send stays pending (and the error is raised)."""
        async with self.lock:
            observations, self.observations = self.observations, {}
            writes, self.writes = self.writes, {}
            tps, self.tps = self.tps, set()
            self.messages, self.since = 0, None
            try:
                for q in sorted(observations):
                    await self._send(q, observations[q])
                    del observations[q]
            except BaseException:
                for q, obs in observations.items():  # before what came meanwhile
                    self.observations[q] = obs + self.observations.get(q, [])
                self.writes = {**writes, **self.writes}
                self.tps |= tps
                self.since = self.clock() if self.since is None else self.since
                raise
            unsent.difference_update(tps - self.tps)
            for (_, key), (table, partition, value) in writes.items():
                table.send_changelog(partition, key, value)

    async def send_progress(self, partition: int, value: bytes) -> None:
        """Send a progress message to an observations partition after its pending observations."""
        async with self.lock:
            obs = self.observations.pop(partition, None)
            if obs:
                try:
                    await self._send(partition, obs)
                except BaseException:
                    self.observations[partition] = obs + self.observations.get(partition, [])
                    raise
            await self.topic.send(value=value, partition=partition)

    async def _send(self, partition: int, obs: list[Observation]) -> None:
        signals.observation_messages.emit()
        await self.topic.send(value=codec.encode_observations(obs), partition=partition)
