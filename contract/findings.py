"""What herdwatch reports: findings about hosts, rollout events about images, hosts joining and leaving.

These are the messages of the anomalies, rollouts and lifecycle topics: the detectors create them, the stream
workers publish them, storage keeps them and the CLI prints them. They serialise to plain JSON-able
dicts with `to_dict` / `from_dict`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class FindingKind(StrEnum):
    RARE_FEATURE = "rare_feature"  # a set feature (process, port, destination, ...) rare in the cohort
    CAMPAIGN = "campaign"  # behaviour new to the image on several of its hosts at once (details.hosts: all)
    METRIC_DEVIATION = "metric_deviation"  # a metric far from the cohort's peers at the same time
    MULTIVARIATE_OUTLIER = "multivariate_outlier"  # the host's metric vector is an outlier (sklearn)
    CONFIG_DRIFT = "config_drift"  # configuration differs from the cohort's majority
    POLICY_VIOLATION = "policy_violation"  # a hardening rule is broken
    STALE_IMAGE = "stale_image"  # host still runs an image its family has rolled away from
    DATA_LOSS = "data_loss"  # per-host sequence gap: events were lost on the way
    CLOCK_SKEW = "clock_skew"  # the host's clock is off: its events were re-timed to their arrival
    IDENTITY_CONFLICT = "identity_conflict"  # a batch for the host was not signed by its pinned key


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly about one host, with a score in [0, 1] and an explanation a person can act on."""

    kind: FindingKind
    host_id: str
    image_id: str
    image_family: str
    time: datetime
    score: float
    severity: Severity
    subject: str
    """The feature or metric the finding is about (also the suppression key with host_id)."""
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def finding_id(self) -> str:
        raw = f"{self.kind}|{self.host_id}|{self.subject}|{self.time.isoformat()}"
        return hashlib.sha1(raw.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding_id": self.finding_id,
            "kind": self.kind.value,
            "host_id": self.host_id,
            "image_id": self.image_id,
            "image_family": self.image_family,
            "time": self.time.isoformat(),
            "score": self.score,
            "severity": self.severity.value,
            "subject": self.subject,
            "explanation": self.explanation,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            kind=FindingKind(d["kind"]),
            host_id=d["host_id"],
            image_id=d["image_id"],
            image_family=d["image_family"],
            time=aware_time(d["time"]),
            score=float(d["score"]),
            severity=Severity(d["severity"]),
            subject=d["subject"],
            explanation=d["explanation"],
            details=dict(d.get("details", {})),
        )


class RolloutStatus(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    """An informational event: a new image is replacing an old one within an image family."""

    image_family: str
    old_image: str
    new_image: str
    status: RolloutStatus
    share: float
    time: datetime
    explanation: str
    diff: dict[str, list[str]] = field(default_factory=dict)
    """Features the new image brings or drops: {"added": [...], "removed": [...]}."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_family": self.image_family,
            "old_image": self.old_image,
            "new_image": self.new_image,
            "status": self.status.value,
            "share": self.share,
            "time": self.time.isoformat(),
            "explanation": self.explanation,
            "diff": self.diff,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutEvent:
        return cls(
            image_family=d["image_family"],
            old_image=d["old_image"],
            new_image=d["new_image"],
            status=RolloutStatus(d["status"]),
            share=float(d["share"]),
            time=aware_time(d["time"]),
            explanation=d["explanation"],
            diff=dict(d.get("diff", {})),
        )


@dataclass(frozen=True, slots=True)
class HostLifecycle:
    """A host joined its cohort ("up") or left it ("gone": goodbye, timeout), with when it was seen."""

    host_id: str
    image_id: str
    image_family: str
    status: Literal["up", "gone"]
    time: datetime
    first_seen: datetime
    last_seen: datetime
    reason: str
    """Why: "first event", "re-imaged from <image>", "goodbye" or "timeout"."""
    missing_events: int = 0
    """At a timeout: events the host announced written (heartbeat `seq_written`) but never received."""

    def to_dict(self) -> dict[str, Any]:
        def zulu(t: datetime) -> str:  # ISO 8601 in UTC with a "Z" suffix, e.g. 2026-03-01T12:00:00Z
            return t.astimezone(UTC).isoformat().replace("+00:00", "Z")

        return {
            "host_id": self.host_id,
            "image_id": self.image_id,
            "image_family": self.image_family,
            "status": self.status,
            "time": zulu(self.time),
            "first_seen": zulu(self.first_seen),
            "last_seen": zulu(self.last_seen),
            "reason": self.reason,
            "missing_events": self.missing_events,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostLifecycle:
        status = d["status"]
        if status not in ("up", "gone"):
            raise ValueError(f"lifecycle status must be 'up' or 'gone', got {status!r}")
        return cls(
            host_id=d["host_id"],
            image_id=d["image_id"],
            image_family=d["image_family"],
            status=status,
            time=aware_time(d["time"]),
            first_seen=aware_time(d["first_seen"]),
            last_seen=aware_time(d["last_seen"]),
            reason=d["reason"],
            missing_events=int(d.get("missing_events", 0)),
        )


def aware_time(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)
