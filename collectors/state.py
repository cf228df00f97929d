"""Small durable state files under the state dir: JSON written atomically, and the sequence counter.

Files are created 0600 in 0700 directories whatever the umask; a symlink planted at a state path is
never written through (the temp file is opened O_NOFOLLOW|O_EXCL, the rename replaces the link itself)
nor read through.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from collectors.safe import create_private, ensure_private_dir, read_bounded

MAX_STATE_BYTES = 16 * 1024 * 1024


def write_json(path: Path, obj: Any, fsync: bool = False) -> None:
    """Write atomically (temp file + rename), so a crash leaves the old or the new content."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a crash, or something planted: removed, never written through
    with os.fdopen(create_private(tmp, os.O_EXCL), "wb") as f:
        f.write(orjson.dumps(obj))
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The stored object, or None if the file is missing or damaged."""
    try:
        got = read_bounded(path, MAX_STATE_BYTES)
        return None if got is None or got[1] else orjson.loads(got[0])
    except orjson.JSONDecodeError:
        return None


class SeqCounter:
    """The per-host sequence number, persisted so it continues across agent restarts.

    `take(n)` hands out n consecutive numbers and records the next one. The spool also holds the seq of
    every record, and the agent resumes from max(this file, spool tail + 1) after a crash.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        stored = read_json(path)
        self.next = int(stored.get("next", 0)) if isinstance(stored, dict) else 0

    def resume_after(self, last_seq: int | None) -> None:
        if last_seq is not None and last_seq + 1 > self.next:
            self.next = last_seq + 1

    def take(self, n: int) -> int:
        first = self.next
        self.next += n
        return first

    def save(self, fsync: bool = False) -> None:
        with contextlib.suppress(OSError):  # disk full: the spool tail still carries the latest seq
            write_json(self.path, {"next": self.next}, fsync=fsync)
