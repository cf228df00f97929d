"""EngineConfig: every knob of the FamilyEngine, typed, documented and checked when it is built.

    config = EngineConfig(min_hosts=5, confirm_s=60)             # in code (mypy checks the names)
    config = EngineConfig.from_mapping({"min_hosts": 5})         # from JSON, a settings file, --set
    EngineConfig.from_mapping(config.to_dict()) == config        # round-trips

A wrong value fails at once with a message that names the knob and what it accepts, and `from_mapping`
answers an unknown name with the closest known one ("did you mean min_hosts?"), so a typo in a worker's
settings stops the worker at start instead of at the first family it sees.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


class EngineConfigError(ValueError):
    """A knob is unknown, of the wrong type or out of range; the message says how to fix it."""


def _number(
    default: float, doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> Any:
    return field(default=default, metadata={"type": float, "doc": doc, "ge": ge, "gt": gt, "le": le})


def _integer(default: int, doc: str, *, ge: int) -> Any:
    return field(default=default, metadata={"type": int, "doc": doc, "ge": ge, "gt": None, "le": None})


def _flag(default: bool, doc: str) -> Any:
    return field(default=default, metadata={"type": bool, "doc": doc})


@dataclass(frozen=True)
class EngineConfig:
    """The FamilyEngine's whole configuration (docs/detection.md, section 6)."""

    rare_fraction: float = _number(0.1, "a feature on at most max(1, rare_fraction x n) hosts is rare", gt=0, le=1)
    min_hosts: int = _integer(3, "critical mass of a cohort", ge=1)
    majority: float = _number(
        0.5, "share that makes a value the cohort's majority (drift, image-level policy, rollout diff)", gt=0, le=1
    )
    absent_majority: float = _number(
        0.9, "share of the cohort that must show a process/listener for its absence on one host to count", gt=0, le=1
    )
    confirm_s: float = _number(30.0, "delay before a rare behaviour feature is judged", ge=0)
    grace_s: float = _number(120.0, "delay before a configuration/package/module value is judged", ge=0)
    settle_s: float = _number(60.0, "a spreading feature is judged only after it stopped spreading this long", ge=0)
    recheck_s: float = _number(30.0, "how often held judgements are looked at again", gt=0)
    suppress_s: float = _number(3600.0, "duplicate window per host and subject", ge=0)
    host_timeout_s: float = _number(300.0, "silence after which a host leaves its cohort (inf: never)", gt=0)
    self_learn_s: float = _number(600.0, "for hosts without clones: what appears later than this is new", ge=0)
    rollout_hold_s: float = _number(
        1800.0, "longest hold of a new image's judgements before falling back to its family", ge=0
    )
    complete_share: float = _number(0.9, "share of the new image that lets a stalled rollout complete", gt=0, le=1)
    rollout_complete_after_s: float = _number(300.0, "a rollout whose shares stalled this long may complete", ge=0)
    rollout_return_s: float = _number(
        300.0, "hosts back on an image rolled away from wait this long: min_hosts of them are a rollback", ge=0
    )
    image_retention_s: float = _number(
        86400.0, "forget images that have no hosts and were first seen longer ago than this", ge=0
    )
    policies: str | None = field(
        default=None, metadata={"type": str, "doc": "path of a policy rule file (None: the shipped rules)"}
    )
    hardening_checks: str | None = field(
        default=None,
        metadata={"type": str, "doc": "folder (or file) of hardening checks (None: the shipped detectors/checks)"},
    )
    osv_path: str | None = field(
        default=None,
        metadata={"type": str, "doc": "OSV data: a folder, .zip or .json (None: HERDWATCH_WORKER_OSV_PATH); "
                                      "read by the worker and the CLI (streams/osv_data.py), not the engine"},
    )
    hardening_delay_s: float = _number(
        30.0, "delay before an image's or host's new configuration is judged by the hardening checks", ge=0
    )
    peer_min_z: float = _number(5.0, "robust z from which a metric deviates from its peers", gt=0)
    peer_min_rel: float = _number(0.5, "a deviation must also be this share of the peers' median", ge=0)
    peer_min_abs: Mapping[str, float] | None = field(
        default=None,
        metadata={"type": Mapping, "doc": "per metric, the smallest difference that counts (None: the defaults)"},
    )
    peer_persistence: int = _integer(5, "consecutive deviating reports before a metric finding", ge=1)
    peer_window_s: float = _number(
        180.0, "peers' reports at least this old are still compared with (the window also follows the cadence)", gt=0
    )
    peer_min_peers: int = _integer(3, "other hosts' reports a metric comparison needs", ge=1)
    peer_window_intervals: float = _number(
        3.0, "peers' reports older than this many of the host's reporting intervals are not compared with", gt=0
    )
    alarm_budget: float = _number(
        1.0, "metric false alarms per 1,000 host-hours each metric detector is calibrated to", gt=0
    )
    self_history_enabled: bool = _flag(True, "judge each host's metrics against its own seasonal history")
    self_history_alpha: float = _number(1e-4, "learning rate of a host's own overall level and spread", gt=0, le=1)
    self_history_bucket_alpha: float = _number(
        2e-3, "learning rate of a host's hour-of-day levels (day-of-week: a quarter of it)", gt=0, le=1
    )
    self_history_warmup: int = _integer(120, "reports of a host before its own history judges it", ge=2)
    self_history_seasonal: bool = _flag(True, "hour-of-day and day-of-week views of a host's own history")
    self_history_checkpoint_s: float = _number(
        600.0, "how often a host's learned history is written to the store", gt=0
    )
    history_s: float = _number(
        86400.0, "behaviour an image showed within this long is known, even if no live host shows it now", ge=0
    )
    history_max: int = _integer(4096, "behaviour features remembered per image (least recently seen evicted)", ge=1)
    campaign_share: float = _number(
        0.5, "behaviour new to the image on more than rare and fewer than this share of hosts: a campaign", ge=0, le=1
    )
    campaign_window_s: float = _number(
        600.0, "after a report, more hosts gaining the same new behaviour within this long join its campaign", ge=0
    )
    campaign_after_s: float = _number(
        180.0, "an image whose history (its own and the images it replaced) is younger than this has no basis for "
        "campaigns: behaviour on several of its hosts is its own, and one reported on a host is not followed", ge=0
    )
    mv_enabled: bool = _flag(True, "look for multivariate outliers (IsolationForest per cohort)")
    mv_min_hosts: int = _integer(8, "reporting hosts a cohort needs for the multivariate model", ge=2)
    mv_refit_s: float = _number(
        120.0, "least event time between two multivariate scorings (refits happen only at a scoring)", gt=0
    )
    mv_refit_reports: int = _integer(
        48, "refit the multivariate model after this many new reports per host (or a report outside its range)", ge=1
    )
    mv_threshold: float = _number(0.6, "isolation score from which a host is an outlier", ge=0, le=1)
    mv_min_z: float = _number(6.0, "robust z of the isolation score above the peers' scores", ge=0)
    mv_persistence: int = _integer(2, "distinct outlying reports in a row before a finding", ge=1)
    record_scores: bool = _flag(False, "keep every detector's score of the last observation (engine.last_scores)")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), f.metadata))

    # ---- building from plain data ------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> EngineConfig:
        """A config from plain data (JSON, --set pairs); unknown names are answered with the closest known."""
        values = dict(values or {})
        known = cls.knobs()
        unknown = [k for k in values if k not in known]
        if unknown:
            raise EngineConfigError("; ".join(_unknown(str(k), known) for k in unknown))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every knob as plain JSON-able data (`from_mapping` turns it back into an equal config)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(v) if isinstance(v, Mapping) else v
        return out

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some knobs changed (checked like `from_mapping`)."""
        return EngineConfig.from_mapping({**self.to_dict(), **changes})

    @classmethod
    def knobs(cls) -> dict[str, str]:
        """Knob name -> what it does."""
        return {f.name: str(f.metadata["doc"]) for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _unknown(name: str, known: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown engine setting {name!r}{hint}; known settings: {', '.join(known)}"


def _accepts(meta: Mapping[str, Any]) -> str:
    kind = meta["type"]
    what = {float: "a number", int: "an integer", bool: "true or false", str: "a string or null"}.get(
        kind, "an object of {metric: number >= 0} or null"
    )
    ops = (("ge", ">="), ("gt", ">"), ("le", "<="))
    bounds = [f"{op} {meta[key]:g}" for key, op in ops if meta.get(key) is not None]
    return what + (" " + " and ".join(bounds) if bounds else "")


def _checked(name: str, value: Any, meta: Mapping[str, Any]) -> Any:
    """`value` as the knob's type, or an EngineConfigError naming the knob and what it accepts."""
    kind = meta["type"]

    def bad() -> EngineConfigError:
        return EngineConfigError(f"engine setting {name} must be {_accepts(meta)}, got {value!r}")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind is str:
        if value is not None and not isinstance(value, str):
            raise bad()
        return value
    if kind is Mapping:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise bad()
        out: dict[str, float] = {}
        for metric, x in value.items():
            if not isinstance(metric, str) or isinstance(x, bool) or not isinstance(x, (int, float)):
                raise bad()
            if math.isnan(x) or x < 0:
                raise bad()
            out[metric] = float(x)
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise bad()
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise bad()
        value = int(value)
    else:
        value = float(value)
    ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
    if (ge is not None and value < ge) or (gt is not None and value <= gt) or (le is not None and value > le):
        raise bad()
    return value
