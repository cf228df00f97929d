"""Offline evaluation: a scenario's simulated telemetry through the detectors, scored against its ground
truth. `evaluate_scenario` is what `herdwatch evaluate` runs; it needs no Kafka and no database."""

from herdwatch.evaluation.evaluate import EvaluationResult, evaluate_scenario, write_outputs

__all__ = ["EvaluationResult", "evaluate_scenario", "write_outputs"]
