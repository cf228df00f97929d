"""The cohort stage's table changes: applied in memory at once, their changelog records written per commit.

Faust writes a changelog record for every table assignment, each through its producer buffer, aiokafka's
batch builder and lz4. The cohort stage rewrites the same keys message after message (a member's
`last_seen` at every report, the host's latest metrics, the family's feature counters), and that per-record
work cost more than the detectors' own for those changes. `DeferredTable` applies a change to the table's
in-memory data at once (every later read sees it) and keeps only the key's latest value, or its deletion,
in `TableWrites`; `TableWrites.send` writes one record per changed key.

It is sent before every offset commit, before partitions are given up and before the worker stops
(`faust_fixes.flush_before_commit`: Faust flushes the producer first, and `ChangelogBuffer.flush` waits
for the broker's acknowledgement of every record), and whenever more than MAX_PENDING keys wait. So
offsets are still committed only after every table change of the committed messages is acknowledged.
A worker killed before a commit recovers the tables as of an earlier commit and replays the messages
after it, which is what its committed offsets say; before, the tables it recovered could already hold the
effect of messages it then replayed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

MAX_PENDING = 20_000
"""Changed keys kept at most before their records are written (bounds the burst at a commit)."""

_DELETED = object()


class TableWrites:
    """Changelog records waiting to be written: each (table, key)'s latest value or deletion."""

    def __init__(self) -> None:
        self.pending: dict[tuple[int, str], tuple[Any, int, Any]] = {}
        """(table id, key) -> (table, changelog partition, latest value or _DELETED)."""
        self.partition = 0
        """The changelog partition of the changes made now: the partition of the message being handled."""

    def __len__(self) -> int:
        return len(self.pending)

    def set(self, table: Any, key: str, value: Any) -> None:
        table.data[key] = value
        self.pending[(id(table), key)] = (table, self.partition, value)

    def delete(self, table: Any, key: str) -> None:
        del table.data[key]
        self.pending[(id(table), key)] = (table, self.partition, _DELETED)

    def send(self) -> None:
        """Hand every pending record to the table's changelog (Faust's producer buffer), oldest change first."""
        pending, self.pending = self.pending, {}
        for (_, key), (table, partition, value) in pending.items():
            if value is _DELETED:
                table.send_changelog(partition, key, None, value_serializer="raw")
            else:
                table.send_changelog(partition, key, value)

    async def flush(self) -> None:
        self.send()


class DeferredTable(MutableMapping[str, Any]):
    """A Faust table read and changed through its in-memory data, its changelog records kept in `writes`."""

    def __init__(self, table: Any, writes: TableWrites) -> None:
        self.table = table
        self.writes = writes

    @property
    def data(self) -> Any:
        """The table's in-memory store (looked up when used: Faust creates it as the app starts)."""
        return self.table.data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.set(self.table, key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.delete(self.table, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def deferred(table: MutableMapping[str, Any], writes: TableWrites) -> MutableMapping[str, Any]:
    """`table` with deferred changelog records; a plain mapping (no changelog: tests) as it is."""
    return DeferredTable(table, writes) if hasattr(table, "send_changelog") else table
