"""OffsetGuard: each source message reaches the handler once per assignment, in order; losses are re-fetched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from stream_helpers import Clock

from streams.faust_fixes import OffsetGuard, Verdict


def test_in_order_messages_are_processed_from_the_committed_offset() -> None:
    guard = OffsetGuard()
    assert [guard.admit("t-0", o, 13) for o in (13, 14, 15)] == [Verdict.PROCESS] * 3
    assert guard.next["t-0"] == 16 and guard.refetches() == []


def test_second_deliveries_are_skipped() -> None:
    guard = OffsetGuard()
    for o in (5, 6, 7):
        guard.admit("t-0", o, 5)
    assert guard.admit("t-0", 6, 5) is Verdict.SKIP
    assert guard.admit("t-0", 8, 5) is Verdict.PROCESS


def test_a_jump_is_reported_once_and_fetched_again_after_the_pipeline_settles() -> None:
    clock = Clock()
    guard = OffsetGuard(refetch_every_s=2.0, clock=clock)
    guard.admit("t-0", 32, 32)
    assert guard.admit("t-0", 34, 32) is Verdict.LOST  # 33 never arrived
    assert guard.admit("t-0", 35, 32) is Verdict.SKIP  # fetched before the seek: it comes again
    assert guard.refetches() == []  # let what was fetched before drain first
    clock.t = 2.5
    [r] = guard.refetches()
    assert (r.tp, r.offset, r.missing, r.given_up) == ("t-0", 33, 1, False)
    assert guard.refetches() == []  # one seek per refetch_every_s
    clock.t = 5.0
    assert [r.offset for r in guard.refetches()] == [33]  # still missing: seek again
    assert [guard.admit("t-0", o, 32) for o in (33, 34, 35)] == [Verdict.PROCESS] * 3
    clock.t = 10.0
    assert guard.refetches() == []


def test_a_first_message_past_the_committed_offset_is_a_loss() -> None:
    guard = OffsetGuard()
    assert guard.admit("t-1", 20, 13) is Verdict.LOST
    assert guard.lost["t-1"].want == 13


def test_without_a_committed_offset_the_first_message_sets_the_start() -> None:
    guard = OffsetGuard()
    assert guard.admit("t-2", 40, None) is Verdict.PROCESS
    assert guard.admit("t-2", 42, None) is Verdict.LOST


def test_without_a_committed_offset_the_log_start_is_the_start_when_known() -> None:
    guard = OffsetGuard()
    guard.start["t-2"] = 7  # a partition never committed starts at the log's first offset
    assert guard.admit("t-2", 9, None) is Verdict.LOST  # 7 and 8 were lost on the way
    assert guard.lost["t-2"].want == 7
    assert guard.admit("t-3", 4, 4) is Verdict.PROCESS  # a committed offset comes first
    guard.reset()
    assert guard.start == {} and guard.admit("t-2", 9, None) is Verdict.PROCESS


def test_a_gap_the_log_really_has_is_given_up_on_after_max_refetch_seeks() -> None:
    clock = Clock()
    guard = OffsetGuard(refetch_every_s=1.0, max_refetch=3, clock=clock)
    guard.admit("t-0", 10, 10)
    guard.admit("t-0", 13, 10)  # 11-12 do not exist (say, transaction markers): 13 comes after every seek
    seeks = []
    for step in range(1, 5):
        clock.t = float(step)
        seeks += guard.refetches()
        if not seeks[-1].given_up:
            assert guard.admit("t-0", 13, 10) is Verdict.SKIP
    assert [(r.offset, r.given_up) for r in seeks] == [(11, False)] * 3 + [(13, True)]
    assert seeks[-1].missing == 2
    assert [guard.admit("t-0", o, 10) for o in (13, 14)] == [Verdict.PROCESS] * 2


def test_partitions_are_independent_and_reset_forgets() -> None:
    guard = OffsetGuard()
    guard.admit("t-0", 10, 10)
    guard.admit("t-0", 12, 10)
    assert guard.admit("t-1", 3, 3) is Verdict.PROCESS
    guard.reset()
    assert guard.lost == {} and guard.admit("t-0", 10, 10) is Verdict.PROCESS


def test_a_fetched_tail_that_never_arrives_is_fetched_again_after_stall_s() -> None:
    clock = Clock()
    guard = OffsetGuard(stall_s=20.0, clock=clock)
    guard.admit("t-1", 13, 13)
    assert guard.stalled("t-1", 82, 13) is None  # first sight: maybe it is still on its way
    clock.t = 19.0
    assert guard.stalled("t-1", 82, 13) is None
    clock.t = 21.0
    assert guard.stalled("t-1", 82, 13) == 14
    assert guard.stalled("t-1", 82, 13) is None  # the seek gets its own stall_s
    for o in range(14, 20):  # the re-fetch delivers
        guard.admit("t-1", o, 13)
    clock.t = 30.0
    assert guard.stalled("t-1", 82, 13) is None


def test_a_tail_without_messages_is_accepted_after_one_refetch() -> None:
    clock = Clock()
    guard = OffsetGuard(stall_s=20.0, clock=clock)
    guard.admit("t-0", 99, 99)  # the last message; offset 100 is a transaction marker
    assert guard.stalled("t-0", 101, 99) is None
    clock.t = 21.0
    assert guard.stalled("t-0", 101, 99) == 100
    clock.t = 42.0
    assert guard.stalled("t-0", 101, 99) is None  # nothing came after the seek: accepted
    assert guard.next["t-0"] == 101 and guard.admit("t-0", 101, 99) is Verdict.PROCESS


def test_progress_or_a_caught_up_position_is_not_a_stall() -> None:
    clock = Clock()
    guard = OffsetGuard(stall_s=20.0, clock=clock)
    guard.admit("t-0", 0, 0)
    assert guard.stalled("t-0", 50, 0) is None
    clock.t = 15.0
    for o in range(1, 10):
        guard.admit("t-0", o, 0)
    clock.t = 30.0
    assert guard.stalled("t-0", 50, 0) is None  # it moved: the clock starts again
    assert guard.stalled("t-0", 10, 0) is None  # everything fetched was processed
    assert guard.stalled("t-3", 50, None) is None  # nothing known about this partition yet


def test_commits_stop_at_the_next_message_the_handler_must_see() -> None:
    clock = Clock()
    guard = OffsetGuard(clock=clock)
    assert guard.committable("t-0", 40) is None  # nothing handled since the assignment
    for o in (31, 32):
        guard.admit("t-0", o, 31)
    assert guard.committable("t-0", 33) == 33
    assert guard.admit("t-0", 34, 31) is Verdict.LOST  # 33 lost on the way; 34-37 skipped until it comes
    for o in (35, 36, 37):
        guard.admit("t-0", o, 31)
    assert guard.committable("t-0", 38) == 33  # whatever Faust counts as done past the loss
    clock.t = 3.0
    assert [r.offset for r in guard.refetches()] == [33]
    for o in range(33, 38):
        guard.admit("t-0", o, 31)
    assert guard.committable("t-0", 38) == 38
    assert guard.committable("t-0", 36) == 36  # and never past what Faust itself proposes


# What a consumer may do to a partition's messages between a seek and the next: deliver one, lose one on
# the way, deliver one a second time, or be sought back to the guard's missing offset (the refetch).
STEP = st.sampled_from(["deliver", "deliver", "deliver", "lose", "again", "seek"])


@given(start=st.integers(0, 50), steps=st.lists(STEP, max_size=60))
def test_generated_deliveries_never_commit_past_an_unhandled_message(start: int, steps: list[str]) -> None:
    clock = Clock()
    guard = OffsetGuard(refetch_every_s=1.0, max_refetch=10**6, clock=clock)
    handled: list[int] = []
    position = start  # the consumer's next fetch

    def check() -> None:
        assert len(handled) == len(set(handled))  # once per assignment
        assert handled == list(range(start, start + len(handled)))  # in offset order, from the start
        capped = guard.committable("t-0", position + 100)  # whatever Faust proposes
        assert capped is None or capped <= start + len(handled)  # never past an unhandled message

    for step in steps:
        if step == "lose":
            position += 1
        elif step == "again" and position > start:
            if guard.admit("t-0", position - 1, start) is Verdict.PROCESS:
                handled.append(position - 1)
        elif step == "seek":
            clock.t += 1.0
            for r in guard.refetches():
                position = r.offset
        else:
            if guard.admit("t-0", position, start) is Verdict.PROCESS:
                handled.append(position)
            position += 1
        check()
    end = position + 1
    for _ in range(3):  # then the consumer fetches the rest of the log as it is, refetching as asked
        while position < end:
            if guard.admit("t-0", position, start) is Verdict.PROCESS:
                handled.append(position)
            position += 1
            check()
        clock.t += 1.0
        for r in guard.refetches():
            position = r.offset
    assert handled == list(range(start, end))  # nothing lost for good
    assert guard.committable("t-0", end) == end
