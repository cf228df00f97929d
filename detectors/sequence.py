"""Sequence gaps: every host numbers its events (seq +1 per event, across all kinds). A jump means events
were lost between the agent and us (spool overflow, dropped messages), which is worth knowing on its own:
an attacker who silences an agent looks exactly like this.
"""

from __future__ import annotations

from typing import Any

from contract.events import Event
from contract.findings import Finding, FindingKind, Severity


class SequenceGap:
    """Checks each host's event sequence. One instance can follow one host or many (keyed by host_id).

    `check(event)` returns a DATA_LOSS finding when seq jumps forward by more than one; repeated or
    reordered events (seq not above the last one) and a new boot restarting at 0 are not gaps.
    `min_gap` ignores small gaps (default 1: any lost event counts).
    """

    def __init__(self, min_gap: int = 1) -> None:
        self.min_gap = int(min_gap)
        self.last: dict[str, list[Any]] = {}
        """host_id -> [boot_id, last seq]."""

    def to_dict(self) -> dict[str, Any]:
        return {"min_gap": self.min_gap, "last": self.last}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequenceGap:
        sg = cls(min_gap=d.get("min_gap", 1))
        sg.last = {k: list(v) for k, v in d.get("last", {}).items()}
        return sg

    def check(self, event: Event) -> Finding | None:
        prev = self.last.get(event.host_id)
        if prev is None or (prev[0] != event.boot_id and event.seq <= prev[1]):
            self.last[event.host_id] = [event.boot_id, event.seq]
            return None
        last = prev[1]
        if event.seq <= last:
            return None  # duplicate or late: not a loss
        self.last[event.host_id] = [event.boot_id, event.seq]
        missing = event.seq - last - 1
        if missing < self.min_gap:
            return None
        score = min(1.0, 0.3 + missing / 200.0)
        severity = Severity.HIGH if missing >= 100 else Severity.MEDIUM if missing >= 10 else Severity.LOW
        return Finding(
            kind=FindingKind.DATA_LOSS,
            host_id=event.host_id,
            image_id=event.image_id,
            image_family=event.image_family,
            time=event.time,
            score=score,
            severity=severity,
            subject="seq",
            explanation=(
                f"{missing} event(s) from host {event.host_id} never arrived (sequence jumped from "
                f"{last} to {event.seq}); check the agent's spool and drop counters, or whether "
                f"someone stopped the agent"
            ),
            details={"missing": missing, "from_seq": last, "to_seq": event.seq, "boot_id": event.boot_id},
        )
