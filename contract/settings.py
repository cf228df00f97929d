"""Typed settings, read from the environment (and an optional .env file).

Every setting has an env variable: `HERDWATCH_KAFKA_BOOTSTRAP`, `HERDWATCH_STORAGE_DSN`, ... Secrets are
SecretStr so they never show up in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.topics import TopicNames

DEFAULT_DEPLOYMENT = "herdwatch"


def default_var_dir() -> Path:
    return Path.cwd() / "var"


class KafkaSettings(BaseSettings):
    """How to reach Kafka. The same values configure confluent-kafka and Faust (aiokafka) clients."""

    model_config = SettingsConfigDict(env_prefix="HERDWATCH_KAFKA_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field(
        default=DEFAULT_DEPLOYMENT, pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$",
        validation_alias=AliasChoices("HERDWATCH_DEPLOYMENT", "HERDWATCH_KAFKA_TOPIC_PREFIX"),
        description="The deployment name (HERDWATCH_DEPLOYMENT; HERDWATCH_KAFKA_TOPIC_PREFIX is its old name "
                    "and still read): it prefixes the topics (<name>.telemetry), the consumer groups "
                    "(<name>-sink, <name>-anomalies-*) and the stream app id (<name>-streams, so its "
                    "changelog topics), so two deployments share one broker without touching")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def deployment(self) -> str:
        return self.topic_prefix

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def confluent_config(self, quiet: bool = True) -> dict[str, Any]:
        """librdkafka properties for confluent-kafka producers, consumers and admin clients.

        With `quiet`, the client's own log lines (`%3|...|FAIL|rdkafka#producer-1| ...` on stderr otherwise)
        and its errors go through Python logging (logger `herdwatch.kafka`), where repeats are rate limited
        (contract.observability); a caller's own `error_cb` replaces ours.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap,
                                "security.protocol": self.security_protocol.lower()}
        if quiet:
            from contract.observability import kafka_client_logging

            conf.update(kafka_client_logging(self.bootstrap))
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        return conf


class StorageSettings(BaseSettings):
    """Where events are stored. Default: the embedded ClickHouse engine (chDB) under ./var/clickhouse."""

    model_config = SettingsConfigDict(env_prefix="HERDWATCH_STORAGE_", env_file=".env", extra="ignore")

    dsn: str | None = Field(default=None, description="chdb:///abs/path or http(s)://user:pw@host:8123/db")
    database: str = "herdwatch"
    var_dir: Path = Field(default_factory=default_var_dir)

    def resolved_dsn(self) -> str:
        return self.dsn or f"chdb://{(self.var_dir / 'clickhouse').resolve()}"
