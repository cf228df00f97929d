"""Every Kafka topic herdwatch uses, declared once: name, key, value format and layout.

Names are `<prefix>.<suffix>`; the prefix is the deployment name (HERDWATCH_DEPLOYMENT, formerly
HERDWATCH_KAFKA_TOPIC_PREFIX), which also names the deployment's consumer groups and the stream app (and so
its changelog topics), so tests and several deployments share one broker without touching.
Values are JSON (orjson) so any Kafka client can read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    key: str
    """What the message key holds (UTF-8)."""
    value: str
    """What the message value holds."""
    partitions: int = 8
    compacted: bool = False
    retention_ms: int | None = None


TELEMETRY = TopicSpec("telemetry", key="host_id", value="JSON array of event envelopes from one host")
OBSERVATIONS = TopicSpec("observations", key="image_family",
                         value="JSON host feature deltas, repartitioned so one worker owns a family")
ANOMALIES = TopicSpec("anomalies", key="host_id", value="JSON finding with a plain explanation")
ROLLOUTS = TopicSpec("rollouts", key="image_family", value="JSON rollout event (started/progress/...)")
LIFECYCLE = TopicSpec("lifecycle", key="host_id", value="JSON host lifecycle event (up/gone)")
DEADLETTER = TopicSpec("deadletter", key="source topic:partition:offset",
                       value="the original bytes; headers: reason, source, component", partitions=1)

ALL: tuple[TopicSpec, ...] = (TELEMETRY, OBSERVATIONS, ANOMALIES, ROLLOUTS, LIFECYCLE, DEADLETTER)

OCSF = TopicSpec("findings.ocsf", key="host_id",
                 value="the anomalies as OCSF Detection Finding events (class 2004; docs/ocsf.md)")
"""Optional: written only by workers with HERDWATCH_WORKER_OCSF=true, so not in ALL."""

OSQUERY = TopicSpec("osquery.results", key="anything (osquery's Kafka logger keys <hostname>_<logger>)",
                    value="one osquery result log line (JSON: differential, batch or snapshot; docs/osquery.md)")
"""Optional: read only by workers with HERDWATCH_WORKER_OSQUERY=true (osquery's --logger_kafka_topic), so not
in ALL."""


@dataclass(frozen=True)
class TopicNames:
    """Resolved topic names for one prefix."""

    prefix: str = "herdwatch"

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}.{spec.suffix}"

    @property
    def telemetry(self) -> str:
        return self.name(TELEMETRY)

    @property
    def observations(self) -> str:
        return self.name(OBSERVATIONS)

    @property
    def anomalies(self) -> str:
        return self.name(ANOMALIES)

    @property
    def rollouts(self) -> str:
        return self.name(ROLLOUTS)

    @property
    def lifecycle(self) -> str:
        return self.name(LIFECYCLE)

    @property
    def deadletter(self) -> str:
        return self.name(DEADLETTER)

    @property
    def ocsf(self) -> str:
        return self.name(OCSF)

    @property
    def osquery(self) -> str:
        return self.name(OSQUERY)

    # consumer groups and the stream app id: the deployment name, then a dash
    @property
    def app_id(self) -> str:
        """The stream workers' Faust app id: their consumer group and the prefix of their changelog topics."""
        return f"{self.prefix}-streams"

    @property
    def sink_group(self) -> str:
        return f"{self.prefix}-sink"

    @property
    def subscriber_group_prefix(self) -> str:
        """Anomaly followers' consumer groups start with this (`herdwatch anomalies`; the ACLs grant it)."""
        return f"{self.prefix}-anomalies-"

    def owns(self, name: str) -> bool:
        """Whether a topic or group name belongs to this deployment."""
        return name.startswith((f"{self.prefix}.", f"{self.prefix}-"))
