"""The detectors read no files: checks, rules and OSV data come in parsed (streams/checks_data.py,
streams/osv_data.py read them), so the same engine runs in a worker, a backtest and a unit test."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "glob", "rglob", "iterdir",
              "listdir", "scandir", "walk", "safe_load", "full_load", "unsafe_load"}
"""Calls that read (or write) files, as a function or a method: `open(...)`, `path.read_text()`, `yaml.load`."""
FILE_MODULES = {"yaml", "io", "shutil", "glob", "tempfile", "zipfile", "tarfile"}
FILE_NAMES = {("pathlib", "Path"), ("os", "listdir"), ("os", "walk"), ("os", "scandir")}


def file_access(source: str, name: str = "<source>") -> list[str]:
    tree = ast.parse(source, filename=name)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FILE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FILE_MODULES:
                found.append(f"from {node.module} import ...")
            found += [f"from {node.module} import {a.name}" for a in node.names if (top, a.name) in FILE_NAMES]
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in FILE_CALLS:
                found.append(f"{name}(...) on line {node.lineno}")
    return found


def test_detectors_read_no_files() -> None:
    bad = {str(p.relative_to(ROOT)): hits for p in sorted((ROOT / "detectors").rglob("*.py"))
           if (hits := file_access(p.read_text(), str(p)))}
    assert bad == {}, f"the detectors must read no files (read them in streams/, pass them in parsed): {bad}"


def test_the_scan_sees_every_way_this_repository_read_files_in_detectors() -> None:
    """The ways detectors/hardening.py and detectors/policy.py read their YAML before, and a few more."""
    samples = {
        "import yaml\nraw = yaml.safe_load(path.read_text())\n": 3,
        "from pathlib import Path\nfiles = sorted(Path('x').glob('*.yaml'))\n": 2,
        "with open('/etc/passwd') as f:\n    pass\n": 1,
        "import os\nnames = os.listdir('/')\n": 1,
        "from pathlib import PurePath\nstem = PurePath('checks/ssh.yaml').stem\n": 0,
        "self.baseline.load()\n": 0,
    }
    for text, hits in samples.items():
        assert len(file_access(text)) == hits, text
