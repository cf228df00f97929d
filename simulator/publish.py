"""Sending a simulated fleet's telemetry to Kafka through the collector's own producer path."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from collectors.publisher import Publisher
from simulator import signals
from simulator.clock import SimClock
from simulator.fleet import Cycle, Fleet


@dataclass
class PublishStats:
    cycles: int = 0
    messages: int = 0
    events: int = 0
    failed: int = 0
    """Messages Kafka did not acknowledge (delivery errors, or still unacknowledged after the flush)."""
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def publish_fleet(
    fleet: Fleet,
    publisher: Publisher,
    clock: SimClock | None = None,
    max_cycles: int | None = None,
    on_cycle: Callable[[Cycle, PublishStats], None] | None = None,
    flush_timeout: float = 60.0,
) -> PublishStats:
    """Publish every cycle of `fleet` (one Kafka message per host per cycle), paced by `clock`."""
    stats = PublishStats()

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            stats.failed += 1
            signals.batch_delivery_failed.emit(error=str(err))

    t0 = time.perf_counter()
    for cycle in fleet.cycles():
        if max_cycles is not None and stats.cycles >= max_cycles:
            break
        if clock is not None:
            if clock.lag(cycle.time) > fleet.cycle:
                signals.behind_schedule.emit()
            clock.wait_until(cycle.time)
        for _host_id, events in cycle.batches:
            publisher.publish(events, on_delivery=delivered)
            stats.messages += 1
            stats.events += len(events)
        stats.cycles += 1
        if on_cycle is not None:
            on_cycle(cycle, stats)
    stats.failed += publisher.flush(flush_timeout)
    stats.seconds = time.perf_counter() - t0
    return stats
