"""Reading a live system safely: processes vanish, /proc entries are unreadable, bytes are not UTF-8.

`absent(fn)` is the one wrapper around psutil calls: NoSuchProcess, ZombieProcess, AccessDenied and
their OS equivalents become None ("absent"), never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")

ABSENT_ERRORS: tuple[type[BaseException], ...] = (
    psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied,
    FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError,
)


def absent(fn: Callable[[], T]) -> T | None:
    """Call fn; a vanished or unreadable process/file gives None."""
    try:
        return fn()
    except ABSENT_ERRORS:
        return None
    except OSError:  # e.g. ESRCH, EIO reading /proc of an exiting process
        return None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


def to_text(value: bytes | str) -> tuple[str, bool]:
    """Valid UTF-8 text from bytes or a surrogate-escaped str; True when bytes had to be replaced."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def clean(value: bytes | str, limit: int) -> tuple[str, bool, bool]:
    """Printable single-line text: (text, truncated, invalid_utf8). Control characters become spaces."""
    text, invalid = to_text(value)
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(text) > limit:
        return text[:limit], True, invalid
    return text, False, invalid


def read_bounded(path: Path | str, limit: int) -> tuple[bytes, bool] | None:
    """At most `limit` bytes of a file (True if there was more); None if absent or unreadable."""
    def read() -> tuple[bytes, bool]:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        return data[:limit], len(data) > limit
    return absent(read)


def read_text(path: Path | str, limit: int = 4_000_000) -> str | None:
    got = read_bounded(path, limit)
    return None if got is None else to_text(got[0])[0]
