"""Typed records of the engine's durable state, and their JSON form in the store.

The store is a Faust table in the stream workers: its values must be JSON (dicts with string keys, lists,
strings, numbers, booleans, null). Each record here names its fields and converts to and from that form
with `to_json` / `from_json`; `from_json(to_json(r)) == r` for every record. Which key holds which
record is in store_keys.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.findings import RolloutStatus


@dataclass(frozen=True)
class HostEntry:
    """A live host of a cohort (key HOST)."""

    image: str
    family: str
    first: float
    """When the host joined its cohort."""
    last: float
    """When it was last seen (rewritten at most every touch_every_s)."""

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "family": self.family, "first": self.first, "last": self.last}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> HostEntry:
        return cls(str(v["image"]), str(v["family"]), float(v["first"]), float(v["last"]))


@dataclass(frozen=True)
class FeatureCount:
    """How many live hosts of a cohort show a feature (key FEATURE_COUNT)."""

    hosts: int
    first: float
    """When a host of the cohort first showed it."""

    def to_json(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "first": self.first}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> FeatureCount:
        return cls(int(v["hosts"]), float(v["first"]))


@dataclass(frozen=True)
class MetricReport:
    """A live host's latest metrics (key HOST_METRICS)."""

    time: float
    values: dict[str, float]
    unscored: tuple[tuple[float, dict[str, float]], ...] = ()
    """The host's reports (this one included) not yet scored when this was written, oldest first: metric
    scoring waits for the stream's low watermark, and a restarted worker scores these then."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"time": self.time, "values": dict(self.values)}
        if self.unscored:
            d["unscored"] = [[t, dict(v)] for t, v in self.unscored]
        return d

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> MetricReport:
        unscored = tuple((float(t), {str(k): float(x) for k, x in m.items()}) for t, m in v.get("unscored") or ())
        return cls(float(v["time"]), {str(k): float(x) for k, x in v["values"].items()}, unscored)


@dataclass(frozen=True)
class PendingJudgement:
    """A rare (or missing) feature of a cohort waiting to be judged (key PENDING)."""

    first: float
    """When the first host showed it (or lost it)."""
    grown: float
    """When the last host joined in: the judgement waits until it has not spread for settle_s."""
    delay: float
    """confirm_s for behaviour, grace_s for configuration, packages and modules."""
    hosts: dict[str, float]
    """host -> when it showed the feature; capped a little above what still counts as rare."""
    policy: bool = False
    """A configuration or package value that breaks a policy rule (judged however common it is)."""
    recheck_at: float = 0.0
    """Held (a new image below critical mass): look again no earlier than this."""
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    """host -> the exact instance that brought the feature there (a connection's remote address and port,
    the process holding it), for hosts whose observation carried one; named in the finding."""
    left: dict[str, tuple[float, str, float]] = field(default_factory=dict)
    """host -> (when it left the cohort or lost the feature, its family, when it joined), for hosts of
    `hosts` that did so before the judgement was made: a judgement made late, as of when it was due, still
    counts a host that had the feature then."""

    def due(self, settle_s: float) -> float:
        """When the judgement can be made."""
        spread = self.grown + (settle_s if len(self.hosts) > 1 else 0.0)
        return max(self.first + self.delay, spread, self.recheck_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "grown": self.grown,
            "delay": self.delay,
            "hosts": dict(self.hosts),
            "policy": self.policy,
            "recheck_at": self.recheck_at,
            **({"seen": {h: dict(d) for h, d in self.seen.items()}} if self.seen else {}),
            **({"left": {h: list(v) for h, v in self.left.items()}} if self.left else {}),
        }

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> PendingJudgement:
        return cls(
            first=float(v["first"]),
            grown=float(v["grown"]),
            delay=float(v["delay"]),
            hosts={str(h): float(t) for h, t in v["hosts"].items()},
            policy=bool(v.get("policy", False)),
            recheck_at=float(v.get("recheck_at", 0.0)),
            seen={str(h): dict(d) for h, d in (v.get("seen") or {}).items() if isinstance(d, dict)},
            left={str(h): (float(x[0]), str(x[1]), float(x[2])) for h, x in (v.get("left") or {}).items()},
        )


@dataclass(frozen=True)
class FeatureHistory:
    """A behaviour feature the image has shown (key HISTORY): known behaviour, even when no live host
    shows it right now (a periodic job's short-lived child caught on some clones at some times)."""

    first: float
    """When it was first judged (the end of its first episode: not rare, spread, or reported)."""
    last: float
    """When a host of the image was last seen showing it (refreshed at most every few minutes)."""
    reported: float = 0.0
    """When it was reported as rare (0: never). For campaign_window_s after that, more hosts gaining it
    are a campaign, not known behaviour."""
    hosts: tuple[str, ...] = ()
    """The hosts it was reported on (capped), named again when it spreads as a campaign."""

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "reported": self.reported, "hosts": list(self.hosts)}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> FeatureHistory:
        return cls(
            first=float(v["first"]),
            last=float(v["last"]),
            reported=float(v.get("reported", 0.0)),
            hosts=tuple(str(h) for h in v.get("hosts", ())),
        )


@dataclass(frozen=True)
class ImageLineage:
    """The images an image replaced in its family (key LINEAGE), newest last: what they did within history_s
    is not new for the family, so it is known behaviour of the new image too (detectors/rarity.py)."""

    replaced: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"replaced": list(self.replaced)}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> ImageLineage:
        return cls(replaced=tuple(str(i) for i in v.get("replaced", ())))


@dataclass
class RolloutState:
    """A family's latest rollout (key ROLLOUT): the tracker reads it, changes it and writes it back."""

    old: str
    """The established image being replaced."""
    new: str
    """The image replacing it."""
    status: RolloutStatus
    started: float
    share: float = 0.0
    """The new image's share of the two cohorts' hosts when last updated."""
    milestone: float = 0.0
    """The last progress milestone reported (0.25, 0.5, 0.75)."""
    diff: dict[str, int] | None = None
    """Sizes of the reported image diff ({"added": n, "removed": n}); None until it was reported."""
    done: float | None = None
    """When the rollout completed."""
    peak: int = 1
    """Most hosts the new image had."""
    stale: dict[str, str] = field(default_factory=dict)
    """The last few images the family rolled away from: old image -> the image that replaced it."""
    moved: float | None = None
    """When the share last changed."""
    back: dict[str, list[float]] = field(default_factory=dict)
    """Images rolled away from whose hosts are coming back: image -> join times within the return window."""
    rollback: bool = False
    """This rollout is the way back to an image the family had rolled away from."""

    @property
    def active(self) -> bool:
        return self.status in (RolloutStatus.STARTED, RolloutStatus.PROGRESS)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "status": self.status.value,
            "started": self.started,
            "share": self.share,
            "milestone": self.milestone,
            "diff": None if self.diff is None else dict(self.diff),
            "done": self.done,
            "peak": self.peak,
            "stale": dict(self.stale),
            "moved": self.moved,
            "back": {k: list(ts) for k, ts in self.back.items()},
            "rollback": self.rollback,
        }

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> RolloutState:
        diff = v.get("diff")
        done, moved = v.get("done"), v.get("moved")
        return cls(
            old=str(v["old"]),
            new=str(v["new"]),
            status=RolloutStatus(v["status"]),
            started=float(v["started"]),
            share=float(v.get("share", 0.0)),
            milestone=float(v.get("milestone", 0.0)),
            diff=None if diff is None else {str(k): int(n) for k, n in diff.items()},
            done=None if done is None else float(done),
            peak=int(v.get("peak", 1)),
            stale={str(k): str(x) for k, x in (v.get("stale") or {}).items()},
            moved=None if moved is None else float(moved),
            back={str(k): [float(x) for x in ts] for k, ts in (v.get("back") or {}).items()},
            rollback=bool(v.get("rollback", False)),
        )
