"""Configuration drift: a host's configuration value, file hash, package version or kernel module that
differs from its cohort's majority (or a value the majority has and the host lost)."""

from __future__ import annotations

from contract.findings import Severity
from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.features import STATE_KINDS, kind_of, split_state
from detectors.types import Observation

_SENSITIVE = (
    "sshd.",
    "authorized_keys:",
    "sudoers",
    "file.sha256:/etc/passwd",
    "file.sha256:/etc/shadow",
    "file.sha256:/etc/sudoers",
    "file.sha256:/etc/ssh/",
    "file.mode:/etc/",
    "pam.",
    "sysctl.kernel.",
)


class ConfigDrift(Detector):
    """Compares a state feature (cfg/pkg/mod) with the cohort's majority for the same key.

    Score = 1 - share of hosts with the host's value. A value is drift when at most
    max(1, rare_fraction * n) hosts have it; the explanation names the majority value.
    """

    name = "drift"

    def __init__(
        self,
        rare_fraction: float = 0.1,
        majority: float = 0.5,
        min_hosts: int = 3,
        baseline: CohortBaseline | None = None,
    ) -> None:
        super().__init__(baseline)
        self.rare_fraction = float(rare_fraction)
        self.majority = float(majority)
        self.min_hosts = int(min_hosts)

    def values(self, image: str, kind: str, key: str) -> dict[str, int]:
        """Every value of `key` in the cohort with its host count ({"": n} for a module's presence)."""
        prefix = f"{kind}:{key}=" if kind in ("cfg", "pkg") else f"{kind}:{key}"
        out: dict[str, int] = {}
        for f, e in self.baseline.counts.get(image, {}).items():
            if f.startswith(prefix) and ((kind == "mod" and f == prefix) or kind != "mod"):
                out[f[len(prefix) :]] = int(e[0])
        return out

    def majority_value(self, image: str, kind: str, key: str) -> tuple[str | None, int]:
        vals = self.values(image, kind, key)
        if not vals:
            return None, 0
        value, count = max(vals.items(), key=lambda kv: kv[1])
        n = self.baseline.n(image)
        return (value, count) if n and count / n >= self.majority else (None, count)

    def feature_score(self, image: str, feature: str) -> float:
        n = self.baseline.n(image)
        if n == 0:
            return 0.0
        return max(0.0, 1.0 - self.baseline.count(image, feature) / n)

    def score_one(self, obs: Observation) -> float:
        best = 0.0
        for f in obs.added:
            if kind_of(f) in STATE_KINDS:
                best = max(best, self.feature_score(obs.image_id, f))
        return best

    @staticmethod
    def severity(feature: str) -> Severity:
        kind, key, _ = split_state(feature)
        if kind == "cfg" and key.startswith(_SENSITIVE):
            return Severity.HIGH
        if kind == "mod":
            return Severity.HIGH
        return Severity.MEDIUM

    def explain(self, feature: str, host: str, image: str, absent: bool = False) -> tuple[str, dict[str, object]]:
        kind, key, value = split_state(feature)
        n = self.baseline.n(image)
        count = self.baseline.count(image, feature)
        maj, maj_count = self.majority_value(image, kind, key)
        what = {"cfg": "configuration", "pkg": "package", "mod": "kernel module"}[kind]
        details: dict[str, object] = {
            "key": key,
            "value": None if absent else value,
            "majority": maj,
            "majority_hosts": maj_count,
            "hosts": n,
        }
        if absent:
            return (
                f"{what} {key}{' = ' + value if value else ''} is missing on host {host} but present on "
                f"{count} of {n} hosts of image {image}. Check whether it was removed on purpose."
            ), details
        shown = f"{key} = {value}" if kind != "mod" else key
        if maj is not None and kind != "mod":
            rest = f"{maj_count} of {n} hosts of image {image} have {maj!r}"
        else:
            rest = f"{n - count} of {n} hosts of image {image} do not have it"
        return (
            f"{what} {shown} on host {host} differs from its clones: only {count} of {n} hosts have this "
            f"value; {rest}. Compare the host's {what} with the image and revert or explain the change."
        ), details
