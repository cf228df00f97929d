"""The package boundaries in docs/ARCHITECTURE.md, checked on the source: detectors stay pure and the
collector stays light enough to bake into every image."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "detectors": {"streams", "storage", "collectors", "faust", "mode", "aiokafka", "confluent_kafka",
                  "clickhouse_connect", "chdb", "psutil"},
    "collectors": {"streams", "storage", "detectors", "faust", "mode", "aiokafka", "sklearn", "numpy",
                   "clickhouse_connect", "chdb"},
    "storage": {"streams", "faust"},
    "herdwatch": {"faust", "sklearn", "chdb"},
}
# herdwatch/ holds the CLI: its command modules and the demo/evaluation orchestration import the other
# packages lazily, inside functions, which this check allows (only module-level imports count).
LAZY_OK = {"herdwatch"}


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layering(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if package == "herdwatch" and path.parts[-2] in ("commands", "evaluation"):
            continue  # CLI glue and the evaluation harness may use every package
        imports = module_level_imports(path) if package in LAZY_OK else all_imports(path)
        for name in sorted(imports & FORBIDDEN[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_cli_and_the_agent_load_without_the_heavy_libraries() -> None:
    import subprocess
    import sys

    code = ("import sys, herdwatch.cli, collectors.agent; herdwatch.cli.build_parser(); "
            "print(','.join(m for m in ('faust', 'sklearn', 'chdb', 'clickhouse_connect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
