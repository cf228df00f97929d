"""Configuration drift: a host's configuration value, file hash, package version or kernel module that
differs from its cohort's majority (or a value the majority has and the host lost)."""

from __future__ import annotations

from contract import ssh_keys
from contract.findings import Severity
from detectors.base import Detector
from detectors.baseline import CohortBaseline
from detectors.features import STATE_KINDS, config_feature, kind_of, printable, quoted, split_state
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
        if kind == "cfg" and key.startswith("authorized_keys:"):
            keys_text = self._authorized_keys(host, image, key.partition(":")[2], details)
            if keys_text:
                return (
                    f"authorized keys of user {printable(key.partition(':')[2], 64)} on host {host} differ from "
                    f"its clones (image {image}, {n} hosts): {keys_text}. Check who added or removed them; "
                    f"remove a key nobody can account for."
                ), details
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

    def _authorized_keys(self, host: str, image: str, user: str, details: dict[str, object]) -> str:
        """The single keys behind a changed `authorized_keys:<user>`: those of the host few clones have and
        those most clones have that the host lacks (entries `authorized_keys.key:<user>:<fingerprint>`,
        contract/ssh_keys.py), into `details` (keys_added, keys_missing) and as a phrase ("" if none)."""
        prefix = config_feature(f"{ssh_keys.ENTRY_PREFIX}{ssh_keys.user_part(user)}:", "")[:-1]
        n = self.baseline.n(image)
        rare = max(1, int(self.rare_fraction * n))
        mine = {f for f in self.baseline.host_features(host) if f.startswith(prefix)}
        added = sorted(f for f in mine if self.baseline.count(image, f) <= rare)
        common = self.baseline.counts.get(image, {})
        missing = sorted(f for f in common if f.startswith(prefix) and f not in mine
                         and n and self.baseline.count(image, f) / n >= self.majority)
        parts = []
        for name, features, phrase in (("keys_added", added, "which few of its clones have"),
                                       ("keys_missing", missing, "which most of its clones have, is missing")):
            keys = [k for k in (_key_of(f) for f in features) if k]
            if keys:
                details[name] = keys
                parts += [f"key {_describe_key(k)}, {phrase}" for k in keys[:8]]
                if len(keys) > 8:
                    parts.append(f"{len(keys) - 8} more ({name} in the details)")
        return "; ".join(parts)


def _key_of(feature: str) -> dict[str, str] | None:
    """{user, fingerprint, type[, comment]} of an authorized-key feature, made printable."""
    _, key, value = split_state(feature)
    parsed = ssh_keys.parse_entry(key, value)
    if parsed is None:
        return None
    return {k: printable(v, 128) for k, v in parsed.items() if v}


def _describe_key(k: dict[str, str]) -> str:
    comment = f" (comment {quoted(k['comment'])})" if k.get("comment") else ""
    return f"{k.get('type') or 'of unknown type'} {k['fingerprint']}{comment}"
