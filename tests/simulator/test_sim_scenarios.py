"""Scenario files: bundled ones load, mistakes get a clear message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from herdwatch.cli import main
from simulator.scenarios import (
    SCENARIO_DIR,
    ScenarioError,
    load_scenario,
    parse_duration,
    parse_scenario,
)


def minimal() -> dict:
    return {
        "name": "t",
        "duration": "5m",
        "cycle": "10s",
        "images": [
            {"name": "web-1", "role": "web", "family": "web"},
            {"name": "web-2", "from": "web-1", "packages": {"nginx": "1.26.0-1"}},
        ],
        "cohorts": [{"name": "web", "image": "web-1", "hosts": 4}],
        "scenarios": [{"name": "m", "kind": "cryptominer", "cohort": "web", "host": 1, "at": "1m"}],
    }


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_scenarios_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.cohorts and sc.images
    assert sc.duration > sc.warmup >= 0
    assert all(inj.at >= sc.warmup or inj.kind == "stale_image" for inj in sc.injections)


def test_bundled_name_resolves_and_seed_overrides() -> None:
    assert load_scenario("ci").name == "ci"
    assert load_scenario("ci", seed=99).seed == 99


def test_unknown_scenario_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ScenarioError, match="demo"):
        load_scenario("no-such-scenario")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("5m30s", 330), ("1.5h", 5400), (12, 12), ("250ms", 0.25), ("45", 45)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


def test_bad_duration_says_how_to_write_one() -> None:
    with pytest.raises(ScenarioError, match=r"write e\.g\. 30s"):
        parse_duration("five minutes", "duration")


def test_derived_image_inherits_and_overrides() -> None:
    sc = parse_scenario(minimal())
    assert sc.images["web-2"].role == "web"
    assert sc.images["web-2"].family == "web"
    assert sc.images["web-2"].packages == {"nginx": "1.26.0-1"}
    assert sc.images["web-1"].id.startswith("ami-0") and sc.images["web-1"].id != sc.images["web-2"].id


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["images"][0].update(role="mainframe"), "role 'mainframe' is unknown"),
        (lambda d: d["cohorts"][0].update(image="nope"), "image 'nope' is not defined"),
        (lambda d: d["scenarios"][0].update(kind="meteor"), "kind 'meteor' unknown"),
        (lambda d: d["scenarios"][0].update(cohort="db"), "cohort 'db' is not defined"),
        (lambda d: d["scenarios"][0].update(host=9), "host 9 is out of range"),
        (lambda d: d.pop("duration"), "field 'duration' is missing"),
        (lambda d: d.update(warmup="2m"), "inside the warm-up"),
        (
            lambda d: d["scenarios"].append({"name": "m", "kind": "backdoor_port", "cohort": "web", "at": "2m"}),
            "names must be unique",
        ),
        (
            lambda d: d["scenarios"].append({"name": "s", "kind": "stale_image", "cohort": "web", "after": "x"}),
            "must name a rollout in family web",
        ),
        (
            lambda d: d["scenarios"].append({"name": "s", "kind": "stale_image", "cohort": "web"}),
            "needs 'after",
        ),
        (
            lambda d: d["scenarios"].append({"name": "r", "kind": "rollout", "cohort": "web", "to": "other"}),
            "image 'other'",
        ),
    ],
)
def test_mistakes_are_reported_with_the_field(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    d = minimal()
    mutate(d)
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(d)


def test_invalid_yaml_is_a_scenario_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(p)


def test_scenario_file_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(minimal()))
    sc = load_scenario(p)
    assert sc.path == p and sc.injections[0].kind == "cryptominer"


def test_simulate_rejects_a_bad_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "ci", "--speed", "warp"]) == 1
    assert "--speed" in capsys.readouterr().err
