"""Shared fixtures: one real Kafka broker and one embedded ClickHouse store per test session.

Isolation: every test gets its own topic prefix (uuid) and its own ClickHouse database, so tests never
see each other's data. Tests that need a store in a *separate process* (kill -9, restarts) make their own
chDB path under tmp_path: one process can open only one chDB path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contract.settings import KafkaSettings, StorageSettings
from herdwatch.kafka_local import LocalKafka, free_port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Apache Kafka broker (KRaft) on free ports, for the whole session."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_settings_factory(kafka_broker: LocalKafka) -> Callable[..., KafkaSettings]:
    """Makes KafkaSettings with a fresh topic prefix, so each call gets private topics."""

    def make(**overrides: object) -> KafkaSettings:
        values: dict[str, object] = {"bootstrap": kafka_broker.bootstrap,
                                     "topic_prefix": f"t{uuid.uuid4().hex[:12]}"}
        values.update(overrides)
        return KafkaSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def kafka_settings(kafka_settings_factory: Callable[..., KafkaSettings]) -> KafkaSettings:
    return kafka_settings_factory()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse path this test process may open."""
    return tmp_path_factory.mktemp("clickhouse")


@pytest.fixture
def storage_settings_factory(chdb_path: Path) -> Callable[..., StorageSettings]:
    def make(**overrides: object) -> StorageSettings:
        values: dict[str, object] = {"dsn": os.environ.get("HERDWATCH_TEST_STORAGE_DSN")
                                     or f"chdb://{chdb_path}",
                                     "database": f"t{uuid.uuid4().hex[:12]}"}
        values.update(overrides)
        return StorageSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def storage_settings(storage_settings_factory: Callable[..., StorageSettings]) -> StorageSettings:
    return storage_settings_factory()
