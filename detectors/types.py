"""The data that flows into the detectors: host observations (what changed on one host at one moment).

Findings and rollout events, what flows out, are part of the shared contract (`contract.findings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contract.findings import aware_time


class Seen(str):
    """A feature string that also carries the exact instance that brought it on this host (`details`): for a
    connection the remote address and port and the process holding it, for a listener the process.

    It compares, hashes and serialises as the plain feature, so cohorts still compare features alone and
    every fold of observations (the host stage merges one batch's observations by feature) keeps it;
    `Observation.to_dict` sends the details alongside (`details`: feature -> object) so the cohort stage can
    name the exact instance in a finding. Any string operation on it gives a plain str (details dropped).
    """

    details: dict[str, Any]

    def __new__(cls, feature: str, details: dict[str, Any]) -> Seen:
        obj = super().__new__(cls, feature)
        obj.details = details
        return obj


def details_of(feature: str) -> dict[str, Any]:
    """The exact instance a feature carries (`Seen`), or {}."""
    return feature.details if isinstance(feature, Seen) else {}


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
        details = {str(f): f.details for f in self.added if isinstance(f, Seen) and f.details}
        if details:
            out["details"] = details
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            host_id=d["host_id"],
            image_id=d["image_id"],
            image_family=d["image_family"],
            time=aware_time(d["time"]),
            added=_with_details(d.get("added", ()), d.get("details")),
            removed=tuple(d.get("removed", ())),
            metrics=dict(d.get("metrics", {})),
            gone=bool(d.get("gone", False)),
            first=bool(d.get("first", False)),
            seq_written=int(d.get("seq_written", -1)),
            seq_received=int(d.get("seq_received", -1)),
        )


def _with_details(added: Any, details: Any) -> tuple[str, ...]:
    """The added features of a decoded observation, with the details sent alongside (objects only)."""
    if not isinstance(details, dict) or not details:
        return tuple(added)
    return tuple(Seen(f, details[f]) if isinstance(details.get(f), dict) else f for f in added)
