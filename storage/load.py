"""Writing events straight into the store, without Kafka: for tests, benchmarks, examples and
back-filling from files. Uses the same row format as the sink."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contract.events import Event, encode_batch
from storage.rows import EVENT_COLUMNS, EVENTS_FORMAT, telemetry_rows

INSERT_SETTINGS = {"input_format_json_read_objects_as_strings": 1, "date_time_input_format": "best_effort",
                   "input_format_skip_unknown_fields": 0}
EVENTS_INSERT_SETTINGS = {**INSERT_SETTINGS, "optimize_on_insert": 0, "parallel_view_processing": 1}
"""For `events` (a ReplacingMergeTree with eight materialized views), about a third faster than
INSERT_SETTINGS alone: no deduplication inside each inserted block (the sink already drops repeated
event ids within a batch, and merges still collapse any duplicate that got through), and the views fed
in parallel threads instead of one after the other (same rows, spare cores used)."""
__all__ = ["EVENTS_INSERT_SETTINGS", "EVENT_COLUMNS", "INSERT_SETTINGS", "load_events"]


def load_events(client: Any, events: Iterable[Event], batch_rows: int = 100_000) -> int:
    """Insert events (validated like the sink does) in batches; returns how many were stored."""
    lines: list[bytes] = []
    stored = 0
    for e in events:
        good, rejected = telemetry_rows(encode_batch([e]), 0, 0, 1 << 30)
        if rejected:
            raise ValueError(f"event {e.event_id} is invalid: {rejected[0].reason}")
        lines.extend(line for _, line in good)
        if len(lines) >= batch_rows:
            stored += _flush(client, lines)
    return stored + _flush(client, lines)


def _flush(client: Any, lines: list[bytes]) -> int:
    if not lines:
        return 0
    client.raw_insert("events", EVENT_COLUMNS, insert_block=b"\n".join(lines), fmt=EVENTS_FORMAT,
                      settings=EVENTS_INSERT_SETTINGS)
    n = len(lines)
    lines.clear()
    return n
