"""What every detector has in common (river style: the constructor arguments are the whole config).

A detector reads a CohortBaseline. Standalone (`baseline=None`) it owns one and `learn_one` feeds it;
inside FamilyEngine all detectors share the engine's baseline, which the engine feeds once per
observation, so their `learn_one` does nothing there.

`score_one(obs)` is the detector's anomaly score in [0, 1] for an observation given what it has learned
so far (0.0 before any learning). Findings with explanations come from the engine, which adds timing,
grace periods, cohort critical mass, rollouts and suppression.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from detectors.baseline import CohortBaseline
from detectors.types import Observation


class Detector:
    name = "detector"

    def __init__(self, baseline: CohortBaseline | None = None) -> None:
        self._owns = baseline is None
        self.baseline = CohortBaseline() if baseline is None else baseline

    def learn_one(self, obs: Observation) -> None:
        if self._owns:
            self.baseline.learn(obs)

    def score_one(self, obs: Observation) -> float:
        raise NotImplementedError

    def state_size(self) -> int:
        """Bytes of this detector's pickled state (for memory-bound checks and benchmarks)."""
        return len(pickle.dumps(self))


def hhmmss(t: float) -> str:
    """Event time as HH:MM:SS UTC, for explanations."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def to_datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
