"""Fleet simulator: many hosts' telemetry, exactly as the real collector emits it, from a scenario file.

Light on purpose (no Faust, scikit-learn or ClickHouse): `herdwatch simulate` publishes its batches
through collectors.publisher.Publisher, and `herdwatch evaluate` feeds them straight into the detectors.
"""

from simulator.clock import SimClock
from simulator.fleet import Cycle, Fleet, HostPlan
from simulator.scenarios import GroundTruth, Scenario, ScenarioError, load_scenario, resolve_path

__all__ = [
    "Cycle",
    "Fleet",
    "GroundTruth",
    "HostPlan",
    "Scenario",
    "ScenarioError",
    "SimClock",
    "load_scenario",
    "resolve_path",
]
