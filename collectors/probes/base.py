"""What every probe is: a name, an interval and a collect step returning (kind, payload) pairs."""

from __future__ import annotations

from typing import Any

from contract.events import Kind

Emit = tuple[Kind, dict[str, Any]]


class Probe:
    """A small unit of collection. `collect(full)` returns new events; `full=True` asks for an inventory.

    Subclasses set `name` and take their intervals in the constructor. A probe never raises for bad
    input from the system (vanished processes, unreadable files): it leaves the item out.
    """

    name = "probe"

    def __init__(self, interval: float, inventory_interval: float | None = None) -> None:
        self.interval = interval
        self.inventory_interval = inventory_interval

    def collect(self, full: bool) -> list[Emit]:
        raise NotImplementedError


def diff_maps(kind: Kind, before: dict[str, str], after: dict[str, str]) -> list[Emit]:
    """One change event per key whose value differs (None = absent)."""
    out: list[Emit] = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old != new:
            out.append((kind, {"key": key, "before": old, "after": new}))
    return out
