"""A late judgement (a worker catching up on a backlog, judgements held at the low watermark) is made as of
when it was due, and so is the host it judges: a host that showed a rare behaviour and was destroyed (or
lost the feature) after the judgement was due, but before the worker got there, is still reported. Found in
the lab at a load average of 47: a dropper and a campaign host were replaced by a rollout two minutes after
their attacks, the live worker was behind, and neither was reported, while replaying the same stored
telemetry through the same detectors in order found both."""

from __future__ import annotations

import math

from det_helpers import advance, findings, join, obs
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import EngineConfig, FamilyEngine

MINER = "proc:/tmp/.cache/kworkerds|/tmp/.cache/kworkerds /dev/zero|root"


def run(behind: bool, leave_after: float, how: str = "gone", campaign: bool = False) -> list[str]:
    """20 clones; h03 starts the miner at 100 s and leaves (or loses the feature) `leave_after` s later.
    `behind`: the worker's low watermark stays at 50 s until every observation is in (a lagging partition),
    then catches up; otherwise it follows event time."""
    engine = FamilyEngine(config=EngineConfig())
    out = join(engine, "ami-1", 20, s=0.0)
    if behind:
        engine.watermark = _t(50.0)
    out += engine.process(obs("ami-1-h03", "ami-1", 100.0, (MINER,)))
    if campaign:  # the same miner on a second clone 5 s later: one campaign naming both
        out += engine.process(obs("ami-1-h04", "ami-1", 105.0, (MINER,)))
    t = 100.0
    while t + 10.0 < 100.0 + leave_after:
        t += 10.0
        out += engine.tick(_at(t))
    if how == "gone":
        out += engine.process(obs("ami-1-h03", "ami-1", 100.0 + leave_after, gone=True))
    else:
        out += engine.process(obs("ami-1-h03", "ami-1", 100.0 + leave_after, removed=(MINER,)))
    if behind:
        engine.watermark = math.inf
    out += advance(engine, 100.0 + leave_after, 100.0 + leave_after + 60.0)
    named = {f.host_id for f in findings(out) if MINER in f.subject}
    for f in findings(out):
        if MINER in f.subject:
            hosts = f.details.get("hosts")
            named |= set(hosts) if isinstance(hosts, list) else set()  # a campaign names every host
    return sorted(named)


def _t(s: float) -> float:
    from det_helpers import at

    return at(s).timestamp()


def _at(s: float):  # type: ignore[no-untyped-def]
    from det_helpers import at

    return at(s)


def test_a_host_gone_after_its_judgement_was_due_is_reported_also_when_judged_late() -> None:
    assert run(behind=False, leave_after=120.0) == ["ami-1-h03"]  # in order: judged while it ran
    assert run(behind=True, leave_after=120.0) == ["ami-1-h03"]  # late: as of when it was due


def test_a_feature_lost_after_its_judgement_was_due_is_reported_also_when_judged_late() -> None:
    assert run(behind=True, leave_after=120.0, how="removed") == ["ami-1-h03"]


def test_a_host_gone_before_its_judgement_was_due_is_not_reported_either_way() -> None:
    # it left before the judgement was due: in order it is not judged either (nothing left to report on)
    assert run(behind=False, leave_after=5.0) == run(behind=True, leave_after=5.0)


def test_a_campaign_host_gone_after_the_judgement_was_due_is_named_also_when_judged_late() -> None:
    assert run(behind=False, leave_after=120.0, campaign=True) == ["ami-1-h03", "ami-1-h04"]
    assert run(behind=True, leave_after=120.0, campaign=True) == ["ami-1-h03", "ami-1-h04"]


@settings(max_examples=30, deadline=None)
@given(st.floats(1.0, 200.0), st.sampled_from(["gone", "removed"]), st.booleans())
def test_late_and_in_order_judgements_agree_on_a_departing_host(leave_after: float, how: str, campaign: bool) -> None:
    late = run(behind=True, leave_after=leave_after, how=how, campaign=campaign)
    assert late == run(behind=False, leave_after=leave_after, how=how, campaign=campaign)
