"""Episodes: flagged reports of one host close together are one episode, reported once.

A level that moved, a drift or a burst flags a run of reports, often with a few unflagged ones in between
(a noisy metric dips under its threshold and comes back). Users expect one alert per such episode, as
monitoring systems give one alert that stays open until the condition has recovered for a while (a
recovery window), not one per report or per hour. `Episodes` keeps, per key (a host), how many reports
in a row were not flagged since its last flagged one, and whether its current episode was reported: a
flagged report opens a new episode unless one is open, and an episode closes after `gap` unflagged reports
in a row (counted in reports, not seconds: the key's own cadence, and an outage without reports does not
close it). Within an episode only the first reportable flag is reported, and only the flag that opened it
counts for calibration (`counts`).

Memory: two numbers per key with an open episode (a closed one is dropped).
"""

from __future__ import annotations


class Episodes:
    """Per key, its open episode of flagged reports: unflagged reports since the last flag, and if it was reported."""

    def __init__(self, gap: int = 20) -> None:
        if gap < 1:
            raise ValueError(f"gap must be at least 1 report, got {gap}: it is the recovery window in reports")
        self.gap = int(gap)
        self.state: dict[str, list[float]] = {}
        """key -> [unflagged reports since its last flagged one, 1.0 if its episode was reported else 0.0]."""

    def note(self, key: str, flagged: bool) -> bool:
        """Count one judged report; True if it is flagged and opens a new episode."""
        s = self.state.get(key)
        if not flagged:
            if s is not None:
                s[0] += 1.0
                if s[0] >= self.gap:
                    del self.state[key]  # recovered: the episode is over
            return False
        if s is None:
            self.state[key] = [0.0, 0.0]
            return True
        s[0] = 0.0
        return False

    def counts(self, key: str, flagged: bool) -> bool:
        """Whether a judged report's score counts for calibration (ask before `note`): an unflagged one does,
        and a flagged one only when it opens an episode. Counted report by report, each flagged score at 1.5 x
        a threshold it has just raised (TailCalibrator.submit), a few hours off would ratchet the threshold up
        many times over and hide the next episode; counted once, the tail keeps the episode without it. Every
        calibrated metric view (a host's own history, its peers) counts its flags through this rule."""
        return not (flagged and key in self.state)

    def active(self, key: str) -> bool:
        """Whether the key has an open episode (a flagged report within the last `gap` reports)."""
        return key in self.state

    def reported(self, key: str) -> bool:
        """Whether the key's open episode was already reported."""
        s = self.state.get(key)
        return s is not None and s[1] > 0.0

    def report(self, key: str) -> None:
        """Mark the key's open episode reported (its later flags belong to that alert)."""
        s = self.state.get(key)
        if s is not None:
            s[1] = 1.0

    def forget(self, key: str) -> None:
        self.state.pop(key, None)

    def to_json(self, key: str) -> list[float]:
        return list(self.state.get(key, []))

    def load(self, key: str, value: list[float]) -> None:
        self.state.pop(key, None)
        if len(value) == 2:
            self.state[key] = [float(value[0]), float(value[1])]
