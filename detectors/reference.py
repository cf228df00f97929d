"""Reference methods to compare the cohort engine with, on the same data and with the same API
(process(obs) / tick(now)):

- HostHistoryModel: every host judged only against its own past (each host is its own cohort: features
  new after it settled, and metrics against the host's own moving average).
- GlobalModel: one model across all hosts, ignoring images (every host in a single cohort).

Both run a FamilyEngine inside: give them the parsed hardening checks and policy rules the worker's engines
get (`GlobalModel(config, **engine_inputs(config))`, streams/checks_data.py), or they run none.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from contract.findings import Finding, FindingKind, Severity
from detectors.base import to_datetime
from detectors.engine import FamilyEngine, Output
from detectors.engine_config import EngineConfig
from detectors.hardening import Library
from detectors.policy import Rule
from detectors.types import Observation


class GlobalModel:
    """The cohort engine with every host put in one fleet-wide cohort."""

    def __init__(
        self, config: EngineConfig | None = None, checks: Library | None = None, rules: Iterable[Rule] | None = None
    ) -> None:
        self.engine = FamilyEngine(config=config, checks=checks, rules=rules)

    def process(self, obs: Observation) -> list[Output]:
        return self.engine.process(dataclasses.replace(obs, image_id="global", image_family="global"))

    def tick(self, now: Any) -> list[Output]:
        return self.engine.tick(now)


class HostHistoryModel:
    """Each host compared with its own history only: set features new after `self_learn_s`, and metrics
    more than `min_z` standard deviations from the host's exponentially weighted mean (after `warmup`
    reports, for `persistence` reports in a row)."""

    def __init__(
        self,
        alpha: float = 0.05,
        min_z: float = 5.0,
        warmup: int = 30,
        persistence: int = 3,
        config: EngineConfig | None = None,
        checks: Library | None = None,
        rules: Iterable[Rule] | None = None,
    ) -> None:
        own = (config or EngineConfig()).replace(mv_enabled=False)
        self.engine = FamilyEngine(config=own, checks=checks, rules=rules)
        self.alpha = float(alpha)
        self.min_z = float(min_z)
        self.warmup = int(warmup)
        self.persistence = int(persistence)
        self.stats: dict[str, dict[str, list[float]]] = {}
        """host -> metric -> [mean, variance, reports, streak]."""

    def process(self, obs: Observation) -> list[Output]:
        own = f"host:{obs.host_id}"
        out = self.engine.process(dataclasses.replace(obs, image_id=own, image_family=own))
        if obs.gone:
            self.stats.pop(obs.host_id, None)
            return out
        stats = self.stats.setdefault(obs.host_id, {})
        t = obs.time.timestamp()
        for name, x in obs.metrics.items():
            s = stats.setdefault(name, [x, 0.0, 0.0, 0.0])
            mean, var, n, streak = s
            sd = math.sqrt(var)
            z = (x - mean) / max(sd, 0.05 * abs(mean), 1e-9)
            deviating = n >= self.warmup and abs(z) >= self.min_z
            streak = streak + 1 if deviating else 0.0
            if not deviating:  # learn only from normal-looking values
                diff = x - mean
                mean += self.alpha * diff
                var = (1 - self.alpha) * (var + self.alpha * diff * diff)
            stats[name] = [mean, var, n + 1, streak]
            if streak == self.persistence:
                out.append(
                    Finding(
                        FindingKind.METRIC_DEVIATION,
                        obs.host_id,
                        obs.image_id,
                        obs.image_family,
                        to_datetime(t),
                        min(1.0, abs(z) / (2 * self.min_z)),
                        Severity.MEDIUM,
                        f"metric:{name}",
                        f"{name} = {x:g} on host {obs.host_id}, its own average is {mean:g} (z {z:.1f})",
                        {"metric": name, "z": z},
                    )
                )
        return out

    def tick(self, now: Any) -> list[Output]:
        return self.engine.tick(now)
