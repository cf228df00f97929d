"""deploy/prometheus/herdwatch-rules.yml: promtool accepts it, and every metric a rule names is exported by the
code (counters as herdwatch_<signal>_total, gauges and histograms under their own names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "herdwatch-rules.yml"
BUILTIN = {"up"}
"""Series Prometheus itself makes for every scrape target."""
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count", "")}


def exported_metrics() -> set[str]:
    import importlib

    for module in ("collectors.signals", "storage.signals", "streams.metrics", "streams.signals"):
        importlib.import_module(module)  # importing declares the metrics on the default registry

    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return {n for n in names if n.startswith("herdwatch_")}


def rule_expressions() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def test_every_metric_a_rule_names_is_exported() -> None:
    exported = exported_metrics()
    assert "herdwatch_sink_insert_failed_total" in exported  # the check itself sees counters
    named: set[str] = set()
    for expr in rule_expressions():
        named |= {m for m in re.findall(r"\b(herdwatch_[a-z0-9_]+)\b", expr)}
        for bare in re.findall(r"(?<![\w$])([a-z_]+)\s*\{", expr):
            assert bare in BUILTIN or bare.startswith("herdwatch_"), f"{bare} in {expr!r} is no herdwatch metric"
    missing = named - exported
    assert not missing, f"rules name metrics the code does not export: {sorted(missing)}"
    # the health the rules must watch
    text = RULES.read_text()
    for alert in ("HerdwatchAgentSilent", "HerdwatchAgentSpoolGrowing", "HerdwatchConsumerLag",
                  "HerdwatchStreamDeadLettersRising", "HerdwatchSinkInsertFailures"):
        assert f"alert: {alert}" in text


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; `make test-tools` installs it as root)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
