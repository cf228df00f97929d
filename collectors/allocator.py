"""The C allocator's share of the agent's memory (glibc malloc; elsewhere these are no-ops).

glibc gives each thread that allocates its own arena (up to 8 per core), and a mostly idle agent with a dozen
threads (probe workers, the exec-event reader, the Kafka client's) keeps pages in each. Limiting the arenas
to two, before any thread starts, saves ~1.3 MB of the agent's ~52 MB here; its threads rarely allocate at
the same moment, so they seldom wait for an arena. `trim()` hands freed heap pages back to the kernel after
the first cycle's inventories, which allocate and free a few MB once (the package list, the process table),
after the topic check's Kafka admin client is gone, and at every heartbeat (~30 us each).
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, the C library's among them
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(count: int) -> bool:
    """At most `count` malloc arenas from now on (0: leave the allocator's default). True when applied."""
    libc = _libc()
    if count <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> None:
    """Give the kernel back the free pages of the C heap (it grows again as needed)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
