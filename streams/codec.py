"""The internal observations topic's messages: JSON, so they can be inspected with any Kafka client.

    {"obs": [Observation.to_dict(), ...]}   one host's changes from one telemetry message
    {"tick": <epoch seconds>}                periodic work for the cohorts of that partition
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


def decode(value: bytes) -> tuple[list[Observation], float | None]:
    """Observations and the tick's wall time (None unless it is a tick message)."""
    obj: dict[str, Any] = orjson.loads(value)
    if "tick" in obj:
        return [], float(obj["tick"])
    return [Observation.from_dict(d) for d in obj.get("obs", ())], None


def encode_output(item: Finding | RolloutEvent) -> bytes:
    return orjson.dumps(item.to_dict())
