"""The data that flows into the detectors: host observations (what changed on one host at one moment).

Findings and rollout events, what flows out, are part of the shared contract (`contract.findings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contract.findings import aware_time


@dataclass(frozen=True, slots=True)
class Observation:
    """What changed on one host at one moment: the unit of scoring.

    `added`/`removed` are set-valued features (strings such as "proc:/usr/sbin/nginx|www-data") that the
    host gained or lost; `metrics` are the host's latest numeric values (any names). `gone` marks the
    host's departure (all its features leave the live baseline).
    """

    host_id: str
    image_id: str
    image_family: str
    time: datetime
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    gone: bool = False
    first: bool = False
    """True for the host's first observation (it joins its cohort with `added` = its whole state)."""
    seq_written: int = -1
    """The highest seq the host announced written to its spool (heartbeat/goodbye `seq_written`; -1 unknown)."""
    seq_received: int = -1
    """The last seq of the host the host stage received (-1 unknown): with seq_written, the tail still owed."""
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    """For some of `added`: the exact instance that brought the feature on this host (a connection's remote
    address and port and the process holding it, a listener's process). Findings name it; cohorts compare
    the features alone."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host_id": self.host_id,
            "image_id": self.image_id,
            "image_family": self.image_family,
            "time": self.time.isoformat(),
            "added": list(self.added),
            "removed": list(self.removed),
            "metrics": self.metrics,
            "gone": self.gone,
            "first": self.first,
            "seq_written": self.seq_written,
            "seq_received": self.seq_received,
        }
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            host_id=d["host_id"],
            image_id=d["image_id"],
            image_family=d["image_family"],
            time=aware_time(d["time"]),
            added=tuple(d.get("added", ())),
            removed=tuple(d.get("removed", ())),
            metrics=dict(d.get("metrics", {})),
            gone=bool(d.get("gone", False)),
            first=bool(d.get("first", False)),
            seq_written=int(d.get("seq_written", -1)),
            seq_received=int(d.get("seq_received", -1)),
            details=instances(d.get("details"), d.get("added", ())),
        )


def instances(details: Any, added: Any) -> dict[str, dict[str, Any]]:
    """The `details` of a decoded observation that are objects about one of its added features."""
    if not isinstance(details, dict) or not details:
        return {}
    features = {f for f in added if isinstance(f, str)} if isinstance(added, list | tuple) else set()
    return {f: v for f, v in details.items() if f in features and isinstance(v, dict)}
