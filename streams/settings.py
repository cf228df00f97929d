"""Settings of a stream worker (env prefix HERDWATCH_WORKER_) and the Kafka settings mapped to Faust.

`faust_broker_kwargs` turns the shared KafkaSettings (SASL/SCRAM, TLS) into the keyword arguments
`faust.App` understands, so a worker reaches the same secured cluster as the confluent-kafka clients.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.settings import KafkaSettings, default_var_dir
from detectors.engine_config import EngineConfig


class WorkerSettings(BaseSettings):
    """One stream worker. Every worker of a deployment shares `app_id` (it is the consumer group)."""

    model_config = SettingsConfigDict(env_prefix="HERDWATCH_WORKER_", env_file=".env", extra="ignore")

    app_id: str = ""
    """Consumer group and prefix of the changelog topics; default `<deployment>-streams` (HERDWATCH_DEPLOYMENT,
    so "herdwatch-streams" by default). Change it and the worker starts from scratch."""
    ocsf: bool = False
    """Also publish every finding as an OCSF Detection Finding to `<deployment>.findings.ocsf` (docs/ocsf.md)."""
    partitions: int = Field(default=8, ge=1)
    """Partitions of every topic the worker creates (telemetry, observations, changelogs)."""
    host_timeout_s: float = Field(default=300.0, gt=0)
    """A host silent this long (event time) is marked gone and leaves its cohort's live baseline."""
    lag_grace_s: float = Field(default=30.0, ge=0)
    """...and nothing arrived from it for this long (wall time), so catching up on a backlog is safe."""
    host_retention_s: float = Field(default=86_400.0, gt=0)
    """A gone host's per-host state is deleted after this long without events."""
    tick_interval_s: float = Field(default=5.0, gt=0)
    """How often each worker asks its cohorts for timeouts, rollout progress and refits."""
    touch_interval_s: float = Field(default=30.0, gt=0)
    """A quiet host still sends its cohort a keep-alive observation this often."""
    metrics_port: int = 0
    """Prometheus /metrics port (0: off)."""
    metrics_addr: str = "127.0.0.1"
    web_port: int = 0
    """Faust's own web server port (0: off; it serves table contents, so keep it private)."""
    data_dir: Path = Field(default_factory=lambda: default_var_dir() / "streams")
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    """How fast the group notices a dead worker (Kafka's group.min.session.timeout.ms is 6 s)."""
    standby_replicas: int = Field(default=1, ge=0)
    """Warm copies of each table partition kept by other workers (Faust's table_standby_replicas): a worker
    taking partitions over starts from its copy instead of replaying their changelogs, but every worker also
    reads every changelog record the others write (its cost: docs/benchmarks.md, Stream workers). 0: none."""
    fault_lose_message: str = Field(default="", pattern=r"^(\d+:\d+)?$")
    """Fault injection for crash tests ("" = off): "<partition>:<offset>" of the telemetry topic. Its first
    delivery is lost, as Faust can lose fetched messages, and the worker kills itself (SIGKILL) at its first
    offset commit a second or more later, before the lost message is fetched again (streams/faults.py)."""
    loglevel: str = "warn"
    require_signatures: bool = True
    """Refuse telemetry batches that are not signed by a host key (docs/security.md, "Host identity"). With
    false, unsigned batches of producers that do not sign are accepted; a host that once signed must go on."""
    repin: dict[str, str] = Field(default_factory=dict)
    """host_id -> key fingerprint (SHA256:...): after a re-image, the host's new key replaces its pin (JSON in
    HERDWATCH_WORKER_REPIN; set the same in HERDWATCH_SINK_REPIN)."""
    osquery: bool = False
    """Also read osquery result logs from `<deployment>.osquery.results` and publish them as telemetry
    (docs/osquery.md): hosts without the herdwatch agent, scored the same way."""
    osquery_topic: str = ""
    """The topic osquery's Kafka logger writes to (default `<deployment>.osquery.results`)."""
    osquery_default_image: str = ""
    """Image id of hosts whose lines have no ami_id / image_id decoration ("": such lines are dead-lettered)."""
    osquery_families: dict[str, str] = Field(default_factory=dict)
    """image id -> image family for osquery hosts without an image_family / role decoration (JSON)."""
    osquery_queries: dict[str, str] = Field(default_factory=dict)
    """query name -> osquery table, for queries not named after their table (JSON)."""
    osquery_key_secret: SecretStr | None = None
    """Secret the osquery stage derives each osquery host's signing key from (HMAC-SHA256 per host id), so
    its telemetry passes the signature check. Required when signatures are required; the same on every worker."""
    engine: dict[str, Any] = Field(default_factory=dict)
    """FamilyEngine settings (JSON in HERDWATCH_WORKER_ENGINE), e.g. {"min_hosts": 3}: the knobs of
    detectors.EngineConfig, checked when the settings load, so a typo stops the worker at start."""

    @model_validator(mode="after")
    def _default_app_id(self) -> WorkerSettings:
        if not self.app_id:
            self.app_id = KafkaSettings().topics.app_id
        return self

    @field_validator("engine")
    @classmethod
    def _engine_knobs(cls, value: dict[str, Any]) -> dict[str, Any]:
        EngineConfig.from_mapping(value)  # raises with the fix ("did you mean min_hosts?", accepted range)
        return value

    def worker_dir(self) -> Path:
        return self.data_dir / f"{self.app_id}-{uuid.uuid4().hex[:8]}"


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for aiokafka from the same CA/cert/key files librdkafka is given."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        ctx.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    return ctx


def faust_broker_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """`faust.App` keyword arguments for reaching the cluster described by `kafka`."""
    import faust

    kwargs: dict[str, Any] = {"broker": ",".join(f"kafka://{b.strip()}" for b in kafka.bootstrap.split(","))}
    ctx = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        if not kafka.sasl_mechanism:
            raise ValueError("HERDWATCH_KAFKA_SECURITY_PROTOCOL is SASL_* but HERDWATCH_KAFKA_SASL_MECHANISM "
                             "is not set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username or "", password=password, ssl_context=ctx,
            mechanism=kafka.sasl_mechanism)
    elif ctx is not None:
        kwargs["broker_credentials"] = faust.SSLCredentials(ctx)
    return kwargs
