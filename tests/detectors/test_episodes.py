"""Episodes: flagged reports close together are one alert; a host that recovered for `gap` reports starts anew."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from det_helpers import T0
from hypothesis import given
from hypothesis import strategies as st

from detectors import EngineConfig, FamilyEngine, FindingKind, Observation
from detectors.episodes import Episodes


def test_flags_less_than_gap_reports_apart_are_one_episode() -> None:
    e = Episodes(gap=3)
    opened = [e.note("h", f) for f in (True, False, False, True, True, False, False, False, True)]
    #                                    open  1 quiet 2 quiet  same  same  1      2      3: over  open again
    assert opened == [True, False, False, False, False, False, False, False, True]


def test_an_outage_without_reports_does_not_close_an_episode_and_reported_is_kept() -> None:
    e = Episodes(gap=2)
    assert not e.active("h")
    assert e.note("h", True)
    assert e.active("h") and not e.reported("h")
    e.report("h")
    assert e.reported("h")
    # nothing arrives for a long time (no reports at all), then the host is flagged again: the same episode
    assert not e.note("h", True) and e.reported("h")
    e.note("h", False)
    e.note("h", False)  # recovered for `gap` reports: closed, and forgotten (bounded memory)
    assert "h" not in e.state and not e.reported("h") and not e.active("h")


def test_state_round_trips_and_forget_drops_it() -> None:
    e = Episodes(gap=5)
    e.note("h", True)
    e.report("h")
    e.note("h", False)
    f = Episodes(gap=5)
    f.load("h", e.to_json("h"))
    assert f.state == e.state
    f.load("h", [])  # a checkpoint without an open episode
    assert "h" not in f.state
    e.forget("h")
    assert e.to_json("h") == []
    with pytest.raises(ValueError, match="gap"):
        Episodes(gap=0)


@given(st.lists(st.booleans(), max_size=300), st.integers(1, 30))
def test_episodes_opened_are_the_runs_of_flags_separated_by_gap_quiet_reports(flags: list[bool], gap: int) -> None:
    e = Episodes(gap=gap)
    opened = sum(e.note("h", f) for f in flags)
    # reference: a flag opens an episode when no flag came in the previous `gap` reports
    expected = 0
    last: int | None = None
    for i, f in enumerate(flags):
        if f:
            if last is None or i - last > gap:
                expected += 1
            last = i
    assert opened == expected
    assert len(e.state) <= 1


def test_the_engine_reports_one_lasting_episode_once_and_a_later_one_again() -> None:
    """A lone host (a cohort of one, 5-minute reports, a daily cycle) whose cpu runs far off for three hours, with
    a few ordinary reports in between, is reported once (before: once an hour, each a new alert); a second episode
    two days later is reported again."""
    step = 300.0
    rng = random.Random(5)
    first, second = 12 * 288, 14 * 288  # day 12 and day 14
    engine = FamilyEngine(config=EngineConfig())
    found = []
    for k in range(16 * 288):
        hour = (k * step / 3600.0) % 24
        cpu = 40.0 - 20.0 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, 2)
        off = (first <= k < first + 36 or second <= k < second + 24) and k % 9 != 0  # every ninth is usual
        if off:
            cpu += 40.0
        out = engine.process(
            Observation("solo", "ami-solo", "solo", T0 + timedelta(seconds=k * step), metrics={"cpu_pct": cpu})
        )
        found += [(k, o) for o in out if getattr(o, "kind", None) is FindingKind.METRIC_DEVIATION]
    assert [k for k, _ in found if k < first] == []
    during = [k for k, _ in found if first <= k < first + 36 + 20]
    assert len(during) == 1 and during[0] <= first + 2, found
    again = [k for k, _ in found if second <= k < second + 24 + 20]
    assert len(again) == 1, found


def test_counts_only_the_flag_that_opens_an_episode() -> None:
    e = Episodes(gap=2)
    counted = []
    for f in (False, True, True, False, True, False, False, True):
        counted.append(e.counts("h", f))
        e.note("h", f)
    # unflagged reports always count; of the flags, the first of each episode (the last one opens a new episode)
    assert counted == [True, True, False, True, False, True, True, True]


def test_the_peers_count_and_report_a_lasting_episode_once_and_the_next_one_is_still_found() -> None:
    """Eight clones at a 1-minute cadence; h3 runs 40 points of cpu above its peers for two hours, then again
    four hours later. Before, every flagged report counted at 1.5 x the peer threshold it had just raised: the
    threshold ratcheted up report by report (to 35, past the host's own z, within the 5 reports the
    persistence rule waits) and neither episode was reported by the peers."""
    step = 60.0
    hosts = [f"h{i}" for i in range(8)]
    rng = random.Random(3)
    first, second = 600, 960
    engine = FamilyEngine(config=EngineConfig())
    peer_found = []
    thr_before = thr_after = 0.0
    for k in range(first + 120 + 240 + 60):
        t = T0 + timedelta(seconds=k * step)
        for h in hosts:
            cpu = 40.0 + rng.gauss(0, 3)
            if h == "h3" and (first <= k < first + 120 or second <= k < second + 30):
                cpu += 40.0
            out = engine.process(Observation(h, "ami-c", "c", t, metrics={"cpu_pct": cpu, "conns": 100.0}))
            metric = [o for o in out if getattr(o, "kind", None) is FindingKind.METRIC_DEVIATION]
            peer_found += [k for o in metric if o.details["view"] == "peers"]
        if k == first - 1:
            thr_before = engine.peer_calibration.threshold("h3", 1e-5) or 0.0
        if k == second - 1:
            thr_after = engine.peer_calibration.threshold("h3", 1e-5) or 0.0
    assert [k for k in peer_found if k < first] == []
    # one alert for the two hours (before, one per metric each suppress_s while the calibration allowed it)
    assert len([k for k in peer_found if first <= k < first + 120]) == 1, peer_found
    # the episode counted once: the calibrated threshold did not run away with it
    assert thr_after <= max(2.0 * thr_before, 2.0 * engine.peers.min_z), (thr_before, thr_after)
    assert len([k for k in peer_found if second <= k < second + 30]) == 1, peer_found
