"""Subscribing to anomalies: `herdwatch anomalies --follow`, its filters, and kcat reading the topic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from stream_helpers import StreamEnv, dump_logs

from collectors.publisher import Publisher
from simulator.keys import SIMULATED
from simulator.presets import Clones

pytestmark = pytest.mark.integration


def cli_env(env: StreamEnv) -> dict[str, str]:
    return {**os.environ, "HERDWATCH_KAFKA_BOOTSTRAP": env.kafka.bootstrap,
            "HERDWATCH_KAFKA_TOPIC_PREFIX": env.kafka.topic_prefix}


def cli(env: StreamEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herdwatch.cli", "anomalies", *args], env=cli_env(env),
                          capture_output=True, text=True, timeout=60)


def test_follow_filters_and_kcat(stream_env_factory: Any) -> None:
    env: StreamEnv = stream_env_factory()
    fleet = Clones(8, start=datetime.now(UTC) - timedelta(seconds=900))
    bad = fleet.hosts[2]
    pub = Publisher(env.kafka, SIMULATED)
    for h in fleet.hosts:
        pub.publish(fleet.step(h, fleet.at(0)))
    for c in range(1, 12):
        for h in fleet.hosts:
            if h is bad and c == 3:
                fleet.attack(h, "cryptominer", exe="/tmp/.x/xmrig")
            pub.publish(fleet.step(h, fleet.at(c * 10)))
    assert pub.flush() == 0

    follow = subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "anomalies", "--follow", "--from-beginning",
                               "--host", bad.host_id, "--kind", "rare_feature"],
                              env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        env.start_worker()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(follow.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 90
        while not any("xmrig" in x for x in list(lines)) and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = "".join(lines)
        assert "xmrig" in seen, dump_logs(env)
        line = next(x for x in seen.splitlines() if "xmrig" in x)
        assert bad.host_id in line and "rare_feature" in line and fleet.image in line
    finally:
        follow.terminate()
        follow.wait(10)

    out = cli(env, "--json", "--host", bad.host_id)
    findings = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert findings and {f["host_id"] for f in findings} == {bad.host_id}
    assert cli(env, "--host", fleet.hosts[0].host_id).stdout == ""
    severe = cli(env, "--json", "--severity", "critical")
    assert all(orjson.loads(x)["severity"] == "critical" for x in severe.stdout.splitlines())

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat is not installed (apt-get install kcat); the CLI part passed")
    res = subprocess.run([kcat, "-b", env.kafka.bootstrap, "-C", "-t", env.kafka.topics.anomalies,
                          "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t", 1) for line in res.stdout.splitlines() if line]
    assert len(rows) == len(findings)
    assert all(key == orjson.loads(value)["host_id"] for key, value in rows)
