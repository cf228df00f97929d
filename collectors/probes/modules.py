"""Loaded kernel modules from /proc/modules (absent in containers: then the inventory is empty)."""

from __future__ import annotations

from pathlib import Path

from collectors.probes.base import Emit, Probe, diff_maps
from collectors.safe import read_text
from contract.events import Kind


def parse_modules(text: str) -> dict[str, str]:
    return {line.split()[0]: "loaded" for line in text.splitlines() if line.strip()}


class ModuleProbe(Probe):
    name = "modules"

    def __init__(self, interval: float = 30.0, inventory_interval: float | None = 3600.0,
                 proc: Path = Path("/proc")) -> None:
        super().__init__(interval, inventory_interval)
        self.proc = proc
        self.items: dict[str, str] = {}
        self._started = False

    def collect(self, full: bool) -> list[Emit]:
        text = read_text(self.proc / "modules")
        items = parse_modules(text) if text is not None else {}
        out = diff_maps(Kind.MODULE_CHANGE, self.items, items) if self._started else []
        self.items, self._started = items, True
        if full:
            out.append((Kind.MODULE_INVENTORY, {"items": dict(sorted(items.items())),
                                                "available": text is not None}))
        return out
