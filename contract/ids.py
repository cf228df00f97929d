"""Time-ordered unique event ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_event_id(unix_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit millisecond timestamp, then a 12-bit counter and 62 random bits.

    Ids from one process sort in creation order, even within the same millisecond.
    """
    global _last_ms, _counter
    with _lock:
        ms = unix_ms if unix_ms is not None else time.time_ns() // 1_000_000
        if unix_ms is None and ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = 0
        if unix_ms is None:
            _last_ms = ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def event_id_time_ms(event_id: str) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    return uuid.UUID(event_id).int >> 80
