"""herdwatch detectors: a pure library (plain Python, numpy, scikit-learn; no Kafka, Faust or ClickHouse).

    from detectors import EngineConfig, FamilyEngine, HostState, SequenceGap

HostState turns one host's events into Observations; FamilyEngine learns and scores them against the
host's cohort (hosts cloned from the same image) with rollout awareness, configured by one EngineConfig
(typed, checked when built); SequenceGap spots lost events.
The detector classes (river style: learn_one / score_one, constructor args are the whole config) are
exported for reuse and listed in DETECTORS; LevelShift, the self-history's level-shift component, is
exported beside them. See docs/detection.md.
"""

from contract.findings import Finding, FindingKind, RolloutEvent, RolloutStatus, Severity
from detectors.baseline import CohortBaseline
from detectors.drift import ConfigDrift
from detectors.engine import FamilyEngine
from detectors.engine_config import EngineConfig, EngineConfigError
from detectors.host_state import HostState
from detectors.level_shift import LevelShift
from detectors.multivariate import MultivariateOutlier
from detectors.peers import PeerDeviation
from detectors.policy import PolicyCheck
from detectors.rarity import CohortRarity
from detectors.rollout import RolloutTracker
from detectors.self_history import SelfHistory
from detectors.sequence import SequenceGap
from detectors.types import Observation

DETECTORS = (
    CohortRarity,
    PeerDeviation,
    MultivariateOutlier,
    ConfigDrift,
    PolicyCheck,
    RolloutTracker,
    SelfHistory,
)
"""Every exported detector class (the conformance test runs over these)."""

__all__ = [
    "DETECTORS",
    "CohortBaseline",
    "CohortRarity",
    "ConfigDrift",
    "EngineConfig",
    "EngineConfigError",
    "FamilyEngine",
    "Finding",
    "FindingKind",
    "HostState",
    "LevelShift",
    "MultivariateOutlier",
    "Observation",
    "PeerDeviation",
    "PolicyCheck",
    "RolloutEvent",
    "RolloutStatus",
    "RolloutTracker",
    "SelfHistory",
    "SequenceGap",
    "Severity",
]
