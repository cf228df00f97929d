"""A completed rollout's old image coming back: a rollback (no stale hosts) or one stale host (reported).

The lab's long run rolled all 7 web hosts to web-v2 (completed) and then back to web-v1, host by host: each
returning web-v1 host was reported as stale on its own.
"""

from det_helpers import BASE, advance, findings, join, obs, rollouts

from detectors import EngineConfig, FamilyEngine, FindingKind, RolloutStatus


def completed_rollout(e: FamilyEngine, n: int = 7) -> list:
    """`n` hosts of ami-v1 replaced one by one with ami-v2 hosts (every 20 s), then the rollout completes."""
    out = join(e, "ami-v1", n, family="web")
    for i in range(n):
        t = 100 + 20 * i
        out += e.process(obs(f"ami-v1-h{i:02d}", "ami-v1", t, family="web", gone=True))
        out += e.process(obs(f"v2-{i}", "ami-v2", t, BASE, family="web", first=True))
    out += advance(e, 300, 600)
    assert RolloutStatus.COMPLETED in [r.status for r in rollouts(out)]
    return out


def config() -> EngineConfig:
    return EngineConfig(rollout_complete_after_s=100, host_timeout_s=1e6, rollout_return_s=300)


def test_rollback_of_a_completed_rollout_reports_no_stale_host() -> None:
    e = FamilyEngine(config=config())
    completed_rollout(e)
    out: list = []
    for i in range(7):  # the rollback: every ami-v2 host replaced by a new ami-v1 host, one every 20 s
        t = 1000 + 20 * i
        out += e.process(obs(f"v2-{i}", "ami-v2", t, family="web", gone=True))
        out += e.process(obs(f"back-{i}", "ami-v1", t, BASE, family="web", first=True))
        out += advance(e, t, t + 19)
    out += advance(e, 1200, 3000)
    assert [f.host_id for f in findings(out) if f.kind == FindingKind.STALE_IMAGE] == []
    events = rollouts(out)
    back = [r for r in events if r.status == RolloutStatus.ROLLED_BACK]
    assert len(back) == 1
    assert (back[0].old_image, back[0].new_image) == ("ami-v1", "ami-v2")
    assert "ami-v1" in back[0].explanation and "back" in back[0].explanation
    # the way back is followed like a rollout: it completes, and image ami-v2 is now the one left behind
    assert events[-1].status == RolloutStatus.COMPLETED and events[-1].new_image == "ami-v1"
    assert e.rollout.stale("ami-v1", "web") is None and e.rollout.stale("ami-v2", "web") == "ami-v1"


def test_a_host_launched_from_the_old_image_long_after_the_rollout_is_stale() -> None:
    e = FamilyEngine(config=config())
    completed_rollout(e)
    out = e.process(obs("late-0", "ami-v1", 5000, BASE, family="web", first=True))
    out += advance(e, 5000, 5200)  # within the window another host of ami-v1 might still follow
    assert findings(out) == [] and rollouts(out) == []
    out = advance(e, 5210, 5600)
    stale = [f for f in findings(out) if f.kind == FindingKind.STALE_IMAGE]
    assert [f.host_id for f in stale] == ["late-0"]
    assert "ami-v2" in stale[0].explanation
    assert [r for r in rollouts(out) if r.status == RolloutStatus.ROLLED_BACK] == []


def test_two_late_hosts_below_critical_mass_are_both_stale() -> None:
    e = FamilyEngine(config=config())
    completed_rollout(e)
    out = e.process(obs("late-0", "ami-v1", 5000, BASE, family="web", first=True))
    out += e.process(obs("late-1", "ami-v1", 5100, BASE, family="web", first=True))
    out += advance(e, 5000, 6000)
    assert sorted(f.host_id for f in findings(out) if f.kind == FindingKind.STALE_IMAGE) == ["late-0", "late-1"]
    # a third one, after the other two's window: alone again, reported after its own wait
    out = e.process(obs("late-2", "ami-v1", 6100, BASE, family="web", first=True)) + advance(e, 6100, 6500)
    assert [f.host_id for f in findings(out) if f.kind == FindingKind.STALE_IMAGE] == ["late-2"]
    assert [r for r in rollouts(out) if r.status == RolloutStatus.ROLLED_BACK] == []


def test_a_left_behind_host_is_still_reported_when_the_rollout_completes() -> None:
    e = FamilyEngine(config=config())
    out = join(e, "ami-v1", 10, family="web")
    for i in range(9):
        out += e.process(obs(f"ami-v1-h{i:02d}", "ami-v1", 100 + i, family="web", gone=True))
        out += e.process(obs(f"v2-{i}", "ami-v2", 100 + i, BASE, family="web", first=True))
    out += advance(e, 200, 600)
    assert [f.host_id for f in findings(out) if f.kind == FindingKind.STALE_IMAGE] == ["ami-v1-h09"]
