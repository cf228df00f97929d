"""The engine takes its hardening checks and policy rules parsed; reading the YAML is streams/checks_data.py's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectors import EngineConfig, FamilyEngine
from detectors.hardening import CheckError, library_from_documents
from detectors.policy import PolicyError, rules_from_document
from streams.checks_data import SHIPPED_CHECKS, engine_inputs, hardening_library, policy_rules

RULES = Path(__file__).parents[1] / "fixtures" / "policy" / "rules.yaml"


def test_the_library_built_from_parsed_documents_is_the_shipped_one() -> None:
    docs = [(str(f), yaml.safe_load(f.read_text())) for f in sorted(SHIPPED_CHECKS.glob("*.yaml"))]
    built = library_from_documents(docs)
    assert built == hardening_library() and len(built.checks) > 100
    assert {c.family for c in built.checks} == {f.stem for f in SHIPPED_CHECKS.glob("*.yaml")}


def test_documents_without_a_family_take_their_name_and_bad_ones_say_where() -> None:
    check = {"id": "own-x", "title": "t", "rationale": "r", "fix": "f", "key": "a.b", "expect": {"in": ["1"]}}
    lib = library_from_documents([("mine/custom.yaml", {"checks": [check]})])
    assert [(c.id, c.family) for c in lib.checks] == [("own-x", "custom")]
    with pytest.raises(CheckError, match=r"mine/b\.yaml: check id own-x is used twice"):
        library_from_documents([("mine/a.yaml", {"checks": [check]}), ("mine/b.yaml", {"checks": [check]})])
    with pytest.raises(CheckError, match=r"mine/list\.yaml: a check file is a mapping"):
        library_from_documents([("mine/list.yaml", ["not", "a", "mapping"])])
    with pytest.raises(CheckError, match=r"mine/x\.yaml: check 1 is not a mapping"):
        library_from_documents([("mine/x.yaml", {"checks": ["ssh-root-login"]})])
    with pytest.raises(PolicyError, match=r"r\.yaml: rule 1 .*every rule is a mapping"):
        rules_from_document("r.yaml", {"rules": ["x"]})


def test_an_engine_given_a_path_but_no_parsed_library_says_how_to_pass_it() -> None:
    with pytest.raises(ValueError, match=r"engine_inputs\(config\)"):
        FamilyEngine(config=EngineConfig(policies=str(RULES)))
    with pytest.raises(ValueError, match="hardening_checks"):
        FamilyEngine(config=EngineConfig(hardening_checks=str(SHIPPED_CHECKS)))
    config = EngineConfig(policies=str(RULES), hardening_checks=str(SHIPPED_CHECKS / "ssh.yaml"))
    e = FamilyEngine(config=config, **engine_inputs(config))
    assert e.policy.rules == policy_rules(RULES) and e.policy.rules
    assert {c.family for c in e.hardening.library.checks} == {"ssh"}


def test_an_unreadable_check_path_names_itself(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="no such check folder or file"):
        hardening_library(tmp_path / "missing")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [unclosed\n")
    with pytest.raises(CheckError, match=r"bad\.yaml: cannot read it as YAML"):
        hardening_library(bad)
