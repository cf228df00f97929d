"""One shared test suite over every exported detector (detectors.__all__)."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from det_helpers import BASE, obs

import detectors
from detectors.base import Detector
from detectors.types import Observation
from streams.checks_data import policy_rules

EXPORTED = [
    getattr(detectors, n)
    for n in detectors.__all__
    if isinstance(getattr(detectors, n), type) and issubclass(getattr(detectors, n), Detector)
]

MINER = "proc:/tmp/.x/xmrig|/tmp/.x/xmrig -o pool:#|www-data"
HOSTS = 30
RULES = str(Path(__file__).parents[1] / "fixtures" / "policy" / "rules.yaml")


def make(cls: type) -> Detector:
    """A detector with its defaults; the policy detector with the test rules (none are shipped: the
    hardening checks hold every shipped condition)."""
    return cls(rules=policy_rules(RULES)) if cls is detectors.PolicyCheck else cls()


OUTLIER = "ami-c-h17"


def test_every_detector_is_exported() -> None:
    assert set(EXPORTED) == set(detectors.DETECTORS)
    assert len(EXPORTED) >= 6


def clone_fleet(rng: random.Random) -> tuple[list[Observation], dict[str, Observation]]:
    """A clone cohort and one outlier host that differs in processes, config and metrics."""
    learn, last = [], {}
    for i in range(HOSTS):
        host = f"ami-c-h{i:02d}"
        feats = list(BASE)
        metrics = {"cpu_pct": rng.gauss(30, 2), "mem_pct": rng.gauss(50, 2), "conns": rng.gauss(100, 5)}
        if host == OUTLIER:
            feats = [f for f in feats if f != "cfg:sshd.permitrootlogin=no"]
            feats += [MINER, "cfg:sshd.permitrootlogin=yes"]
            metrics = {"cpu_pct": 97.0, "mem_pct": 88.0, "conns": 400.0}
        o = obs(host, "ami-c", i * 0.1, feats, metrics=metrics, first=True)
        learn.append(o)
        last[host] = o
    return learn, last


def rollout_fleet(rng: random.Random) -> tuple[list[Observation], dict[str, Observation]]:
    """The family rolled from ami-old to ami-new; the outlier is the one host left on the old image."""
    learn, last = [], {}
    for i in range(HOSTS):
        learn.append(obs(f"old-{i}", "ami-old", i * 0.1, BASE, family="c", first=True))
    for i in range(HOSTS):
        if f"old-{i}" != "old-17":
            learn.append(obs(f"old-{i}", "ami-old", 100 + i, family="c", gone=True))
            learn.append(obs(f"new-{i}", "ami-new", 100.5 + i, BASE, family="c", first=True))
    for i in range(HOSTS):
        host, image = ("old-17", "ami-old") if i == 17 else (f"new-{i}", "ami-new")
        o = obs(host, image, 2000 + i, metrics={"cpu_pct": rng.gauss(30, 2)}, family="c")
        learn.append(o)
        last[host] = o
    return learn, {h: o for h, o in last.items()}


def history_fleet(rng: random.Random) -> tuple[list[Observation], dict[str, Observation]]:
    """Hosts with their own history (800 reports a minute apart); the outlier's last report is far from it."""
    learn, last = [], {}
    for i in range(12):
        host = f"ami-c-h{i:02d}"
        for k in range(800):
            m = {"cpu_pct": rng.gauss(30 + i, 2), "mem_pct": rng.gauss(50, 2)}
            learn.append(obs(host, "ami-c", k * 60.0, metrics=m, family="c", first=k == 0))
        spike = {"cpu_pct": 95.0, "mem_pct": 50.0} if host == "ami-c-h07" else {"cpu_pct": 31.0 + i, "mem_pct": 51.0}
        last[host] = obs(host, "ami-c", 800 * 60.0, metrics=spike, family="c")
    return learn, last


FLEETS: dict[type, tuple[Callable[[random.Random], tuple[list[Observation], dict[str, Observation]]], str]] = {
    detectors.RolloutTracker: (rollout_fleet, "old-17"),
    detectors.SelfHistory: (history_fleet, "ami-c-h07"),  # its own history, not the cohort, is what it knows
}


def fleet_for(cls: type) -> tuple[list[Observation], dict[str, Observation], str]:
    make, outlier = FLEETS.get(cls, (clone_fleet, OUTLIER))
    learn, last = make(random.Random(3))
    return learn, last, outlier


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_scoring_before_learning_is_defined(cls: type) -> None:
    d = make(cls)
    for o in (obs("x", "ami-c", 0, BASE, metrics={"cpu_pct": 5.0}, first=True), obs("x", "ami-c", 1)):
        s = d.score_one(o)
        assert isinstance(s, float) and 0.0 <= s <= 1.0
        assert s == 0.0


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_ranks_the_injected_outlier_first(cls: type) -> None:
    d = make(cls)
    learn, last, outlier = fleet_for(cls)
    for o in learn:
        d.learn_one(o)
    scores = {h: d.score_one(o) for h, o in last.items()}
    ranked = sorted(scores, key=lambda h: -scores[h])
    assert ranked[0] == outlier, scores
    assert scores[ranked[0]] > scores[ranked[1]]


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_state_survives_a_pickle_round_trip(cls: type) -> None:
    learn, last, _ = fleet_for(cls)
    half = len(learn) // 2
    a = make(cls)
    for o in learn[:half]:
        a.learn_one(o)
    b = pickle.loads(pickle.dumps(a))
    for o in learn[half:]:
        a.learn_one(o)
        b.learn_one(o)
    assert {h: a.score_one(o) for h, o in last.items()} == {h: b.score_one(o) for h, o in last.items()}


def random_stream(n: int, rng: random.Random) -> list[Observation]:
    """Hosts come and go (at most ~40 live) with ever new random features and metrics."""
    out, live, t, serial = [], [], 0.0, 0
    for _ in range(n):
        t += 0.5
        r = rng.random()
        if r < 0.05 or not live:
            serial += 1
            host = f"h{serial}"
            image = rng.choice(["ami-a", "ami-b", "ami-c"])
            live.append((host, image))
            out.append(obs(host, image, t, [*BASE, f"proc:/opt/{serial}|x|u"], first=True, family="f"))
        elif r < 0.10 and len(live) > 20:
            host, image = live.pop(rng.randrange(len(live)))
            out.append(obs(host, image, t, family="f", gone=True))
        else:
            host, image = rng.choice(live)
            out.append(
                obs(
                    host,
                    image,
                    t,
                    [f"dest:tcp/{rng.randint(1, 10**6)}@x"],
                    family="f",
                    metrics={"cpu_pct": rng.random() * 100, f"m{rng.randint(0, 5)}": rng.random()},
                )
            )
    return out


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_memory_stays_bounded_under_a_long_random_stream(cls: type) -> None:
    stream = random_stream(12_000, random.Random(11))
    d = make(cls)
    sizes = []
    for i, o in enumerate(stream, 1):
        d.learn_one(o)
        if i % 3000 == 0:
            sizes.append(d.state_size())
    # Live hosts and their features are bounded; so must the state be (no growth with stream length).
    assert max(sizes[1:]) < 2.0 * sizes[0], sizes


def simulated_clones() -> tuple[list[Observation], dict[str, Observation], str]:
    """The simulator's own clone cohort, turned into observations by the host stage's HostState: 30 web
    clones for 10 minutes, one of them mined on and its sshd_config weakened half way."""
    from simulator.presets import Clones

    fleet = Clones(HOSTS, seed=5)
    bad = fleet.hosts[17]
    states = {h.host_id: detectors.HostState(h.host_id, fleet.image, fleet.family) for h in fleet.hosts}
    learn: list[Observation] = []
    added: dict[str, set[str]] = {h.host_id: set() for h in fleet.hosts}  # what each host gained since 5 min
    metrics: dict[str, dict[str, float]] = {}
    for cycle in range(60):
        if cycle == 30:
            fleet.attack(bad, "cryptominer")
            fleet.attack(bad, "sshd_tamper")
        for h in fleet.hosts:
            for event in fleet.step(h, fleet.at(cycle * 10)):
                o = states[h.host_id].apply(event)
                if o is None:
                    continue
                learn.append(o)
                metrics[h.host_id] = o.metrics or metrics.get(h.host_id, {})
                if cycle >= 30:
                    added[h.host_id].update(o.added)
    end = fleet.at(600)
    last = {h: Observation(h, fleet.image, fleet.family, end, added=tuple(sorted(added[h])), metrics=metrics[h])
            for h in added}
    return learn, last, bad.host_id


@pytest.mark.parametrize("cls", [c for c in EXPORTED if c not in FLEETS], ids=lambda c: c.__name__)
def test_ranks_the_attacked_host_of_a_simulated_cohort_first(cls: type) -> None:
    learn, last, bad = simulated_clones()
    d = make(cls)
    for o in learn:
        d.learn_one(o)
    scores = {h: d.score_one(o) for h, o in last.items()}
    ranked = sorted(scores, key=lambda h: -scores[h])
    assert ranked[0] == bad, sorted(scores.items(), key=lambda kv: -kv[1])[:3]
    assert scores[ranked[0]] > scores[ranked[1]]
