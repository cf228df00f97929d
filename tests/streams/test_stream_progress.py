"""The host stage's progress messages: at most one per interval per telemetry partition, and only to the
observations partitions its observations did not reach since the last one (an observation is a mark)."""

from __future__ import annotations

from streams.host_agent import PROGRESS_INTERVAL_S, Progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_goes_only_where_no_observation_went_since_the_last() -> None:
    clock = Clock()
    progress = Progress(4, clock)
    progress.feed(0, 2)
    assert progress.due(0, 10.0) == [0, 1, 3]  # the first is due at once; partition 2 had an observation
    progress.feed(0, 1)
    assert progress.due(0, 11.0) == []  # within the interval: nothing
    clock.t += PROGRESS_INTERVAL_S
    assert progress.due(0, 11.0) == [0, 2, 3]  # observations since the last progress: only partition 1
    clock.t += PROGRESS_INTERVAL_S
    assert progress.due(0, 11.0) == []  # no newer event time: nothing to say
    assert progress.due(0, 12.0) == [0, 1, 2, 3]
    progress.feed(5, 0)  # partitions are independent
    clock.t += PROGRESS_INTERVAL_S
    assert progress.due(5, 1.0) == [1, 2, 3] and progress.due(0, 13.0) == [0, 1, 2, 3]


def test_a_partition_whose_observations_reach_every_cohort_partition_sends_no_progress() -> None:
    clock = Clock()
    progress = Progress(3, clock)
    for step in range(5):
        for q in range(3):
            progress.feed(7, q)
        assert progress.due(7, 100.0 + step) == []
        clock.t += PROGRESS_INTERVAL_S
