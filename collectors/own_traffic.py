"""The agent's own traffic to Kafka, so the host's network counters can leave it out.

The metrics probe reads the host's interface counters, which include every byte the agent itself sends to
Kafka and receives back. That share is not the host's behaviour, and it changes with the agent's state
rather than the host's: an agent that has just restarted sends its inventories, one replaying its spool
sends a burst, and one its self-limit slowed (collectors/budget.py) sends a fraction of its usual reports.
Clones whose agents are in different states then differ in `net_bytes_out` with nothing else different
(seen in the lab: a restarted agent at its normal rate beside clones whose agents had backed off under the
machine's load looked like a host sending twice its clones' traffic).

librdkafka counts what it sends and receives (its statistics: `tx_bytes`, `rx_bytes`, requests `tx`,
responses `rx`, per client instance since it was created). `KafkaTraffic` takes them from the producer's
statistics callback and keeps running totals across producer instances (the delivery makes a new one after
some failures), which the metrics probe reports as `agent_net_*` beside the interface counters; the host
stage subtracts them (detectors/host_state.py). The bytes are Kafka protocol bytes: TCP/IP headers and
pure ACKs stay in the host's figures, a small share. Every statistics document is hostile input like any
other bytes: one that does not parse, or carries no numbers, changes nothing.
"""

from __future__ import annotations

import threading

import orjson

STATS_INTERVAL_MS = 5000
"""How often librdkafka hands over its statistics (served by the agent's regular producer polls)."""

FIELDS = {"tx_bytes": "agent_net_bytes_out", "rx_bytes": "agent_net_bytes_in",
          "tx": "agent_net_requests_out", "rx": "agent_net_responses_in"}
"""librdkafka's top-level statistics field -> the counter reported in the host's metrics."""


class KafkaTraffic:
    """Running totals of the agent's own Kafka traffic over every producer instance it made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(FIELDS.values(), 0.0)
        self._last: dict[str, dict[str, float]] = {}
        """client instance name -> its latest cumulative figures."""

    def on_stats(self, document: str | bytes) -> None:
        """librdkafka's statistics callback (`stats_cb`)."""
        try:
            stats = orjson.loads(document)
        except orjson.JSONDecodeError:
            return
        if not isinstance(stats, dict):
            return
        name = str(stats.get("name", ""))[:64]
        with self._lock:
            last = self._last.setdefault(name, {})
            for field, counter in FIELDS.items():
                value = stats.get(field)
                if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 2**63:
                    continue
                before = last.get(field, 0.0)
                # cumulative per instance; a figure lower than before starts again from zero
                self._totals[counter] += value - before if value >= before else value
                last[field] = float(value)
            if len(self._last) > 16:  # instances come and go: keep the newest ones only
                for old in list(self._last)[:-16]:
                    del self._last[old]

    def totals(self) -> dict[str, float]:
        with self._lock:
            return dict(self._totals)
