"""Gauges and histograms a worker exposes next to its signals: lag, latency, table sizes."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

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
