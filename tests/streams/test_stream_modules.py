"""streams/ is small modules without an import circle: every module imports on its own, and following the
imports between them (module-level and lazy ones alike) never leads back to where it started."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "streams"
MODULES = sorted(f"streams.{p.stem}" for p in STREAMS.glob("*.py") if p.stem != "__init__")


def streams_imports(source: str) -> set[str]:
    """The streams modules a module's source imports anywhere, inside functions too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, "use absolute imports"
            found.add(node.module)
            if node.module == "streams":  # from streams import codec, signals
                found |= {f"streams.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("streams.")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module: str) -> None:
    importlib.import_module(module)


def test_no_import_cycle_in_streams() -> None:
    graph = {m: streams_imports((STREAMS / f"{m.split('.', 1)[1]}.py").read_text()) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert not any("streams.worker" in imported for imported in graph.values()), \
        "streams.worker runs the app; nothing in streams/ may import it"


def test_the_check_sees_lazy_imports_and_cycles() -> None:
    lazy = "import orjson\n\ndef f():\n    from streams import app, codec\n    import streams.worker\n"
    assert streams_imports(lazy) == {"streams.app", "streams.codec", "streams.worker"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
