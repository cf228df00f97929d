"""The small deterministic fleets every test area and benchmark uses (simulator/presets.py)."""

from __future__ import annotations

import pytest

from contract.events import Kind, decode_event
from simulator import presets
from simulator.scenarios import ScenarioError


def test_a_preset_fleet_is_the_same_for_a_seed() -> None:
    miner = [presets.attack("cryptominer", "web", 4, "2m")]
    a = presets.run(presets.fleet({"web": 10}, duration="5m", scenarios=miner))
    b = presets.run(presets.fleet({"web": 10}, duration="5m", scenarios=miner))
    assert [e.to_dict() for e in a.events] == [e.to_dict() for e in b.events]
    [truth] = a.truth
    assert truth["attack"] == "cryptominer" and truth["host_id"] == a.fleet.initial["web"][4]
    assert {e.image_id for e in a.events} == {presets.image_id("web")}
    other = presets.run(presets.fleet({"web": 10}, duration="5m", seed=8))
    assert {e.host_id for e in other.events} != {e.host_id for e in a.events}


def test_forensics_history_has_every_event_family_and_ends_with_the_scale_in() -> None:
    fleet = presets.forensics()
    hosts = presets.histories(fleet)
    bad = hosts[0]
    assert {t["host_id"] for t in fleet.ground_truth_dicts()} == {bad.host_id}
    assert {e.kind for e in bad.events} == set(Kind)
    for e in bad.events:
        decode_event(e.to_dict(), key=e.host_id, received=e.time)
    assert [e.seq for e in bad.events] == list(range(len(bad.events)))
    assert bad.events[-1].kind == Kind.GOODBYE and bad.events[-1].payload["reason"] == "terminated: scale-in"
    assert all(h.events[-1].kind != Kind.GOODBYE for h in hosts[1:])  # the others live to the end
    login = next(e for e in bad.events if e.kind == Kind.AUTH_ATTEMPT)
    assert (login.payload["user"], login.payload["outcome"]) == ("root", "success")
    miner = next(e for e in bad.events if e.kind == Kind.PROCESS_START and e.payload["exe"] == presets.MINER_EXE)
    assert login.time < miner.time
    assert any(e.kind == Kind.NET_OPEN and (e.payload["raddr"], e.payload["rport"]) == presets.C2 for e in bad.events)
    assert any(e.kind == Kind.PACKAGE_CHANGE and e.payload["key"] == "netcat" for e in bad.events)
    assert [h.host_id for h in presets.histories(presets.forensics())] == [h.host_id for h in hosts]


def test_clones_driven_by_hand() -> None:
    clones = presets.Clones(3, image="ami-old")
    h = clones.hosts[0]
    first = clones.step(h, clones.at(0))
    assert first[0].kind == Kind.HELLO and {e.kind for e in first} >= {Kind.PROCESS_INVENTORY, Kind.METRICS}
    assert {e.image_id for e in first} == {"ami-old"} and first[0].image_family == "web"
    clones.attack(h, "cryptominer", exe="/tmp/.x/xmrig")
    later = clones.step(h, clones.at(10))
    assert any(e.kind == Kind.PROCESS_START and e.payload["exe"] == "/tmp/.x/xmrig" for e in later)
    assert [e.kind for e in clones.heartbeat(h, clones.at(20))] == [Kind.HEARTBEAT]
    assert [e.kind for e in clones.goodbye(h, clones.at(30))] == [Kind.GOODBYE]
    seqs = [e.seq for e in first + later]
    assert seqs == list(range(len(seqs)))
    new_image = clones.add_image("ami-new", packages={"nginx": "1.26.1"})
    [n] = clones.add_hosts(1, new_image)
    inventory = next(e for e in clones.step(n, clones.at(40)) if e.kind == Kind.PACKAGE_INVENTORY)
    assert inventory.payload["items"]["nginx"] == "1.26.1" and inventory.image_id == "ami-new"
    again = presets.Clones(3, image="ami-old")
    assert [e.to_dict() for e in again.step(again.hosts[0], again.at(0))] == [e.to_dict() for e in first]
    with pytest.raises(ValueError, match="unknown attack"):
        clones.attack(h, "meteor")


def test_scale_in_needs_a_fixed_cohort_and_a_host_in_range() -> None:
    with pytest.raises(ScenarioError, match="out of range"):
        presets.fleet({"web": 2}, events=[{"kind": "scale_in", "cohort": "web", "host": 5, "at": "1m"}])
    with pytest.raises(ScenarioError, match="scale_in needs"):
        presets.fleet({"web": 2}, events=[{"kind": "scale_in", "at": "1m"}])
    fleet = presets.fleet({"web": 2}, duration="3m",
                          events=[{"kind": "scale_in", "cohort": "web", "host": 1, "at": "1m", "goodbye": False}])
    gone = fleet.plans[fleet.initial["web"][1]]
    assert gone.end == 60.0 and gone.goodbye is None
    assert not any(e.kind == Kind.GOODBYE for e in fleet.events())
