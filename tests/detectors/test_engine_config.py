"""EngineConfig: typed knobs, checked when built, with a fix-it message; round-trips through plain data."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import EngineConfig, EngineConfigError, FamilyEngine


def test_defaults_are_the_documented_knobs() -> None:
    c = EngineConfig()
    assert (c.rare_fraction, c.min_hosts, c.confirm_s, c.suppress_s, c.mv_enabled) == (0.1, 3, 30.0, 3600.0, True)
    assert set(EngineConfig.knobs()) == set(c.to_dict()) and all(EngineConfig.knobs().values())


def test_an_unknown_knob_names_the_close_match() -> None:
    with pytest.raises(EngineConfigError, match=r"unknown engine setting 'min_host' \(did you mean min_hosts\?\)"):
        EngineConfig.from_mapping({"min_host": 5})
    with pytest.raises(EngineConfigError, match="unknown engine setting 'zzz'; known settings: rare_fraction, "):
        EngineConfig.from_mapping({"zzz": 1})


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"min_hosts": 0}, "min_hosts must be an integer >= 1, got 0"),
        ({"min_hosts": 2.5}, "min_hosts must be an integer >= 1, got 2.5"),
        ({"min_hosts": True}, "min_hosts must be an integer >= 1, got True"),
        ({"rare_fraction": 1.5}, "rare_fraction must be a number > 0 and <= 1, got 1.5"),
        ({"confirm_s": "soon"}, "confirm_s must be a number >= 0, got 'soon'"),
        ({"confirm_s": float("nan")}, "confirm_s must be a number >= 0, got nan"),
        ({"mv_enabled": "yes"}, "mv_enabled must be true or false, got 'yes'"),
        ({"policies": 3}, "policies must be a string or null, got 3"),
        ({"peer_min_abs": {"cpu_pct": -1}}, "peer_min_abs must be an object of {metric: number >= 0} or null"),
    ],
)
def test_a_wrong_value_names_the_knob_and_what_it_accepts(knobs: dict[str, object], message: str) -> None:
    with pytest.raises(EngineConfigError) as e:
        EngineConfig.from_mapping(knobs)
    assert message in str(e.value)


def test_values_are_normalised_to_the_knob_types() -> None:
    c = EngineConfig.from_mapping({"min_hosts": 5.0, "confirm_s": 0, "host_timeout_s": float("inf")})
    assert (c.min_hosts, c.confirm_s, c.host_timeout_s) == (5, 0.0, float("inf"))
    assert isinstance(c.min_hosts, int) and isinstance(c.confirm_s, float)
    assert c.replace(min_hosts=7).min_hosts == 7 and c.min_hosts == 5
    with pytest.raises(EngineConfigError, match="did you mean confirm_s"):
        c.replace(confirm=1)


configs = st.builds(
    EngineConfig,
    rare_fraction=st.floats(min_value=0.01, max_value=1),
    min_hosts=st.integers(min_value=1, max_value=1000),
    confirm_s=st.floats(min_value=0, max_value=1e6),
    peer_min_abs=st.none() | st.dictionaries(st.text(min_size=1), st.floats(min_value=0, max_value=1e9), max_size=3),
    policies=st.none() | st.text(max_size=20),
    mv_enabled=st.booleans(),
    mv_persistence=st.integers(min_value=1, max_value=10),
)


@given(configs)
def test_a_config_round_trips_through_json(c: EngineConfig) -> None:
    assert EngineConfig.from_mapping(json.loads(json.dumps(c.to_dict()))) == c


def test_the_engine_uses_its_config() -> None:
    e = FamilyEngine(config=EngineConfig(min_hosts=7, suppress_s=10, peer_min_abs={"cpu_pct": 1.0}))
    assert e.config.min_hosts == 7 and e.rarity.min_hosts == 7 and e.suppress.window_s == 10.0
    assert e.peers.min_abs == {"cpu_pct": 1.0}
    assert FamilyEngine().config == EngineConfig()
