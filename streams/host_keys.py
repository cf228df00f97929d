"""The host stage's key pins, free of Faust: the `host-keys` table's record and the identity check.

    host_keys[host]   HostKey.to_json(): the pinned public key, when it was pinned, the last conflict reported

The rule itself (trust on first use) is the contract's (`contract.signing.judge`), the same the storage sink
applies. A refused message is dead-lettered by the agent; this module adds the `identity_conflict` finding,
at most once per host per CONFLICT_REPEAT_S. Pins are never swept with a silent host's other state: a host
that comes back after a month must still sign with its key (docs/security.md, "Host identity").
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from contract.findings import Finding, FindingKind, Severity
from contract.signing import Signature, fingerprint, judge

CONFLICT_REPEAT_S = 3600.0
"""An identity_conflict finding about one host is published at most this often (message arrival time)."""


@dataclass(frozen=True, slots=True)
class HostKey:
    """A host's pinned key: the host-keys table's value (JSON via to_json / from_json)."""

    key: bytes | None
    """The raw Ed25519 public key (None: nothing pinned yet, the record only remembers a conflict)."""
    pinned_at: float | None
    """When it was pinned (epoch seconds of the message's arrival)."""
    conflict_reported: float | None = None
    """When the last identity_conflict finding about this host was published (None: never)."""

    def to_json(self) -> dict[str, Any]:
        return {"key": None if self.key is None else base64.b64encode(self.key).decode(),
                "pinned_at": self.pinned_at, "conflict_reported": self.conflict_reported}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostKey:
        key, at, reported = d.get("key"), d.get("pinned_at"), d.get("conflict_reported")
        return cls(key=None if key is None else base64.b64decode(key), pinned_at=None if at is None else float(at),
                   conflict_reported=None if reported is None else float(reported))


@dataclass(frozen=True, slots=True)
class IdentityResult:
    accepted: bool
    record: HostKey | None
    """The new host-keys value to write (None: unchanged)."""
    reason: str = ""
    """Why the host's events were refused (the dead letter's reason)."""
    finding: Finding | None = None


def check_identity(host: str, signature: Signature, stored: HostKey | None, require: bool, now: float,
                   image_id: str = "unknown", image_family: str = "unknown",
                   repin: Mapping[str, str] | None = None) -> IdentityResult:
    """Judge one host's events of one message; `now` is the message's arrival (epoch seconds)."""
    pinned = stored.key if stored is not None else None
    verdict = judge(host, signature, pinned, require, repin)
    if verdict.accepted:
        if verdict.pin is None:
            return IdentityResult(True, None)
        return IdentityResult(True, HostKey(verdict.pin, now, stored.conflict_reported if stored else None))
    last = stored.conflict_reported if stored is not None else None
    if last is not None and 0 <= now - last < CONFLICT_REPEAT_S:
        return IdentityResult(False, None, verdict.reason)
    record = replace(stored, conflict_reported=now) if stored is not None else HostKey(None, None, now)
    return IdentityResult(False, record, verdict.reason, identity_conflict_finding(
        host, verdict.pinned, verdict.offered, verdict.reason, now, image_id, image_family))


def identity_conflict_finding(host: str, pinned: bytes | None, offered: bytes | None, reason: str, now: float,
                              image_id: str, image_family: str) -> Finding:
    pinned_fp, offered_fp = fingerprint(pinned), fingerprint(offered)
    return Finding(
        kind=FindingKind.IDENTITY_CONFLICT, host_id=host, image_id=image_id, image_family=image_family,
        time=datetime.fromtimestamp(now, UTC), score=0.9, severity=Severity.HIGH, subject="host-key",
        explanation=(f"a batch claiming to come from host {host} was refused: pinned key {pinned_fp}, offered "
                     f"{offered_fp}. Another producer may be impersonating the host; if the host was re-imaged, "
                     f"check the new key on the host and re-pin it (docs/security.md, \"Host identity\")."),
        details={"pinned": pinned_fp, "offered": offered_fp, "reason": reason})
