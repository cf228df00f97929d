NativeRow = tuple[int, float, str | None, bytes | None, int | None, int | None, str | None, bytes | None]
"""What the C reader read of one exec: pid, time, exe, argv (up to 16,385 bytes: more than 16,384 means
cut), real uid, ppid, the parent's exe and the raw cgroup line; None where it could not be read."""

def read_batch(fd: int, wait_ms: int, hold_ms: int, budget: int, max_records: int, /) -> tuple[
    list[NativeRow], int, int, int, int]: ...
