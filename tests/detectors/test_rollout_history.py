"""A new image starts with the behaviour history of the image it replaces: a periodic job's child first caught
on one host of the new cohort is the family's known behaviour, not rare; a miner there still is; what was
reported on the old image within its campaign window is not inherited as known."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from contract.findings import Finding, FindingKind
from detectors import EngineConfig, FamilyEngine
from detectors.backtest import Replay
from detectors.records import ImageLineage
from detectors.store_keys import LINEAGE
from simulator.host import SimHost
from simulator.presets import Clones

JOBS = (
    {"exe": "/usr/bin/mv", "cmdline": "mv /var/log/app.log /var/log/app.log.1", "user": "root", "name": "mv"},
    {"exe": "/usr/bin/date", "cmdline": "date +%s", "user": "root", "name": "date"},
    {"exe": "/usr/bin/hostname", "cmdline": "hostname", "user": "root", "name": "hostname"},
)
MINER = "/tmp/.x/xmrig"
ROLLOUT_AT = 7200.0
"""Event-time second at which the first host of the new image appears (the old image ran two hours)."""


def rollout_fleet(
    catch: float,
    after_s: float = 3600.0,
    seed: int = 3,
    miners: tuple[tuple[str, int, float], ...] = (),
) -> tuple[list[Finding], FamilyEngine, Clones, list[SimHost]]:
    """8 clones of ami-web-1 at a 10 s cycle catch each job's child with probability `catch` per cycle; from
    ROLLOUT_AT a new host of ami-web-2 arrives every 30 s and an old one leaves 15 s later, until all 8 are
    replaced; the new hosts run the same jobs for `after_s`. `miners`: ("old" | "new", host index, second)."""
    clones = Clones(8, cycle=10.0, seed=seed)
    new_image = clones.add_image("ami-web-2", packages={"nginx": "1.26.1"})
    old_hosts = list(clones.hosts)
    new_hosts = clones.add_hosts(8, image=new_image, at=ROLLOUT_AT)
    engine = FamilyEngine(config=EngineConfig())
    replay = Replay(engine)
    rng = random.Random(seed)
    live: list[SimHost] = list(old_hosts)
    caught: dict[str, list[int]] = {}
    end = ROLLOUT_AT + after_s
    t = 0.0
    while t < end:
        when = clones.at(t)
        for side, i, at in miners:
            if at == t:
                host = (old_hosts if side == "old" else new_hosts)[i]
                clones.attack(host, "cryptominer", exe=MINER)
        k = int((t - ROLLOUT_AT) // 30) if t >= ROLLOUT_AT else -1
        if 0 <= k < 8 and new_hosts[k] not in live and t >= ROLLOUT_AT + 30 * k:
            live.append(new_hosts[k])
        for host in list(live):
            for pid in caught.pop(host.host_id, []):
                host.exit_process(pid)
            if t > 0:
                for job in JOBS:
                    if rng.random() < catch:
                        proc = host.start_process(dict(job), parent_exe="/usr/sbin/cron")
                        caught.setdefault(host.host_id, []).append(proc["pid"])
            for event in clones.step(host, when):
                replay.feed(event)
            if host in old_hosts and k >= 0 and old_hosts.index(host) <= k and t >= ROLLOUT_AT + 30 * k + 15:
                for event in clones.goodbye(host, when):
                    replay.feed(event)
                live.remove(host)
        replay.tick(when)
        t += clones.cycle
    return replay.finish().findings, engine, clones, new_hosts


def host_findings(findings: list[Finding], hosts: list[SimHost], needle: str) -> list[Finding]:
    ids = {h.host_id for h in hosts}
    return [f for f in findings if f.host_id in ids and needle in f.subject and f.kind != FindingKind.STALE_IMAGE]


def test_a_periodic_jobs_child_first_caught_on_a_new_image_host_is_known() -> None:
    findings, engine, _, new_hosts = rollout_fleet(catch=0.002)
    jobs = [f for j in JOBS for f in host_findings(findings, new_hosts, j["exe"])]
    assert jobs == [], [f"{f.time} {f.host_id} {f.subject}" for f in jobs]
    # the new image took the old one's history: its entries for the jobs' children are its own now
    assert engine.history.lineage.get("ami-web-2") == ("ami-web-1",)
    stored = {k: ImageLineage.from_json(v) for k, v in engine.store.items() if LINEAGE.holds(k)}
    assert stored == {LINEAGE.key("ami-web-2"): ImageLineage(("ami-web-1",))}
    inherited = [f for f in engine.history.entries.get("ami-web-2", {}) if any(j["exe"] in f for j in JOBS)]
    assert inherited


def test_the_rollout_history_survives_a_restart() -> None:
    _, engine, _, _ = rollout_fleet(catch=0.002, after_s=600.0)
    again = FamilyEngine(store=engine.store, config=EngineConfig())
    again.load()
    assert again.history.lineage == engine.history.lineage == {"ami-web-2": ("ami-web-1",)}


def test_a_miner_on_one_new_image_host_is_still_rare() -> None:
    findings, _, _, new_hosts = rollout_fleet(catch=0.002, after_s=1800.0, miners=(("new", 3, ROLLOUT_AT + 900),))
    miner = host_findings(findings, new_hosts, MINER)
    assert miner and {f.host_id for f in miner} == {new_hosts[3].host_id}
    assert any(f.kind in (FindingKind.RARE_FEATURE, FindingKind.CAMPAIGN) for f in miner)


def test_what_was_reported_on_the_old_image_in_its_campaign_window_is_not_inherited() -> None:
    # a miner reported on an old host just before the rollout, then on a new-image host within the window
    findings, _, _, new_hosts = rollout_fleet(
        catch=0.0, after_s=900.0, miners=(("old", 5, ROLLOUT_AT - 120), ("new", 2, ROLLOUT_AT + 360))
    )
    old_report = [f for f in findings if MINER in f.subject and f.image_id == "ami-web-1"]
    assert old_report, "the miner on the old image is reported first"
    miner = host_findings(findings, new_hosts, MINER)
    assert {f.host_id for f in miner} == {new_hosts[2].host_id}


def test_the_same_miner_again_after_the_campaign_window_is_reported_again() -> None:
    # the lab's long run: a miner reported on one host, then the same miner on two more hosts 27 minutes
    # later (the new image's); a program run from /tmp never becomes the image's behaviour by spreading
    findings, _, clones, new_hosts = rollout_fleet(
        catch=0.0, after_s=2400.0,
        miners=(("old", 5, 1800.0), ("old", 2, 3600.0), ("new", 1, ROLLOUT_AT + 1200), ("new", 4, ROLLOUT_AT + 1200)),
    )
    old_hosts = [h for h in clones.hosts if h not in new_hosts]
    reported = {f.host_id for f in findings if MINER in f.subject}
    for f in findings:
        if f.kind == FindingKind.CAMPAIGN and MINER in f.subject:
            reported.update(f.details["hosts"])
    assert {old_hosts[5].host_id, old_hosts[2].host_id, new_hosts[1].host_id, new_hosts[4].host_id} <= reported
    both = [f for f in findings if f.kind == FindingKind.CAMPAIGN and MINER in f.subject
            and {new_hosts[1].host_id, new_hosts[4].host_id} <= set(f.details["hosts"])]
    assert both, "the two new-image hosts at once: one campaign naming both"


def test_inheritance_rules_of_the_history() -> None:
    engine = FamilyEngine(config=EngineConfig(history_s=3600.0, campaign_window_s=600.0))
    h = engine.history
    job, miner = "proc:/usr/bin/date|date|root", f"proc:{MINER}|xmrig|root"
    h.judged("v1", job, 1000.0)
    h.judged("v1", miner, 1000.0, reported=["h1"])
    h.replaces("v2", "v1")
    assert h.inherited("v2", job, "h9", 1100.0) == "v1"
    assert h.known("v2", job, "h9", 1100.0, False)
    assert h.get("v2", job) is not None  # now the new image's own entry
    assert not h.known("v2", miner, "h9", 1100.0, False)  # reported within its campaign window
    assert not h.known("v2", miner, "h1", 2000.0, False)  # reported on that host
    assert h.inherited("v2", miner, "h9", 2000.0) == "v1"  # the window passed: the family's behaviour
    assert h.inherited("v2", miner, "h9", 2000.0, sticky=True) is None  # ... unless it looks like an intrusion
    assert not h.known("v2", miner, "h9", 2000.0, False, sticky=True)
    h.judged("v1", miner, 2000.0, reported=["h2"])  # sticky in its own image too: reported again elsewhere
    assert not h.known("v1", miner, "h7", 3000.0, True, sticky=True)
    assert h.known("v1", miner, "h7", 3000.0, True)
    assert h.inherited("v2", "proc:/usr/bin/new|new|root", "h9", 1100.0) is None
    assert h.inherited("v2", job + "x", "h9", 1100.0) is None
    # nothing older than history_s; through a chain of rollouts; never itself
    h.judged("v1", "proc:/usr/bin/old|old|root", 0.0)
    assert h.inherited("v2", "proc:/usr/bin/old|old|root", "h9", 4000.0) is None
    h.replaces("v3", "v2")
    h.replaces("v3", "v3")
    assert h.lineage["v3"] == ("v2",)
    assert h.inherited("v3", job, "h9", 1200.0) == "v2"  # v2 has it as its own since it was asked
    h.judged("v1", "proc:/usr/bin/cron2|cron2|root", 1000.0)
    assert h.inherited("v3", "proc:/usr/bin/cron2|cron2|root", "h9", 1200.0) == "v1"
    # bounded, and forgotten with the image
    for i in range(10):
        h.replaces("v9", f"old{i}")
    assert len(h.lineage["v9"]) == 4 and h.lineage["v9"][-1] == "old9"
    h.forget_image("v9")
    assert "v9" not in h.lineage and LINEAGE.key("v9") not in engine.store


names = st.text(st.characters(blacklist_characters="|", codec="utf-8"), min_size=1, max_size=8)


@given(st.lists(names, max_size=6))
def test_lineage_round_trips(images: list[str]) -> None:
    rec = ImageLineage(tuple(images))
    assert ImageLineage.from_json(json.loads(json.dumps(rec.to_json()))) == rec


@given(st.lists(st.tuples(names, names), max_size=30))
def test_any_sequence_of_rollouts_keeps_lineage_bounded_and_reloadable(rollouts: list[tuple[str, str]]) -> None:
    engine = FamilyEngine(config=EngineConfig())
    h = engine.history
    for new, old in rollouts:
        h.replaces(new, old)
    for image, replaced in h.lineage.items():
        assert 1 <= len(replaced) <= 4 and image not in replaced and len(set(replaced)) == len(replaced)
    again = FamilyEngine(store=engine.store, config=EngineConfig())
    again.load()
    assert again.history.lineage == h.lineage
    for image in list(h.lineage):  # a lookup through any chain ends (cycles included)
        assert h.inherited(image, "proc:/usr/bin/x|x|root", "h", 0.0) is None
