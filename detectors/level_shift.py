"""Level shift: where a host's recent reports sit against its own usual, per metric, in spreads.

The self-history views (detectors/self_history.py) judge one report at a time: a value 2 spreads off its
usual is unremarkable, and so is the next one, and the next. A level that moved and stayed there (a
machine running cooler after a fan failed, a service answering with half its usual load) or a slow drift
is a run of such values all on the same side. `LevelShift` keeps, per host and metric, an exponentially
weighted mean of the report's signed robust z against the host's usual (the short window, weight `rate`
for the new report: about 1 / rate reports) with each z clipped at +- `clip_z`, so one spike moves it by
at most rate x clip_z. Against the views' slowly learned level (the long window) this is the recent
level's distance from the usual, in spreads: about 0 for a stationary series however noisy (its signs
cancel), d for a level that moved by d spreads, and growing with a drift.

It is a statistic of recent reports, not a learned normal: the usual it is measured against is the
self-history's, which learns from a flagged report with a tenth of the weight, so a change the shift flags
stays measured against the level before it. A metric's shift is judged once it has `warmup` reports
(1 / rate unless given). Memory: two numbers per host and metric (the caller bounds the metrics).
"""

from __future__ import annotations

import math
from typing import Any


class LevelShift:
    """Per host and metric, the recent reports' mean signed robust z (clipped), one short window."""

    def __init__(self, rate: float = 0.05, clip_z: float = 4.0, warmup: int | None = None) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate}: it is the new report's weight")
        self.rate = float(rate)
        self.clip_z = float(clip_z)
        self.warmup = int(warmup) if warmup is not None else math.ceil(1.0 / self.rate)
        self.state: dict[str, dict[str, list[float]]] = {}
        """host -> metric -> [shift, reports counted]."""

    def step(self, host: str, metric: str, z: float) -> tuple[float, float]:
        """(shift, count) after a report with signed robust z `z`; nothing is stored (`commit` does that)."""
        z = max(-self.clip_z, min(self.clip_z, z))
        s = self.state.get(host, {}).get(metric)
        if s is None:
            return z, 1.0
        return s[0] + self.rate * (z - s[0]), s[1] + 1.0

    def warm(self, count: float) -> bool:
        return count >= self.warmup

    def commit(self, host: str, updates: dict[str, tuple[float, float]]) -> None:
        per_host = self.state.setdefault(host, {})
        for metric, (shift, count) in updates.items():
            per_host[metric] = [shift, count]

    def shift(self, host: str, metric: str) -> float:
        s = self.state.get(host, {}).get(metric)
        return 0.0 if s is None else s[0]

    def forget(self, host: str) -> None:
        self.state.pop(host, None)

    def to_json(self, host: str) -> dict[str, Any]:
        return {m: [round(s[0], 6), s[1]] for m, s in self.state.get(host, {}).items()}

    def load(self, host: str, data: dict[str, Any]) -> None:
        self.state[host] = {str(m): [float(v[0]), float(v[1])] for m, v in data.items() if len(v) == 2}
