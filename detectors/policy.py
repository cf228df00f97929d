"""Hardening policies: your own declarative rules (the `policies` knob) over configuration and package values.
The shipped file (detectors/policies.yaml) holds none: every shipped condition is a hardening check
(detectors/checks, detectors/hardening.py), so one condition gives one finding. The rules come parsed
(`rules_from_document`); streams/checks_data.py reads the file (the detectors read none).

An image is assessed once: a violation the cohort's majority shares is reported once per image. A host
whose value is not the cohort majority is reported on its own. The engine makes that split; this module
only says whether a value breaks a rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from contract.findings import Severity
from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.features import split_state
from detectors.types import Observation

_PIECE = re.compile(r"\d+|[A-Za-z]+|~")


class PolicyError(ValueError):
    """A rule file is invalid; the message names the rule and the fix."""


def version_key(version: str) -> tuple[Any, ...]:
    """A sortable key for package versions such as 1:9.6p1-3ubuntu13.5 (epoch, then numeric and alpha
    pieces in order; "~" sorts before everything, as in Debian)."""
    epoch, sep, rest = version.partition(":")
    if not sep or not epoch.isdigit():
        epoch, rest = "0", version
    out: list[tuple[int, Any]] = [(1, int(epoch))]
    for piece in _PIECE.findall(rest):
        if piece == "~":
            out.append((-2, 0))
        elif piece.isdigit():
            out.append((1, int(piece)))
        else:
            out.append((0, piece))
    out.append((-1, 0))  # the end sorts after "~" and before any further piece
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    fix: str
    key: str | None = None
    key_glob: tuple[str, ...] = ()
    package: str | None = None
    bad: tuple[str, ...] | None = None
    allowed: tuple[str, ...] | None = None
    world_writable: bool = False
    min_version: str | None = None

    def matches(self, kind: str, key: str) -> bool:
        if self.package is not None:
            return kind == "pkg" and key == self.package
        if kind != "cfg":
            return False
        return key == self.key or any(fnmatch.fnmatchcase(key, g) for g in self.key_glob)

    def broken_by(self, value: str) -> bool:
        if self.bad is not None and value in self.bad:
            return True
        if self.allowed is not None and value not in self.allowed:
            return True
        if self.world_writable:
            try:
                return bool(int(value, 8) & 0o002)
            except ValueError:
                return False
        if self.min_version is not None:
            return version_key(value) < version_key(self.min_version)
        return False


def rules_from_document(name: str, raw: Any) -> list[Rule]:
    """The rules of one parsed rule file (`name`: where it came from, named in error messages)."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{name}: a rule file is a mapping with a list of rules")
    rules = []
    for i, r in enumerate(raw.get("rules") or []):
        where = f"{name}: rule {i + 1} ({r.get('id', '?') if isinstance(r, Mapping) else '?'})"
        if not isinstance(r, Mapping):
            raise PolicyError(f"{where}: every rule is a mapping (id, key, bad ...)")
        if not r.get("id"):
            raise PolicyError(f"{where}: every rule needs an id")
        if not (r.get("key") or r.get("key_glob") or r.get("package")):
            raise PolicyError(f"{where}: say what it checks with key, key_glob or package")
        if not any(r.get(k) is not None for k in ("bad", "allowed", "world_writable", "min_version")):
            raise PolicyError(f"{where}: say what is wrong with bad, allowed, world_writable or min_version")
        try:
            severity = Severity(r.get("severity", "medium"))
        except ValueError as e:
            raise PolicyError(f"{where}: severity must be one of {[s.value for s in Severity]}") from e
        globs = r.get("key_glob") or ()
        rules.append(
            Rule(
                id=str(r["id"]),
                severity=severity,
                title=str(r.get("title", r["id"])),
                fix=str(r.get("fix", "")),
                key=r.get("key"),
                key_glob=tuple([globs] if isinstance(globs, str) else globs),
                package=r.get("package"),
                bad=tuple(str(v) for v in r["bad"]) if r.get("bad") is not None else None,
                allowed=tuple(str(v) for v in r["allowed"]) if r.get("allowed") is not None else None,
                world_writable=bool(r.get("world_writable", False)),
                min_version=str(r["min_version"]) if r.get("min_version") is not None else None,
            )
        )
    return rules


class PolicyCheck(Detector):
    """Evaluates hardening rules on cfg:/pkg: features. score_one = 1.0 when an added value breaks a rule
    and is not what the cohort's majority has (0.5 when the majority shares it: an image problem)."""

    name = "policy"

    def __init__(
        self, rules: Iterable[Rule] = (), majority: float = 0.5, baseline: CohortBaseline | None = None
    ) -> None:
        """`rules`: parsed rules (`rules_from_document`; streams/checks_data.py `policy_rules` reads a file)."""
        super().__init__(baseline)
        self.rules = tuple(rules)
        self.majority = float(majority)

    def violations(self, feature: str) -> list[Rule]:
        kind, key, value = split_state(feature)
        if kind not in ("cfg", "pkg"):
            return []
        return [r for r in self.rules if r.matches(kind, key) and r.broken_by(value)]

    def is_majority(self, image: str, feature: str) -> bool:
        n = self.baseline.n(image)
        return n > 0 and self.baseline.count(image, feature) / n >= self.majority

    def score_one(self, obs: Observation) -> float:
        best = 0.0
        for f in obs.added:
            if self.violations(f):
                best = max(best, 0.5 if self.is_majority(obs.image_id, f) else 1.0)
        return best

    @staticmethod
    def explain(rule: Rule, feature: str, host: str, image: str, count: int, n: int, image_level: bool) -> str:
        _, key, value = split_state(feature)
        if image_level:
            return (
                f"{rule.title}: {key} = {value} on {count} of {n} hosts of image {image} (assessed once "
                f"for the image, first seen on host {host}). Fix the image: {rule.fix}."
            )
        return (
            f"{rule.title}: {key} = {value} on host {host}, unlike the majority of image {image} "
            f"({count} of {n} hosts have this value). Fix: {rule.fix}."
        )
