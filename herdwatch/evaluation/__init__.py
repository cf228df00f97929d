"""Offline evaluation: a scenario's simulated telemetry through the detectors, scored against its ground
truth. `evaluate_scenario` is what `herdwatch evaluate` runs; it needs no Kafka and no database.

    runner.py    the detectors over a simulated fleet, as the stream workers run them
    scoring.py   findings against ground truth: precision, recall, time to detect, false alarms
                 (also what `herdwatch backtest --truth` prints)
    report.py    the scenario report built on that scoring; text.py and chart.py render it
    evaluate.py  one call from a scenario file to the report
"""

from herdwatch.evaluation.evaluate import EvaluationResult, evaluate_scenario, write_outputs

__all__ = ["EvaluationResult", "evaluate_scenario", "write_outputs"]
