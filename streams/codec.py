"""The internal observations topic's messages: JSON, so they can be inspected with any Kafka client.

    {"obs": [Observation.to_dict(), ...]}   hosts' changes from one or more telemetry messages (under a
                                             backlog the host stage sends several together, host_batch.py)
    {"tick": <epoch seconds>}                periodic work for the cohorts of that partition
    {"progress": [<telemetry partition>, <event time>]}
                                             the host stage has handled that telemetry partition up to that
                                             event time (sent to every observations partition, so a cohort
                                             partition learns how far a telemetry partition got even when
                                             none of its hosts belongs to the cohort's families)
"""

from __future__ import annotations

from typing import Any

import orjson

from contract.findings import Finding, RolloutEvent
from detectors.types import Observation


def encode_observations(observations: list[Observation]) -> bytes:
    return orjson.dumps({"obs": [o.to_dict() for o in observations]})


def encode_tick(wall: float) -> bytes:
    return orjson.dumps({"tick": wall})


def encode_progress(telemetry_partition: int, event_time: float) -> bytes:
    return orjson.dumps({"progress": [telemetry_partition, event_time]})


def decode_progress(value: bytes) -> tuple[int, float] | None:
    """(telemetry partition, event time) of a progress message; None for any other message."""
    if not value.startswith(b'{"progress"'):
        return None
    p, t = orjson.loads(value)["progress"]
    if type(p) is not int or p < 0 or not isinstance(t, int | float):
        raise ValueError(f"bad progress message: {value[:80]!r}")
    return p, float(t)


def decode(value: bytes) -> tuple[list[Observation], float | None]:
    """Observations and the tick's wall time (None unless it is a tick message)."""
    obj: dict[str, Any] = orjson.loads(value)
    if "tick" in obj:
        return [], float(obj["tick"])
    return [Observation.from_dict(d) for d in obj.get("obs", ())], None


def encode_output(item: Finding | RolloutEvent) -> bytes:
    return orjson.dumps(item.to_dict())
