"""Campaigns: behaviour the image never showed, appearing on several of its hosts within a short time, is
reported once naming every host; a change that reaches most of the image moves the baseline silently."""

from __future__ import annotations

from contract.findings import Finding, FindingKind
from detectors import EngineConfig, FamilyEngine
from detectors.backtest import Replay
from herdwatch.evaluation.scoring import evaluate
from simulator.host import SimHost
from simulator.presets import Clones

C2 = ("198.51.100.23", 8443)


class Fleet:
    def __init__(self, hosts: int = 11) -> None:
        self.clones = Clones(hosts, cycle=10.0)
        self.replay = Replay(FamilyEngine(config=EngineConfig()))
        self.t = 0.0

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            when = self.clones.at(self.t)
            for host in self.clones.hosts:
                for event in self.clones.step(host, when):
                    self.replay.feed(event)
            self.replay.tick(when)
            self.t += 10.0

    def beacon(self, host: SimHost) -> None:
        """The service process opens a connection to a destination the image never talked to."""
        proc = next(p for p in host.procs.values() if p["exe"] == host.image.service)
        host.connect(C2[0], C2[1], proc)

    def findings(self) -> list[Finding]:
        return [f for f in self.replay.result.findings if f.kind != FindingKind.DATA_LOSS]


def test_the_same_new_connection_on_2_of_11_hosts_is_one_campaign_naming_both() -> None:
    fleet = Fleet(11)
    fleet.run(600)
    assert fleet.findings() == []
    a, b, c = fleet.clones.hosts[2], fleet.clones.hosts[7], fleet.clones.hosts[9]
    start = fleet.clones.at(fleet.t)
    fleet.beacon(a)
    fleet.run(20)
    fleet.beacon(b)
    fleet.run(300)
    out = fleet.findings()
    assert [f.kind for f in out] == [FindingKind.CAMPAIGN], [f"{f.kind} {f.host_id} {f.subject}" for f in out]
    campaign = out[0]
    assert campaign.subject.startswith("dest:tcp/8443@")
    assert campaign.details["hosts"] == [a.host_id, b.host_id]
    assert a.host_id in campaign.explanation and b.host_id in campaign.explanation
    # a third host a few minutes later joins the campaign: reported, naming all three
    fleet.beacon(c)
    fleet.run(200)
    more = fleet.findings()[1:]
    assert [f.kind for f in more] == [FindingKind.CAMPAIGN]
    assert more[0].host_id == c.host_id and more[0].details["hosts"] == [a.host_id, b.host_id, c.host_id]
    # the evaluation credits the campaign finding to every host it names
    end = fleet.clones.at(fleet.t)
    truth = [{"host_id": h.host_id, "scenario": "campaign", "start": start, "end": end} for h in (a, b)]
    report = evaluate(out, truth)
    assert report["detected"] == 2 and report["false_positives"] == 0


def test_a_config_push_and_a_deploy_to_every_host_move_the_baseline_silently() -> None:
    fleet = Fleet(11)
    fleet.run(600)
    for i, host in enumerate(fleet.clones.hosts):
        host.set_config("file.sha256:/etc/resolv.conf", "77aa")
        fleet.beacon(host)  # a new dependency every host starts talking to
        if i % 3 == 2:
            fleet.run(10)
    fleet.run(600)
    assert fleet.findings() == [], [f"{f.kind} {f.host_id} {f.subject}" for f in fleet.findings()]


def test_a_new_connection_on_one_host_is_still_a_rare_feature() -> None:
    fleet = Fleet(11)
    fleet.run(600)
    fleet.beacon(fleet.clones.hosts[4])
    fleet.run(120)
    out = fleet.findings()
    assert [(f.kind, f.host_id) for f in out] == [(FindingKind.RARE_FEATURE, fleet.clones.hosts[4].host_id)]


def test_a_reported_behaviour_reaching_most_of_the_image_soon_after_is_a_campaign() -> None:
    # The lab's full plan: a miner reported on one web host, then the same miner on 3 of the 5 hosts within
    # seconds. Most of the image, but the behaviour was reported minutes ago: a deploy does not start with a
    # finding. Before, the three were silent and the miner became the image's behaviour.
    fleet = Fleet(5)
    fleet.run(600)
    first = fleet.clones.hosts[1]
    fleet.beacon(first)
    fleet.run(120)
    assert [(f.kind, f.host_id) for f in fleet.findings()] == [(FindingKind.RARE_FEATURE, first.host_id)]
    spread = fleet.clones.hosts[2:5]
    for host in spread:
        fleet.beacon(host)
    fleet.run(300)
    more = fleet.findings()[1:]
    assert [f.kind for f in more] == [FindingKind.CAMPAIGN], [f"{f.kind} {f.host_id} {f.subject}" for f in more]
    assert more[0].details["hosts"] == [first.host_id, *(h.host_id for h in spread)]
    # once the campaign window is over, the image's hosts showing it are its behaviour
    fleet.run(900)
    fleet.beacon(fleet.clones.hosts[0])
    fleet.run(300)
    assert fleet.findings()[2:] == []


def test_behaviour_never_reported_reaching_most_of_a_small_image_stays_silent() -> None:
    fleet = Fleet(5)
    fleet.run(600)
    for host in fleet.clones.hosts[2:5]:
        fleet.beacon(host)
    fleet.run(300)
    assert fleet.findings() == [], [f"{f.kind} {f.host_id} {f.subject}" for f in fleet.findings()]
