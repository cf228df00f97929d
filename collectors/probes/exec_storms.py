"""Exec storms: a build or a shell loop can exec thousands of times a second. Identical execs (same exe,
parent exe, user and command line with its digits, hex runs and uuids normalised) are reported once when
a kind is new, then as one counted process.start (`count` N) per window while it keeps going.

`ExecAggregator` is pure bookkeeping (no I/O, the caller's clock): `add` says what to do with one exec,
`due` hands back the windows that closed with execs in them. Sums hold: the execs reported one by one plus
the `count`s of the counted reports equal the execs added (minus those shed, which are counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")

_VOLATILE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                       r"|\b[0-9a-fA-F]{8,}\b|\d+")
MAX_KEY_CMDLINE = 512


def normalise(cmdline: str) -> str:
    """A command line with its volatile parts (uuids, hex runs, numbers) as `#`, for grouping only."""
    return _VOLATILE.sub("#", cmdline[:MAX_KEY_CMDLINE])


class Verdict(Enum):
    REPORT = "report"
    """A new kind: report this exec now, on its own."""
    COUNTED = "counted"
    """Counted in its kind's window: reported with the window (`due`)."""
    SHED = "shed"
    """Too many kinds at once: not reported, counted as shed by the caller."""


@dataclass
class _Window(Generic[T]):
    ends: float
    count: int
    sample: T | None


class ExecAggregator(Generic[T]):
    """Windows of identical execs (see the module doc). `T` is whatever the caller reports (a record)."""

    def __init__(self, window_s: float = 10.0, max_kinds: int = 10000) -> None:
        self.window_s = float(window_s)
        self.max_kinds = max_kinds
        self._windows: dict[tuple[str, ...], _Window[T]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, key: tuple[str, ...], item: T, now: float, may_report: bool = True) -> Verdict:
        """One exec of kind `key`. A new kind is reported at once when `may_report` (the caller's per-cycle
        cap allows it), else counted in a window of its own."""
        w = self._windows.get(key)
        if w is not None:
            w.count += 1
            w.sample = item
            return Verdict.COUNTED
        if len(self._windows) >= self.max_kinds:
            return Verdict.SHED
        if may_report:
            self._windows[key] = _Window(now + self.window_s, 0, None)
            return Verdict.REPORT
        self._windows[key] = _Window(now + self.window_s, 1, item)
        return Verdict.COUNTED

    def due(self, now: float, limit: int | None = None) -> list[tuple[T, int]]:
        """(latest exec, count) of every window that ended with execs in it, at most `limit` of them (the
        rest stay due). A window that ended quietly is closed, so the kind's next exec is new again; one
        that had execs starts a new window."""
        out: list[tuple[T, int]] = []
        for key in [k for k, w in self._windows.items() if w.ends <= now]:
            w = self._windows[key]
            if w.count == 0 or w.sample is None:
                del self._windows[key]
                continue
            if limit is not None and len(out) >= limit:
                continue
            out.append((w.sample, w.count))
            self._windows[key] = _Window(now + self.window_s, 0, None)
        return out

    def flush(self) -> list[tuple[T, int]]:
        """Every window's pending execs, now (the agent is stopping)."""
        out = [(w.sample, w.count) for w in self._windows.values() if w.count and w.sample is not None]
        self._windows = {}
        return out
