"""Typed settings, read from the environment (and an optional .env file).

Every setting has an env variable: `HERDWATCH_KAFKA_BOOTSTRAP`, `HERDWATCH_STORAGE_DSN`, ... Secrets are
SecretStr so they never show up in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.topics import TopicNames


def default_var_dir() -> Path:
    return Path.cwd() / "var"


class KafkaSettings(BaseSettings):
    """How to reach Kafka. The same values configure confluent-kafka and Faust (aiokafka) clients."""

    model_config = SettingsConfigDict(env_prefix="HERDWATCH_KAFKA_", env_file=".env", extra="ignore")

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "herdwatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka properties for confluent-kafka producers, consumers and admin clients."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap,
                                "security.protocol": self.security_protocol.lower()}
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
