"""`herdwatch collect` as operators run it: a separate process, settings from env and file, SIGTERM
for a clean stop with agent.goodbye, a Prometheus endpoint, and --once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from collector_helpers import read_events

from contract.events import Kind
from contract.settings import KafkaSettings
from herdwatch.kafka_local import free_port

pytestmark = pytest.mark.integration


def env_for(kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HERDWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "HERDWATCH_COLLECTOR_STATE_DIR": str(tmp_path / "state"),
            "HERDWATCH_COLLECTOR_CLOUD_METADATA": "false"}


def test_sigterm_stops_cleanly_with_goodbye_and_metrics_are_served(kafka_settings: KafkaSettings,
                                                                   tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(f"collector:\n  metrics_port: {port}\n  image_id: ami-from-file\n  host_id: cli-host\n")
    env = {**env_for(kafka_settings, tmp_path), "HERDWATCH_COLLECTOR_HOST_ID": "env-host"}
    proc = subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "collect", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = ""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                if "herdwatch_collector_events_sent_total 0.0" not in body and "events_sent_total" in body:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    for metric in ("events_sent_total", "probe_duration_seconds_bucket", "spool_pending_events",
                   "rss_bytes", "cpu_pct", "events_dropped_total"):
        assert f"herdwatch_collector_{metric}" in body
    assert "stopped (sigterm)" in out
    events = [e for _, _, batch in read_events(kafka_settings) for e in batch]
    assert events[0].kind is Kind.HELLO and events[-1].kind is Kind.GOODBYE
    assert events[-1].payload["reason"] == "sigterm"
    assert {e.host_id for e in events} == {"env-host"}  # env wins over the file
    assert {e.image_id for e in events} == {"ami-from-file"}


def test_once_sends_one_full_cycle_and_exits(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "herdwatch.cli", "collect", "--once", "--host-id", "once-host"]
    done = subprocess.run(command, env=env_for(kafka_settings, tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "waiting in spool 0" in done.stdout
    events = [e for _, _, batch in read_events(kafka_settings) for e in batch]
    kinds = [e.kind for e in events]
    assert kinds[0] is Kind.HELLO and Kind.GOODBYE not in kinds
    for kind in (Kind.PROCESS_INVENTORY, Kind.NET_INVENTORY, Kind.LOGIN_INVENTORY, Kind.METRICS,
                 Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY, Kind.MODULE_INVENTORY):
        assert kind in kinds
    assert [e.seq for e in events] == list(range(len(events)))
