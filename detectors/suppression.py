"""Duplicate suppression: the same finding (host + subject) is reported at most once per window."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from detectors.store_keys import SUPPRESSED


class Suppressor:
    """Remembers when each (host, subject) was last reported, in `store` under SUPPRESSED keys.

    `allow(host, subject, now)` is True (and records `now`) when the pair was not reported within
    `window_s` seconds of event time. `forget_host` drops a departed host's entries (bounded memory).
    """

    def __init__(self, store: MutableMapping[str, Any] | None = None, window_s: float = 3600.0) -> None:
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.window_s = float(window_s)
        self._by_host: dict[str, set[str]] = {}

    def load(self, key: str) -> None:
        """Index an existing store key (used when rebuilding caches)."""
        host, subject = SUPPRESSED.parse(key)
        self._by_host.setdefault(host, set()).add(subject)

    def allow(self, host: str, subject: str, now: float, window_s: float | None = None) -> bool:
        key = SUPPRESSED.key(host, subject)
        last = self.store.get(key)
        window = self.window_s if window_s is None else window_s
        if last is not None and now - float(last) < window:
            return False
        self.store[key] = now
        self._by_host.setdefault(host, set()).add(subject)
        return True

    def forget_host(self, host: str) -> None:
        for subject in self._by_host.pop(host, ()):
            self.store.pop(SUPPRESSED.key(host, subject), None)
