"""The first end-to-end slice with the real commands: this machine's agent -> Kafka -> sink -> ClickHouse
-> `herdwatch sql`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.settings import KafkaSettings

pytestmark = pytest.mark.integration

HERDWATCH = str(Path(sys.executable).parent / "herdwatch")


def test_collect_sink_sql_on_this_machine(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    env.update({"HERDWATCH_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
                "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
                "HERDWATCH_STORAGE_VAR_DIR": str(tmp_path / "var")})
    subprocess.run([HERDWATCH, "collect", "--duration", "4", "--state-dir", str(tmp_path / "agent"),
                    "--host-id", "i-slice-test", "--image-id", "ami-slice", "--image-family", "slice"],
                   env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([HERDWATCH, "sink", "--until-idle", "4", "--no-endpoint"],
                   env=env, check=True, capture_output=True, timeout=180)
    out = subprocess.run(
        [HERDWATCH, "sql", "--format", "json",
         "SELECT kind, count() AS n, max(seq) AS last_seq, uniqExact(seq) AS seqs FROM events "
         "WHERE host_id = {host:String} GROUP BY kind ORDER BY kind", "-p", "host=i-slice-test"],
        env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    parsed = json.loads(out)
    rows = parsed if isinstance(parsed, list) else parsed["rows"]
    by_kind = {r["kind"]: r for r in rows} if rows and isinstance(rows[0], dict) else \
        {r[0]: dict(zip(("kind", "n", "last_seq", "seqs"), r, strict=True)) for r in rows}
    for kind in ("agent.hello", "agent.goodbye", "process.inventory", "net.inventory", "metrics",
                 "config.inventory", "package.inventory"):
        assert kind in by_kind, f"{kind} missing from the store: {sorted(by_kind)}"
    total = sum(int(r["n"]) for r in by_kind.values())
    last = max(int(r["last_seq"]) for r in by_kind.values())
    assert total == last + 1, "every event from seq 0 to the last is stored exactly once"
