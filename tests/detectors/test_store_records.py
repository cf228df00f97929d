"""The engine's durable state: typed records survive JSON exactly, key families build and parse their keys."""

import json

import pytest
from det_helpers import BASE, at, obs
from hypothesis import given
from hypothesis import strategies as st

from contract.findings import RolloutStatus
from detectors import FamilyEngine
from detectors.records import FeatureCount, HostEntry, MetricReport, PendingJudgement, RolloutState
from detectors.store_keys import (
    FEATURE_COUNT,
    HOST,
    IMAGE,
    KEY_FAMILIES,
    PENDING,
    ROLLOUT,
    SUPPRESSED,
    family_of_key,
    owner_of_key,
)

names = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), min_size=1, max_size=12)
"""Host, image and family names: never a "|"."""
features = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
"""Features and subjects: anything, "|" included."""
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
numbers = st.floats(allow_nan=False, allow_infinity=False)


def through_json(v: object) -> object:
    return json.loads(json.dumps(v, allow_nan=False))


@given(names, names, times, times)
def test_host_entry_round_trips(image: str, family: str, first: float, last: float) -> None:
    e = HostEntry(image, family, first, last)
    assert HostEntry.from_json(through_json(e.to_json())) == e  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**6), times)
def test_feature_count_round_trips(hosts: int, first: float) -> None:
    c = FeatureCount(hosts, first)
    assert FeatureCount.from_json(through_json(c.to_json())) == c  # type: ignore[arg-type]


@given(times, st.dictionaries(features, numbers, max_size=6))
def test_metric_report_round_trips(t: float, values: dict[str, float]) -> None:
    m = MetricReport(t, values)
    assert MetricReport.from_json(through_json(m.to_json())) == m  # type: ignore[arg-type]


pending = st.builds(
    PendingJudgement,
    first=times,
    grown=times,
    delay=st.floats(min_value=0, max_value=1e5),
    hosts=st.dictionaries(names, times, min_size=1, max_size=5),
    policy=st.booleans(),
    recheck_at=times,
)


@given(pending)
def test_pending_judgement_round_trips(p: PendingJudgement) -> None:
    assert PendingJudgement.from_json(through_json(p.to_json())) == p  # type: ignore[arg-type]


@given(pending, st.floats(min_value=0, max_value=1e5))
def test_pending_judgement_is_due_after_delay_spread_and_recheck(p: PendingJudgement, settle: float) -> None:
    due = p.due(settle)
    assert due >= p.first + p.delay and due >= p.recheck_at
    assert due >= p.grown + (settle if len(p.hosts) > 1 else 0.0)


rollouts = st.builds(
    RolloutState,
    old=names,
    new=names,
    status=st.sampled_from(RolloutStatus),
    started=times,
    share=st.floats(min_value=0, max_value=1),
    milestone=st.sampled_from((0.0, 0.25, 0.5, 0.75)),
    diff=st.none() | st.fixed_dictionaries({"added": st.integers(0, 200), "removed": st.integers(0, 200)}),
    done=st.none() | times,
    peak=st.integers(min_value=0, max_value=10**5),
    stale=st.dictionaries(names, names, max_size=5),
    moved=st.none() | times,
)


@given(rollouts)
def test_rollout_state_round_trips(r: RolloutState) -> None:
    back = RolloutState.from_json(through_json(r.to_json()))  # type: ignore[arg-type]
    assert back == r and isinstance(back.status, RolloutStatus)
    assert list(back.stale) == list(r.stale)  # order matters: the oldest are dropped first


@given(st.sampled_from(KEY_FAMILIES), st.data())
def test_every_key_family_parses_the_keys_it_builds(kf, data) -> None:  # type: ignore[no-untyped-def]
    last = data.draw(features if len(kf.parts) > 1 else names)
    parts = (*(data.draw(names) for _ in kf.parts[:-1]), last)
    key = kf.key(*parts)
    assert kf.holds(key) and family_of_key(key) is kf and kf.parse(key) == parts
    assert owner_of_key(key) == (kf.owner, parts[0])


def test_keys_keep_their_short_layout_and_name_their_owner() -> None:
    assert FEATURE_COUNT.key("ami-1", "proc:/bin/x|x|root") == "f|ami-1|proc:/bin/x|x|root"
    assert PENDING.parse("p|ami-1|-listen:tcp/22@any|sshd") == ("ami-1", "-listen:tcp/22@any|sshd")
    assert owner_of_key(IMAGE.key("web", "ami-1")) == ("family", "web")
    assert owner_of_key(SUPPRESSED.key("image:ami-1", "policy:x")) == ("image", "ami-1")
    assert owner_of_key(HOST.key("i-1")) == ("host", "i-1") and owner_of_key("other|x") is None
    with pytest.raises(ValueError, match="takes 2 part"):
        FEATURE_COUNT.key("ami-1")
    with pytest.raises(ValueError, match="not a 'r' key"):
        ROLLOUT.parse("h|i-1")


def test_an_engine_store_holds_only_known_keys_and_json_records() -> None:
    e = FamilyEngine()
    for i in range(6):
        e.process(obs(f"h{i}", "web-1", 0, BASE, first=True))
    e.process(obs("h0", "web-1", 5, ["proc:/tmp/x|x|root"]))
    e.process(obs("n0", "web-2", 6, BASE, first=True))
    e.tick(at(7))
    for key, value in e.store.items():
        assert family_of_key(key) is not None, key
        assert through_json(value) == value, key
    pending = [PendingJudgement.from_json(v) for k, v in e.store.items()
               if PENDING.holds(k) and PENDING.parse(k)[1] == "proc:/tmp/x|x|root"]  # (not the hardening one)
    assert pending and pending[0].hosts == {"h0": pending[0].first}
    rollout = e.rollout.state("web")
    assert rollout is not None and rollout.status is RolloutStatus.STARTED and rollout.new == "web-2"
