"""The simulator's observable events, declared once (counted and logged)."""

from __future__ import annotations

import logging

from contract.observability import Signal

batch_delivery_failed = Signal(
    "simulator_delivery_failures", "simulated batches Kafka did not acknowledge", level=logging.WARNING
)
behind_schedule = Signal(
    "simulator_behind_schedule", "cycles generated later than --speed asked for", level=logging.DEBUG
)
