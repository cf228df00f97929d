"""Settings of the storage sink (env prefix HERDWATCH_SINK_). Where the store is lives in
contract.settings.StorageSettings (HERDWATCH_STORAGE_DSN, ..._DATABASE, ..._VAR_DIR)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.settings import KafkaSettings

TTL_TABLES = ("events", "processes", "network", "logins", "metrics", "config",
              "anomalies", "rollouts", "lifecycle")
"""Tables whose retention is configurable (HERDWATCH_SINK_TTL_<TABLE>_DAYS; 0 keeps rows forever)."""


class SinkSettings(BaseSettings):
    """How the sink batches, retries and keeps data. Every field has an env variable, e.g.
    HERDWATCH_SINK_BATCH_SIZE=20000 or HERDWATCH_SINK_TTL_METRICS_DAYS=30."""

    model_config = SettingsConfigDict(env_prefix="HERDWATCH_SINK_", env_file=".env", extra="ignore")

    group_id: str = Field(default="", description="Kafka consumer group; default `<deployment>-sink` "
                                                  "(HERDWATCH_DEPLOYMENT, so herdwatch-sink by default)")
    batch_size: int = Field(default=50_000, ge=1, description="flush when this many rows are buffered")
    batch_timeout: float = Field(default=1.0, gt=0, description="...or when the oldest row is this old (s)")
    max_row_bytes: int = Field(default=1_000_000, ge=1024,
                               description="an event whose stored row is larger is dead-lettered")
    retry_initial: float = Field(default=0.5, gt=0, description="first wait after a failed insert (s)")
    retry_max: float = Field(default=30.0, gt=0, description="longest wait between insert retries (s)")
    dedup_memory: int = Field(default=1_000_000, ge=0,
                              description="recent event ids remembered to drop upstream duplicates")
    session_timeout_ms: int = Field(default=10_000, ge=6000,
                                    description="Kafka group session timeout: how soon a crashed sink's "
                                                "partitions move to a restarted one")
    require_signatures: bool = Field(
        default=True, description="refuse telemetry batches not signed by a host key; with false, unsigned "
                                  "batches are accepted, but a host that once signed must go on (its pin holds)")
    repin: dict[str, str] = Field(
        default_factory=dict, description="host_id -> key fingerprint (SHA256:...): after a re-image, that new "
                                          "key replaces the host's pin (JSON; set the same in HERDWATCH_WORKER_REPIN)")
    endpoint: bool = Field(default=True, description="serve local queries when the store is embedded")
    endpoint_port: int = Field(default=0, ge=0, description="0 picks a free port on 127.0.0.1")

    ttl_events_days: int = Field(default=400, ge=0)
    ttl_processes_days: int = Field(default=400, ge=0)
    ttl_network_days: int = Field(default=400, ge=0)
    ttl_logins_days: int = Field(default=400, ge=0)
    ttl_metrics_days: int = Field(default=90, ge=0)
    ttl_config_days: int = Field(default=400, ge=0)
    ttl_anomalies_days: int = Field(default=0, ge=0)
    ttl_rollouts_days: int = Field(default=0, ge=0)
    ttl_lifecycle_days: int = Field(default=0, ge=0)

    fault_kill_after_inserts: int = Field(
        default=0, ge=0,
        description="fault injection for restart tests: SIGKILL this process right after the Nth "
                    "successful insert, before its offsets are committed (0 = off)")

    @model_validator(mode="after")
    def _default_group(self) -> SinkSettings:
        if not self.group_id:
            self.group_id = KafkaSettings().topics.sink_group
        return self

    def ttl_days(self, table: str) -> int:
        return int(getattr(self, f"ttl_{table}_days"))
