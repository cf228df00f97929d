"""Processes pointed at a dead broker stay quiet: connection trouble is said once (then a bounded reminder),
librdkafka's own lines go through logging, and the log files hold plain text (or JSON) without terminal codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herdwatch.kafka_local import free_port

pytestmark = pytest.mark.integration

HERDWATCH = str(Path(sys.executable).parent / "herdwatch")
SECONDS = 20
MAX_LINES = 10


def test_processes_at_a_dead_broker_write_a_bounded_plain_log(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: every connection is refused
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    base.update(HERDWATCH_KAFKA_BOOTSTRAP=dead, HERDWATCH_STORAGE_VAR_DIR=str(tmp_path / "var"),
                HERDWATCH_WORKER_DATA_DIR=str(tmp_path / "streams"), HERDWATCH_DEPLOYMENT="quiet")
    runs = {"worker": (["worker"], {"HERDWATCH_LOG_FORMAT": "json"}),
            "sink": (["sink", "--no-endpoint"], {"HERDWATCH_STORAGE_DSN": f"chdb://{tmp_path / 'ch'}"}),
            "anomalies": (["anomalies", "--follow"], {})}
    procs = {}
    for name, (args, extra) in runs.items():
        with open(tmp_path / f"{name}.log", "wb") as out:
            procs[name] = subprocess.Popen([HERDWATCH, *args], env={**base, **extra}, stdout=out,
                                           stderr=subprocess.STDOUT, cwd=tmp_path)
    time.sleep(SECONDS)
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for name in runs:
        raw = (tmp_path / f"{name}.log").read_bytes()
        lines = raw.decode(errors="replace").splitlines()
        assert b"\x1b" not in raw, f"{name}: terminal codes in the log"
        assert not any(line.startswith("%") and "|FAIL|" in line for line in lines), f"{name}: raw librdkafka lines"
        assert len(lines) <= MAX_LINES, f"{name} wrote {len(lines)} lines in {SECONDS} s:\n" + "\n".join(lines)
    worker = (tmp_path / "worker.log").read_text().splitlines()
    logged = [json.loads(line) for line in worker if line.startswith("{")]
    assert logged and all({"time", "level", "logger", "message"} <= set(r) for r in logged), worker
    assert any("unreachable" in r["message"] and dead in r["message"] for r in logged), worker
    sink = (tmp_path / "sink.log").read_text()
    assert "Kafka unreachable at " + dead in sink and "HERDWATCH_KAFKA_BOOTSTRAP" in sink, sink
    follower = (tmp_path / "anomalies.log").read_text()
    assert dead in follower and "HERDWATCH_KAFKA_BOOTSTRAP" in follower, follower
