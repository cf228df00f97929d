"""What the stages send out: findings, rollout events, lifecycle events and dead letters, each counted.

    anomalies   key host_id        Finding.to_dict()
    rollouts    key image_family   RolloutEvent.to_dict()
    lifecycle   key host_id        HostLifecycle.to_dict()
    deadletter  key topic:partition:offset of the source message; value the rejected bytes;
                headers reason, source (topic), component (e.g. streams.hosts)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import orjson

from contract.events import Rejected, dead_letter_message
from contract.findings import Finding, HostLifecycle, RolloutEvent
from contract.ocsf import detection_finding
from streams import codec, metrics, signals
from streams.topology import Topology

_REASON_LABEL = re.compile(r"[:'\"0-9]")


def reason_label(reason: str) -> str:
    """The metric label of a dead letter's reason: its leading words only (no values: bounded cardinality)."""
    return _REASON_LABEL.split(reason, maxsplit=1)[0].strip()[:40] or "other"


class Outputs:
    def __init__(self, topology: Topology) -> None:
        self.anomalies = topology.anomalies
        self.rollouts = topology.rollouts
        self.lifecycle = topology.lifecycle
        self.deadletter = topology.deadletter
        self.ocsf = topology.ocsf

    async def dead_letter(self, rejected: Rejected, event: Any, component: str) -> None:
        """Send what `component` rejected while handling the source message of `event` to the dead-letter topic."""
        msg = event.message
        signals.events_dead_lettered.emit(reason=reason_label(rejected.reason))
        value, headers = dead_letter_message(rejected, msg.topic, component)
        await self.deadletter.send(key=f"{msg.topic}:{msg.partition}:{msg.offset}".encode(), value=value,
                                   headers=headers)

    async def publish(self, items: Iterable[Finding | RolloutEvent]) -> None:
        now = time.time()
        for item in items:
            if isinstance(item, Finding):
                signals.findings.emit(kind=item.kind.value, severity=item.severity.value)
                metrics.event_delay_seconds.observe(max(0.0, now - item.time.timestamp()))
                await self.anomalies.send(key=item.host_id.encode(), value=codec.encode_output(item))
                if self.ocsf is not None:  # the same finding as an OCSF Detection Finding (docs/ocsf.md)
                    await self.ocsf.send(key=item.host_id.encode(),
                                         value=orjson.dumps(detection_finding(item.to_dict())))
            else:
                signals.rollout_events.emit(status=item.status.value)
                await self.rollouts.send(key=item.image_family.encode(), value=codec.encode_output(item))

    async def publish_lifecycle(self, items: Iterable[HostLifecycle]) -> None:
        for item in items:
            signals.lifecycle_events.emit(status=item.status, reason=item.reason.split(" ")[0])
            await self.lifecycle.send(key=item.host_id.encode(), value=orjson.dumps(item.to_dict()))
