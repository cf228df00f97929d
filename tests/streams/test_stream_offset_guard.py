"""OffsetGuard: each source message reaches the handler once per assignment, in order; losses are re-fetched."""

from __future__ import annotations

from streams.offset_guard import OffsetGuard, Verdict


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_in_order_messages_are_processed_from_the_committed_offset() -> None:
    guard = OffsetGuard()
    assert [guard.admit("t-0", o, 13)[0] for o in (13, 14, 15)] == [Verdict.PROCESS] * 3
    assert guard.next["t-0"] == 16


def test_a_jump_is_a_loss_and_asks_for_the_missing_offset_until_it_comes() -> None:
    guard = OffsetGuard()
    guard.admit("t-0", 32, 32)
    assert guard.admit("t-0", 34, 32) == (Verdict.REWIND, 33)  # 33 never arrived: seek back, report it
    assert guard.admit("t-0", 35, 32) == (Verdict.RESEEK, 33)  # fetched before the seek: seek again, quietly
    # after the seek: 33 comes, then 34 and 35 again
    assert [guard.admit("t-0", o, 32)[0] for o in (33, 34, 35)] == [Verdict.PROCESS] * 3
    assert guard.admit("t-0", 37, 32) == (Verdict.REWIND, 36)  # a later loss is reported again


def test_second_deliveries_are_skipped() -> None:
    guard = OffsetGuard()
    for o in (5, 6, 7):
        guard.admit("t-0", o, 5)
    assert guard.admit("t-0", 6, 5) == (Verdict.SKIP, 8)
    assert guard.admit("t-0", 8, 5)[0] is Verdict.PROCESS


def test_a_first_message_past_the_committed_offset_is_a_loss() -> None:
    guard = OffsetGuard()
    assert guard.admit("t-1", 20, 13) == (Verdict.REWIND, 13)


def test_without_a_committed_offset_the_first_message_sets_the_start() -> None:
    guard = OffsetGuard()
    assert guard.admit("t-2", 40, None)[0] is Verdict.PROCESS
    assert guard.admit("t-2", 42, None) == (Verdict.REWIND, 41)


def test_partitions_are_independent_and_reset_forgets() -> None:
    guard = OffsetGuard()
    guard.admit("t-0", 10, 10)
    assert guard.admit("t-1", 3, 3)[0] is Verdict.PROCESS
    guard.reset()
    assert guard.admit("t-0", 10, 10)[0] is Verdict.PROCESS  # a new assignment starts again


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
    assert guard.next["t-0"] == 101 and guard.admit("t-0", 101, 99)[0] is Verdict.PROCESS


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


def test_a_gap_the_log_really_has_is_accepted_after_max_refetch_seeks() -> None:
    guard = OffsetGuard(max_refetch=3)
    guard.admit("t-0", 10, 10)
    verdicts = [guard.admit("t-0", 13, 10)[0] for _ in range(4)]  # 11-12 do not exist: 13 comes every time
    assert verdicts == [Verdict.REWIND, Verdict.RESEEK, Verdict.RESEEK, Verdict.ACCEPT_GAP]
    assert [guard.admit("t-0", o, 10)[0] for o in (14, 15)] == [Verdict.PROCESS] * 2
