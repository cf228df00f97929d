"""Fixtures for the stream tests (harness in stream_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stream_helpers import StreamEnv

from contract.settings import KafkaSettings


@pytest.fixture
def stream_env_factory(kafka_settings_factory: Callable[..., KafkaSettings],
                       tmp_path: Path) -> Iterator[Callable[..., StreamEnv]]:
    envs: list[StreamEnv] = []

    def make(**worker: Any) -> StreamEnv:
        env = StreamEnv(kafka_settings_factory(), tmp_path / f"env{len(envs)}", **worker)
        env.tmp.mkdir(parents=True, exist_ok=True)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
