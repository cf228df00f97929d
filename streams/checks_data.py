"""Hardening checks and policy rules for the engines: read from disk here (the detectors never read files),
handed over parsed, like the OSV data (streams/osv_data.py).

    FamilyEngine(store, config, osv=osv_source(config), **engine_inputs(config))
    library = hardening_library()        # the shipped checks (detectors/checks/*.yaml), or a folder / file
    rules = policy_rules(path)           # a rule file (the shipped detectors/policies.yaml holds none)

The YAML files stay the shipped format. Each path is read once per process (the worker makes an engine per
image family; libraries and rules are immutable). `python -m streams.checks_data` prints docs/detection.md's
check table.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

import detectors
from detectors.engine_config import EngineConfig
from detectors.hardening import CheckError, Library, library_from_documents, markdown
from detectors.policy import PolicyError, Rule, rules_from_document

SHIPPED_CHECKS = Path(detectors.__file__).with_name("checks")
"""The shipped check library: one YAML file per family."""
SHIPPED_RULES = Path(detectors.__file__).with_name("policies.yaml")
"""The shipped policy rule file (none: every shipped condition is a hardening check)."""


def read_yaml(path: Path) -> Any:
    """One YAML document; an unreadable or malformed file is an error that names it."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckError(f"{path}: cannot read it as YAML ({e}); fix the file or point the setting elsewhere") from e


def check_documents(path: Path | str | None = None) -> list[tuple[str, Any]]:
    """(name, parsed document) of every *.yaml of a check folder (sorted), or of one file."""
    root = Path(path) if path else SHIPPED_CHECKS
    if not root.exists():
        raise CheckError(f"{root}: no such check folder or file; hardening_checks names a folder of *.yaml "
                         f"check files or one file (unset: the shipped {SHIPPED_CHECKS})")
    files = sorted(root.glob("*.yaml")) if root.is_dir() else [root]
    return [(str(f), read_yaml(f)) for f in files]


def hardening_library(path: Path | str | None = None) -> Library:
    """The check library of a folder of YAML files or one file (None: the shipped checks)."""
    return _library(str(Path(path) if path else SHIPPED_CHECKS))


@functools.lru_cache(maxsize=8)
def _library(path: str) -> Library:
    return library_from_documents(check_documents(path))


def policy_rules(path: Path | str | None = None) -> tuple[Rule, ...]:
    """The policy rules of a rule file (None: the shipped file, which holds none)."""
    return _rules(str(Path(path) if path else SHIPPED_RULES))


@functools.lru_cache(maxsize=8)
def _rules(path: str) -> tuple[Rule, ...]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PolicyError(f"{p}: cannot read it as a YAML rule file ({e}); fix the file or the policies setting") from e
    return tuple(rules_from_document(str(p), raw))


def engine_inputs(config: EngineConfig) -> dict[str, Any]:
    """The parsed checks and rules a FamilyEngine takes (`checks=`, `rules=`) for `config`."""
    return {"checks": hardening_library(config.hardening_checks), "rules": policy_rules(config.policies)}


if __name__ == "__main__":
    print(markdown(hardening_library()), end="")
