"""Cohort rarity: a behaviour feature (process, parent->child, listener, destination, login) that few of
the cohort's live hosts show."""

from __future__ import annotations

from contract.findings import Severity
from detectors.base import Detector, hhmmss
from detectors.baseline import CohortBaseline
from detectors.features import IMMEDIATE_KINDS, describe, kind_of
from detectors.types import Observation

_SUSPICIOUS_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
_SHELLS = ("/sh", "/bash", "/dash", "/zsh", "/nc", "/ncat", "/socat", "/python3", "/perl")


class CohortRarity(Detector):
    """Scores a feature by how few of the cohort's hosts show it: score = 1 - hosts showing / cohort size.

    A feature is *rare* when at most max(1, rare_fraction * n) of the n live hosts show it. Cohorts with
    fewer than `min_hosts` hosts are compared with their whole image family instead.
    """

    name = "rarity"

    def __init__(
        self,
        rare_fraction: float = 0.1,
        min_hosts: int = 3,
        kinds: frozenset[str] = IMMEDIATE_KINDS,
        baseline: CohortBaseline | None = None,
    ) -> None:
        super().__init__(baseline)
        self.rare_fraction = float(rare_fraction)
        self.min_hosts = int(min_hosts)
        self.kinds = frozenset(kinds)

    def rare_max(self, n: int) -> int:
        return max(1, int(self.rare_fraction * n))

    def counts(self, image: str, family: str, feature: str) -> tuple[int, int, str]:
        """(hosts showing the feature, hosts compared, scope) with scope "cohort" or "family"."""
        b = self.baseline
        n = b.n(image)
        if n >= self.min_hosts:
            return b.count(image, feature), n, "cohort"
        fn = b.family_n(family)
        if fn > n:
            return b.family_count(family, feature), fn, "family"
        return b.count(image, feature), n, "cohort"

    def feature_score(self, image: str, family: str, feature: str) -> float:
        count, n, _ = self.counts(image, family, feature)
        if n == 0:
            return 0.0
        return max(0.0, 1.0 - count / n)

    def score_one(self, obs: Observation) -> float:
        best = 0.0
        for f in obs.added:
            if kind_of(f) in self.kinds:
                best = max(best, self.feature_score(obs.image_id, obs.image_family, f))
        return best

    @staticmethod
    def severity(feature: str) -> Severity:
        kind = kind_of(feature)
        body = feature[len(kind) + 1 :]
        if kind == "proc":
            exe = body.split("|", 1)[0]
            if exe.startswith(_SUSPICIOUS_DIRS) or "/." in exe:
                return Severity.CRITICAL
            return Severity.HIGH
        if kind == "pc":
            child = body.partition(">")[2]
            return Severity.CRITICAL if child.endswith(_SHELLS) else Severity.MEDIUM
        if kind == "listen":
            return Severity.HIGH
        if kind == "dest":
            return Severity.HIGH if "@public" not in body and "@10." not in body else Severity.MEDIUM
        return Severity.MEDIUM

    @staticmethod
    def explain(
        feature: str,
        host: str,
        image: str,
        count: int,
        n: int,
        scope: str,
        scope_name: str,
        first_seen: float | None,
    ) -> str:
        where = (
            f"image {image}"
            if scope == "cohort"
            else f"image family {scope_name} (image {image} has too few hosts to compare with on its own)"
        )
        first = f" (first seen {hhmmss(first_seen)} UTC)" if first_seen else ""
        others = "none of its clones shows it" if count <= 1 else f"only {count - 1} of its clones show it"
        return (
            f"{describe(feature)} seen on {count} of {n} hosts of {where}{first}: {others}. "
            f"Check host {host}: who started it and why."
        )
