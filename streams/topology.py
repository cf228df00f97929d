"""The worker's Faust topology, declared once: its topics and its changelog-backed tables.

    telemetry (key host) --hosts agent--> observations (key image_family) --cohorts agent--> anomalies
         |                  host-seq, host-state, host-keys       baselines, rollouts, members   rollouts
         +--> deadletter (malformed, unsigned or forged), anomalies (data loss, identity conflict)   lifecycle

Tables of the host stage are partitioned like telemetry, those of the cohort stage like observations
(a table's changelog must have its source topic's partitions). Keys are strings, values JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from contract import topics as t
from contract.settings import KafkaSettings
from streams.settings import WorkerSettings

STREAM_TOPICS = (t.TELEMETRY, t.OBSERVATIONS, t.ANOMALIES, t.ROLLOUTS, t.LIFECYCLE)
"""Topics the worker creates with `WorkerSettings.partitions` partitions (the dead-letter topic has 1)."""
HOST_TABLES = ("host-seq", "host-state", "host-keys")
"""Tables of the host stage: partitioned like the telemetry topic."""
COHORT_TABLES = ("baselines", "rollouts", "members")
"""Tables of the cohort stage: partitioned like the observations topic."""
OSQUERY_TABLE = "osquery-hosts"
"""Table of the osquery stage (when on): partitioned like the osquery results topic."""


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def partitioner(partitions: int) -> Any:
    """Partition of a key as Kafka's Java client, aiokafka and librdkafka's murmur2 compute it."""

    @lru_cache(maxsize=65536)
    def partition_of(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


@dataclass(frozen=True)
class Topology:
    """The topics and tables of one app. Topics carry raw bytes; tables map str keys to JSON values."""

    telemetry: Any
    observations: Any
    anomalies: Any
    rollouts: Any
    lifecycle: Any
    deadletter: Any
    host_seq: Any
    host_state: Any
    baselines: Any
    rollout_state: Any
    members: Any
    host_keys: Any = field(default_factory=dict)
    """Pinned host keys (streams/host_keys.py): never swept, so a pin outlives a host's silence."""
    ocsf: Any = None
    """The OCSF findings topic, when the worker publishes to it (HERDWATCH_WORKER_OCSF)."""
    osquery: Any = None
    """The osquery results topic, when the worker reads it (HERDWATCH_WORKER_OSQUERY; streams/osquery_stage.py)."""
    osquery_hosts: Any = None
    """The osquery stage's per-host table (OSQUERY_TABLE), partitioned like the osquery topic."""

    @property
    def tables(self) -> dict[str, Any]:
        """Every table by its name."""
        tables = {name: table for name, table in zip(
            (*HOST_TABLES, *COHORT_TABLES),
            (self.host_seq, self.host_state, self.host_keys, self.baselines, self.rollout_state, self.members),
            strict=True)}
        if self.osquery_hosts is not None:
            tables[OSQUERY_TABLE] = self.osquery_hosts
        return tables

    @property
    def sources(self) -> tuple[str, ...]:
        """The topics the agents consume."""
        osquery = (self.osquery.get_topic_name(),) if self.osquery is not None else ()
        return self.telemetry.get_topic_name(), self.observations.get_topic_name(), *osquery


def declare(app: faust.App, kafka: KafkaSettings, ws: WorkerSettings,
            partitions: dict[str, int] | None = None) -> Topology:
    """Declare the topology on `app`. `partitions` maps topic name -> partition count when the topics exist."""
    names = kafka.topics
    parts = partitions or {}
    n_tel = parts.get(names.telemetry, ws.partitions)
    n_obs = parts.get(names.observations, ws.partitions)

    def topic(name: str, default: int) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=parts.get(name, default),
                         internal=False)

    def table(name: str, n: int) -> Any:
        schema: Any = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        return app.Table(name, partitions=n, schema=schema, help=f"herdwatch {name}")

    telemetry = topic(names.telemetry, n_tel)
    observations = topic(names.observations, n_obs)
    anomalies = topic(names.anomalies, ws.partitions)
    rollouts = topic(names.rollouts, ws.partitions)
    lifecycle = topic(names.lifecycle, ws.partitions)
    deadletter = topic(names.deadletter, 1)
    host_seq, host_state, host_keys = (table(name, n_tel) for name in HOST_TABLES)
    baselines, rollout_state, members = (table(name, n_obs) for name in COHORT_TABLES)
    ocsf = topic(names.ocsf, ws.partitions) if ws.ocsf else None
    osquery = osquery_hosts = None
    if ws.osquery:
        osquery_name = ws.osquery_topic or names.osquery
        osquery = topic(osquery_name, ws.partitions)
        osquery_hosts = table(OSQUERY_TABLE, parts.get(osquery_name, ws.partitions))
    return Topology(telemetry, observations, anomalies, rollouts, lifecycle, deadletter,
                    host_seq, host_state, baselines, rollout_state, members, host_keys, ocsf, osquery, osquery_hosts)
