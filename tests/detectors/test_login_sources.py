"""Successful logins are judged by where they come from: a source network the image's hosts never saw a login
from is a rare feature (user, source and method named); the usual bastion stays quiet."""

from __future__ import annotations

import unicodedata

from det_helpers import EventMaker, at, findings
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.events import Kind
from detectors import EngineConfig, FamilyEngine, FindingKind, HostState
from detectors.features import auth_source, describe, describe_instance

BASTION = "10.0.9.5"


def login(user: str, src: str, method: str = "publickey") -> dict[str, str]:
    return {"user": user, "outcome": "success", "source": src, "method": method, "service": "sshd"}


class Fleet:
    """`n` hosts of image web-v1 (HostState -> FamilyEngine, as the stream stages run them)."""

    def __init__(self, n: int = 10) -> None:
        self.engine = FamilyEngine(config=EngineConfig(host_timeout_s=1e9))
        self.hosts = [(HostState(f"web-{i}", "web-v1", "web"), EventMaker(f"web-{i}", "web-v1", "web"))
                      for i in range(n)]
        self.out: list = []
        for i in range(n):
            self.event(i, Kind.HELLO, 0.0, {"agent_version": "1"})

    def event(self, i: int, kind: Kind, s: float, payload: dict) -> None:
        hs, make = self.hosts[i]
        obs = hs.apply(make(kind, s, payload))
        if obs is not None:
            self.out += self.engine.process(obs)

    def run_until(self, s: float) -> list:
        t = self.engine.now
        while t <= at(s).timestamp():
            self.out += self.engine.tick(t)
            t += 10
        out, self.out = self.out, []
        return findings(out)


def test_a_root_login_from_a_new_network_is_reported_and_the_bastion_is_not() -> None:
    fleet = Fleet()
    for k in range(3):  # the bastion logs in as deploy on every host every few minutes
        for i in range(10):
            fleet.event(i, Kind.AUTH_ATTEMPT, 10 + 200 * k + i, login("deploy", BASTION))
    assert fleet.run_until(900) == []
    fleet.event(3, Kind.AUTH_ATTEMPT, 2500, login("deploy", "10.0.9.7"))  # later, one host: known network
    assert fleet.run_until(2700) == []
    fleet.event(5, Kind.AUTH_ATTEMPT, 2800, login("root", "203.0.113.77", "password"))
    got = fleet.run_until(3000)
    # 203.0.113.0/24 is a documentation range, private to ipaddress: named by its /24
    assert [(f.kind, f.host_id, f.subject) for f in got] == [(FindingKind.RARE_FEATURE, "web-5", "auth:203.0.113.0/24")]
    text = got[0].explanation
    assert "root" in text and "203.0.113.77" in text and "password" in text and "1 of 10" in text


def test_a_failed_or_local_login_is_no_feature() -> None:
    fleet = Fleet(4)
    fleet.event(1, Kind.AUTH_ATTEMPT, 10, {**login("root", "203.0.113.77", "password"), "outcome": "failure"})
    fleet.event(2, Kind.AUTH_ATTEMPT, 11, {"user": "bob", "outcome": "success", "source": "", "method": "sudo",
                                          "service": "sudo"})
    assert fleet.run_until(400) == []
    assert all(not f.startswith("auth:") for hs, _ in fleet.hosts for f in hs.features())


PAYLOAD_VALUES = st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=300),
                           st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=400, deadline=None)
@given(payload=st.fixed_dictionaries(
    {"outcome": st.sampled_from(["success", "failure", "", None, 1])},
    optional={k: PAYLOAD_VALUES for k in ("user", "source", "method", "service")},
))
def test_hostile_payloads_make_a_bounded_printable_feature_or_none(payload: dict) -> None:
    got = auth_source(payload)
    if got is None:
        return
    feature, details = got
    assert feature.startswith("auth:") and len(feature) <= 5 + 80
    assert "\n" not in feature and all(unicodedata.category(c)[0] != "C" for c in feature)
    for value in details.values():
        assert isinstance(value, str) and len(value) <= 64
        assert all(unicodedata.category(c) not in ("Cc",) for c in value)
    assert describe(feature) and isinstance(describe_instance(feature, details), str)
