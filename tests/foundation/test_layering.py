"""The floor plan of docs/ARCHITECTURE.md, checked on the source: which of our packages each package may
import, and which heavy libraries stay out of the light ones. Every import counts, also one inside a
function: a lazy import is still an arrow."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

OURS = {"contract", "collectors", "detectors", "storage", "streams", "simulator", "herdwatch"}

# The allowed arrows between our packages (docs/ARCHITECTURE.md, "Packages and import directions").
ALLOWED = {
    "contract": set(),
    "detectors": {"contract"},
    "collectors": {"contract"},
    "storage": {"contract"},
    "streams": {"contract", "detectors"},
    "simulator": {"contract", "collectors"},
    "herdwatch": OURS - {"herdwatch"},
}

# Third-party libraries a package must never pull in (the agent and the simulator stay light; the
# detectors stay pure; the ground floor stays small).
HEAVY = {"faust", "mode", "aiokafka", "sklearn", "numpy", "clickhouse_connect", "chdb"}
FORBIDDEN_LIBS = {
    "contract": HEAVY | {"psutil"},
    "detectors": {"faust", "mode", "aiokafka", "confluent_kafka", "clickhouse_connect", "chdb", "psutil"},
    "collectors": HEAVY,
    "simulator": HEAVY,
    "storage": {"faust", "mode", "aiokafka", "sklearn"},
    "streams": {"clickhouse_connect", "chdb"},
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_package_is_on_the_floor_plan() -> None:
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert found == OURS, f"packages {sorted(found ^ OURS)} are not on the floor plan (docs/ARCHITECTURE.md)"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_floor_plan_allows(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        imports = imports_of(path)
        own = imports & OURS - {package}
        for name in sorted(own - ALLOWED[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {name} (allowed: {sorted(ALLOWED[package]) or 'none'})")
        for name in sorted(imports & FORBIDDEN_LIBS.get(package, set())):
            bad.append(f"{path.relative_to(ROOT)} imports {name}, which {package}/ must stay free of")
    assert not bad, "\n".join(bad)


def test_the_architecture_doc_states_the_same_arrows() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)/` \|[^|]*\| ([^|]*) \|$", text, flags=re.M))
    for package, allowed in ALLOWED.items():
        assert package in table, f"docs/ARCHITECTURE.md has no row for {package}/"
        named = set(re.findall(r"`(\w+)`", table[package])) & OURS
        expected = allowed if package != "herdwatch" else OURS - {"herdwatch"}
        assert named == expected, f"docs/ARCHITECTURE.md says {package}/ may import {sorted(named)}, " \
                                  f"this test says {sorted(expected)}"


def test_the_cli_and_the_agent_load_without_the_heavy_libraries() -> None:
    import subprocess
    import sys

    heavy = ("faust", "sklearn", "chdb", "clickhouse_connect", "nacl")
    code = ("import sys, herdwatch.cli, collectors.agent; herdwatch.cli.build_parser(); "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
