"""Gauges and histograms a worker exposes next to its signals (lag, latency, table sizes), and their timer."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Gauge, Histogram

log = logging.getLogger("herdwatch.streams")

consumer_lag = Gauge("herdwatch_streams_consumer_lag", "messages behind the end of each consumed topic",
                     ["topic"])
processing_seconds = Histogram("herdwatch_streams_processing_seconds",
                               "time to process one consumed message", ["stage"],
                               buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0))
event_delay_seconds = Histogram("herdwatch_streams_event_delay_seconds",
                                "event time to the moment its finding is published",
                                buckets=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0))
table_entries = Gauge("herdwatch_streams_table_entries", "entries held in each table on this worker", ["table"])
assigned_partitions = Gauge("herdwatch_streams_assigned_partitions",
                            "partitions of each consumed topic this worker owns", ["topic"])


def add_gauges_timer(app: Any, tables: dict[str, Any], sources: tuple[str, ...], interval_s: float = 2.0) -> None:
    """Refresh the gauges every `interval_s`: table sizes, lag and owned partitions of the source topics."""

    async def update() -> None:
        for name, table in tables.items():
            table_entries.labels(name).set(len(table))
        lag: dict[str, int] = dict.fromkeys(sources, 0)
        owned: dict[str, int] = dict.fromkeys(sources, 0)
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic not in sources:
                continue
            owned[tp.topic] += 1
            position = await consumer.position(tp)
            high = consumer.highwater(tp)
            if position is not None and high is not None:
                lag[tp.topic] += max(0, high - position)
        for name in sources:
            consumer_lag.labels(name).set(lag[name])
            assigned_partitions.labels(name).set(owned[name])

    # A timer must never raise: an exception in a timer crashes the whole Faust app.
    @app.timer(interval_s)
    async def gauges() -> None:
        try:
            await update()
        except Exception as e:
            log.debug("gauges skipped: %r", e)
