"""Crash safety: a sink killed with SIGKILL (mid-batch, or between an insert and its commit) and
restarted loses nothing and stores nothing twice. Each sink runs in its own process with its own
embedded store path (one chDB path per process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from storage_helpers import fleet, publish

from contract.settings import KafkaSettings, StorageSettings
from storage.query_client import EndpointQueryClient, read_endpoint

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _env(kafka: KafkaSettings, store: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HERDWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap, "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "HERDWATCH_STORAGE_DSN": f"chdb://{store / 'clickhouse'}", "HERDWATCH_STORAGE_DATABASE": "hw",
                "HERDWATCH_STORAGE_VAR_DIR": str(store / "var"), "HERDWATCH_SINK_BATCH_SIZE": "300",
                "HERDWATCH_SINK_BATCH_TIMEOUT": "0.2", "HERDWATCH_SINK_SESSION_TIMEOUT_MS": "6000"})
    env.update(extra)
    return env


def _herdwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "herdwatch.cli", *args]


def _sql(env: dict[str, str], query: str) -> list[dict]:
    out = subprocess.run(_herdwatch("sql", "--format", "json", query), env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_sigkill_between_insert_and_commit_then_restart(kafka_settings, tmp_path):
    hosts = fleet(12, START, minutes=10)
    sent = publish(kafka_settings, hosts)
    expected_procs = sum(len(e.payload["items"]) if e.kind == "process.inventory" else 1
                         for h in hosts for e in h.events if e.kind.startswith("process."))
    env = _env(kafka_settings, tmp_path)
    crashed = subprocess.run(_herdwatch("sink", "--until-idle", "20"), timeout=120, capture_output=True,
                             env={**env, "HERDWATCH_SINK_FAULT_KILL_AFTER_INSERTS": "3",
                                      "HERDWATCH_SINK_BATCH_SIZE": "100"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]

    # second run: killed from outside, mid-stream, as soon as it has stored more (seen through its
    # query endpoint, which also shows that other processes can query while the sink runs)
    proc = subprocess.Popen(_herdwatch("sink", "--until-idle", "20"), env={**env, "HERDWATCH_SINK_BATCH_SIZE": "20"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        storage = StorageSettings(dsn=env["HERDWATCH_STORAGE_DSN"], database="hw", var_dir=tmp_path / "var")
        deadline = time.monotonic() + 60
        info = None
        while info is None and time.monotonic() < deadline:
            info = read_endpoint(storage)
            time.sleep(0.02)
        assert info is not None, "the sink did not publish its query endpoint"
        client = EndpointQueryClient(info["url"], info["token"])
        first_run = client.query("SELECT count() FROM events").rows[0][0]
        assert 0 < first_run < sent
        while client.query("SELECT count() FROM events").rows[0][0] <= first_run:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL

    finished = subprocess.run(_herdwatch("sink", "--until-idle", "3"), env=env, timeout=120,
                              capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    [row] = _sql(env, "SELECT count() AS n, uniqExact(event_id) AS unique_ids FROM events")
    assert row == {"n": sent, "unique_ids": sent}
    [row] = _sql(env, "SELECT count() AS n FROM processes")
    assert row == {"n": expected_procs}
