"""Observable component events, vector-style: each is declared once, and `emit` both counts it (a
Prometheus counter) and logs it, so logs and metrics can never disagree.

Each package lists its own signals in its `signals.py`; this module holds only the mechanism.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, start_http_server

log = logging.getLogger("herdwatch")


@dataclass
class Signal:
    """One observable event, e.g. `events_dead_lettered`, counted as herdwatch_<name>_total."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    level: int = logging.DEBUG
    registry: CollectorRegistry = field(default=REGISTRY, repr=False)

    def __post_init__(self) -> None:
        self._counter = Counter(f"herdwatch_{self.name}", self.help, list(self.labels), registry=self.registry)

    def emit(self, count: int = 1, /, **labels: Any) -> None:
        if count <= 0:
            return
        (self._counter.labels(**labels) if self.labels else self._counter).inc(count)
        if log.isEnabledFor(self.level):
            detail = " ".join(f"{k}={v}" for k, v in labels.items())
            log.log(self.level, "%s count=%d %s", self.name, count, detail)

    def value(self, **labels: Any) -> float:
        """Current count (for tests and status output)."""
        counter = self._counter.labels(**labels) if self.labels else self._counter
        return float(counter._value.get())


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose every registered counter and gauge at http://addr:port/metrics (port 0 disables)."""
    if port:
        start_http_server(port, addr=addr)
        log.info("prometheus metrics on http://%s:%d/metrics", addr, port)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
