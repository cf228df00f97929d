"""The on-disk spool: every batch is appended here first and sent from here, so nothing buffered is
lost when Kafka is down, the agent restarts or the host reboots.

Layout: <state>/spool/<number>.seg segment files of records, plus cursor.json (the first record not yet
acknowledged by Kafka). A record is a 22-byte header (magic, length, crc32, first seq, event count) and
the Kafka message value. A torn write at the tail (crash mid-append) is cut off on open; a record that
fails its checksum elsewhere is skipped with the rest of its segment and counted.

fsync policy (setting spool_fsync):
- "always" (default): fdatasync after every append, i.e. once per collection cycle that produced events
  (at most about once a second). A power loss loses nothing that was appended.
- "interval": fdatasync at most every spool_fsync_interval_s; a power loss can lose that much.
- "never": leave it to the kernel (about 30 s of data at risk on power loss, none on a process crash).

Bound: when the segments exceed spool_max_bytes, the oldest segment is deleted and its unsent events
are counted as dropped (reported by the agent in its next heartbeat/hello, never silently).

Files: the spool directory is 0700 and segments 0600 whatever the umask; segments are opened
O_NOFOLLOW, so a symlink planted at a segment path is never written or read through (on open it is
removed, the link only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from collectors import signals
from collectors.safe import ensure_private_dir, open_for_reading, open_private, remove_if_not_regular
from collectors.state import read_json, write_json

log = logging.getLogger("herdwatch.collector")

HEADER = struct.Struct("<2sIIQI")
MAGIC = b"HW"


@dataclass(frozen=True, slots=True)
class Record:
    seg: int
    offset: int
    end: int
    first_seq: int
    count: int
    value: bytes


def _crc(value: bytes, first_seq: int, count: int) -> int:
    return zlib.crc32(struct.pack("<QI", first_seq, count) + value)


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = 4 * 1024 * 1024,
                 fsync: str = "always", fsync_interval_s: float = 1.0) -> None:
        self.dir = directory
        ensure_private_dir(self.dir)
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4 or 4096))
        self.fsync = fsync
        self.fsync_interval = fsync_interval_s
        self._last_sync = time.monotonic()
        self._dirty = False
        self.dropped = 0
        """Events deleted unsent because of the size bound (cumulative in this process)."""
        self.last_seq: int | None = None
        self.seg_events: dict[int, int] = {}
        self._evicted: set[int] = set()
        self.seg_bytes: dict[int, int] = {}
        cursor = read_json(self.dir / "cursor.json") or {}
        self.cursor: tuple[int, int] = (int(cursor.get("seg", 0)), int(cursor.get("offset", 0)))
        self._acked_in_cursor_seg = 0
        self._scan()
        self.read_pos = self.cursor
        self._reader: tuple[int, object] | None = None
        self._writer: BinaryIO | None = None
        self.write_seg = max(self.seg_bytes) if self.seg_bytes else max(self.cursor[0], 1)

    # -- opening ---------------------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}.seg"

    def _read(self, seg: int) -> bytes:
        with open_for_reading(self._path(seg)) as f:
            return f.read()

    def _scan(self) -> None:
        segs = sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())
        for seg in segs:
            if seg < self.cursor[0]:
                self._path(seg).unlink(missing_ok=True)  # fully acknowledged before a crash
                continue
            if remove_if_not_regular(self._path(seg)):  # a planted link: removed, its target untouched
                signals.spool_corrupt.emit()
                log.warning("spool segment %s was not a regular file; removed", self._path(seg))
                continue
            data = self._read(seg)
            pos, events, acked = 0, 0, 0
            while pos + HEADER.size <= len(data):
                magic, length, crc, first, count = HEADER.unpack_from(data, pos)
                end = pos + HEADER.size + length
                body = data[pos + HEADER.size:end]
                if magic != MAGIC or end > len(data) or _crc(body, first, count) != crc:
                    break
                events += count
                if seg == self.cursor[0] and end <= self.cursor[1]:
                    acked += count
                self.last_seq = max(self.last_seq or 0, first + count - 1)
                pos = end
            if pos < len(data):  # torn or damaged tail: keep the good prefix
                signals.spool_corrupt.emit()
                with open_private(self._path(seg), "r+b") as f:
                    f.truncate(pos)
            self.seg_events[seg], self.seg_bytes[seg] = events, pos
            if seg == self.cursor[0]:
                self._acked_in_cursor_seg = acked
        if self.seg_bytes and self.cursor[0] not in self.seg_bytes:
            self.cursor = (min(self.seg_bytes), 0)
            self._acked_in_cursor_seg = 0

    # -- writing ---------------------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        return sum(self.seg_bytes.values())

    @property
    def pending_events(self) -> int:
        return sum(self.seg_events.values()) - self._acked_in_cursor_seg

    def append(self, value: bytes, first_seq: int, count: int) -> None:
        """Append one record; raises OSError (e.g. ENOSPC) if it could not be written."""
        if self.seg_bytes.get(self.write_seg, 0) >= self.segment_bytes:
            self._rotate()
        record = HEADER.pack(MAGIC, len(value), _crc(value, first_seq, count), first_seq, count) + value
        if self._writer is None:
            self._writer = open_private(self._path(self.write_seg), "ab")  # 0600, never through a link
        size = self.seg_bytes.get(self.write_seg, 0)
        try:
            self._writer.write(record)
            self._writer.flush()
        except OSError:
            writer, self._writer = self._writer, None
            with contextlib.suppress(OSError):
                writer.close()
            with contextlib.suppress(OSError), open_private(self._path(self.write_seg), "r+b") as f:
                f.truncate(size)  # drop a partial record
            raise
        self.seg_bytes[self.write_seg] = size + len(record)
        self.seg_events[self.write_seg] = self.seg_events.get(self.write_seg, 0) + count
        self.last_seq = max(self.last_seq or 0, first_seq + count - 1)
        self._dirty = True
        if self.fsync == "always" or (self.fsync == "interval"
                                      and time.monotonic() - self._last_sync >= self.fsync_interval):
            self.sync()
        self._enforce_bound()

    def sync(self) -> None:
        if self._writer is not None and self._dirty:
            os.fdatasync(self._writer.fileno())
            self._last_sync = time.monotonic()
            self._dirty = False

    def _rotate(self) -> None:
        if self._writer is not None:
            if self.fsync != "never":
                self._dirty = True
                self.sync()
            self._writer.close()
            self._writer = None
        self.write_seg += 1
        self.seg_bytes.setdefault(self.write_seg, 0)
        self.seg_events.setdefault(self.write_seg, 0)

    def _enforce_bound(self) -> None:
        while self.total_bytes > self.max_bytes and len(self.seg_bytes) > 1:
            oldest = min(self.seg_bytes)
            if oldest == self.write_seg:
                self._rotate()
                continue
            lost = self.seg_events.get(oldest, 0)
            if oldest == self.cursor[0]:
                lost -= self._acked_in_cursor_seg
            if self.read_pos[0] == oldest:
                # records already handed to Kafka are still in flight; only the rest is lost here
                lost = self._unread_events(oldest)
            elif self.read_pos[0] > oldest:
                lost = 0
            self._delete(oldest)
            self._evicted.add(oldest)
            nxt = min(self.seg_bytes)
            if self.cursor[0] <= oldest:
                self.cursor, self._acked_in_cursor_seg = (nxt, 0), 0
                self._save_cursor()
            if self.read_pos[0] <= oldest:
                self.read_pos = (nxt, 0)
            if lost:
                self.dropped += lost
                signals.events_dropped.emit(lost, reason="spool_full")

    def evicted(self, record: Record) -> bool:
        """True if `record` was handed out but its segment has since been deleted by the size bound."""
        return record.seg in self._evicted

    def count_lost(self, count: int) -> None:
        """Evicted records that were in flight and then failed: they are lost too."""
        self.dropped += count
        signals.events_dropped.emit(count, reason="spool_full")

    def _unread_events(self, seg: int) -> int:
        data = self._read(seg)
        pos, events = self.read_pos[1], 0
        while pos + HEADER.size <= len(data):
            _, length, _, _, count = HEADER.unpack_from(data, pos)
            events += count
            pos += HEADER.size + length
        return events

    def _delete(self, seg: int) -> None:
        if self._reader is not None and self._reader[0] == seg:
            self._reader[1].close()  # type: ignore[attr-defined]
            self._reader = None
        self._path(seg).unlink(missing_ok=True)
        self.seg_bytes.pop(seg, None)
        self.seg_events.pop(seg, None)

    # -- reading and acknowledging ---------------------------------------------------------------
    def next_record(self) -> Record | None:
        """The next record after the read position (not yet handed out), or None."""
        while True:
            seg, offset = self.read_pos
            if seg not in self.seg_bytes:
                later = [s for s in self.seg_bytes if s > seg]
                if not later:
                    return None
                self.read_pos = (min(later), 0)
                continue
            if offset >= self.seg_bytes[seg]:
                later = [s for s in self.seg_bytes if s > seg]
                if not later:
                    return None
                self.read_pos = (min(later), 0)
                continue
            if self._reader is None or self._reader[0] != seg:
                if self._reader is not None:
                    self._reader[1].close()  # type: ignore[attr-defined]
                self._reader = (seg, open_for_reading(self._path(seg)))  # kept open; never a link
            f = self._reader[1]
            f.seek(offset)  # type: ignore[attr-defined]
            head = f.read(HEADER.size)  # type: ignore[attr-defined]
            empty = (b"", 0, 0, 0, 0)
            magic, length, crc, first, count = HEADER.unpack(head) if len(head) == HEADER.size else empty
            value = f.read(length) if magic == MAGIC else b""  # type: ignore[attr-defined]
            if magic != MAGIC or len(value) != length or _crc(value, first, count) != crc:
                signals.spool_corrupt.emit()
                self.read_pos = (seg, self.seg_bytes[seg])  # skip the damaged rest of this segment
                continue
            end = offset + HEADER.size + length
            self.read_pos = (seg, end)
            return Record(seg, offset, end, first, count, value)

    def ack(self, record: Record) -> None:
        """Kafka acknowledged `record` (acks arrive in record order)."""
        if (record.seg, record.end) <= self.cursor:
            return
        if record.seg != self.cursor[0]:
            self._acked_in_cursor_seg = 0
            for seg in [s for s in self.seg_bytes if s < record.seg]:
                self._delete(seg)
        self.cursor = (record.seg, record.end)
        self._acked_in_cursor_seg += record.count
        if record.end >= self.seg_bytes.get(record.seg, 0) and record.seg != self.write_seg:
            self._delete(record.seg)
            later = [s for s in self.seg_bytes if s > record.seg]
            self.cursor, self._acked_in_cursor_seg = ((min(later), 0) if later else self.cursor), 0

    def save_cursor(self) -> None:
        self._save_cursor()

    def _save_cursor(self) -> None:
        # disk full: on restart the unsaved acks are re-sent (duplicates, never loss)
        with contextlib.suppress(OSError):
            write_json(self.dir / "cursor.json", {"seg": self.cursor[0], "offset": self.cursor[1]})

    def rewind(self) -> None:
        """Re-send everything not yet acknowledged (after a delivery failure)."""
        self.read_pos = self.cursor

    def close(self) -> None:
        self.sync()
        self._save_cursor()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader[1].close()  # type: ignore[attr-defined]
            self._reader = None
