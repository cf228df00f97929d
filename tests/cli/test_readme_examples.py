"""The README's example commands, exactly as written (HOST and TIME filled in), against a small store: a
simulated clone fleet with a miner, loaded without Kafka; plus `sql NAME`, `rollouts` and their errors."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from herdwatch.cli import build_parser, join_time_values, time_options

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HERDWATCH = str(Path(sys.executable).parent / "herdwatch")
MINER = "/tmp/.X11-unix/.rsync/xmrig"
LOAD = textwrap.dedent('''
    import json, sys
    from datetime import datetime
    from contract.settings import StorageSettings
    from simulator.presets import attack, fleet
    from storage.client import connect
    from storage.load import load_events
    from storage.schema import migrate

    start = datetime.fromisoformat(sys.argv[1])
    f = fleet({"web": 4}, start=start, duration=600, cycle="30s", seed=3, bursts_per_hour=0, name="readme",
              scenarios=[attack("cryptominer", "web", 0, 240, name="miner")])
    events = list(f.events())
    client = connect(StorageSettings())
    migrate(client)
    load_events(client, events)
    rollout = ("web", "2026-03-01 12:00:00", "completed", "ami-web-1", "ami-web-2", 1.0, "done",
               json.dumps({"added": ["process:/usr/bin/new"], "removed": ["process:/usr/bin/old"]}), 0, 1)
    client.insert("rollouts", [list(rollout)], column_names=["image_family", "time", "status", "old_image",
                  "new_image", "share", "explanation", "diff", "kafka_partition", "kafka_offset"])
    miner = next(e for e in events if e.kind == "process.start" and e.payload.get("exe") == sys.argv[2])
    print(json.dumps({"host": miner.host_id, "at": (miner.time).isoformat()}))
''')


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, str]]:
    tmp = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    env.update(HERDWATCH_STORAGE_DSN=f"chdb://{tmp / 'clickhouse'}", HERDWATCH_STORAGE_VAR_DIR=str(tmp / "var"))
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    out = subprocess.run([sys.executable, "-c", LOAD, start.isoformat(), MINER], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    miner = json.loads(out.stdout.strip().splitlines()[-1])
    miner["at"] = (datetime.fromisoformat(miner["at"]) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return env, miner


def readme_commands(section: str) -> list[str]:
    """The `.venv/bin/herdwatch ...` lines of the first sh block after `section`, comments cut."""
    text = (ROOT / "README.md").read_text()
    block = re.search(re.escape(section) + r".*?```sh\n(.*?)```", text, re.S)
    assert block, f"README has no sh block after {section!r}"
    cmds = []
    for line in block.group(1).splitlines():
        line = line.strip()
        if line.startswith(".venv/bin/herdwatch"):
            cmds.append(re.sub(r"\s+#.*$", "", line).rstrip(" &"))
    return cmds


def herdwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERDWATCH, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_readme_demo_examples_run_as_written(store) -> None:
    env, miner = store
    cmds = readme_commands("## What the demo shows")
    assert any("--since -30d" in c for c in cmds) and len(cmds) >= 5, cmds
    for cmd in cmds:
        argv = [{"HOST": miner["host"], "TIME": miner["at"]}.get(a, a) for a in shlex.split(cmd)[1:]]
        result = herdwatch(env, *argv)
        assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "error" not in result.stderr.lower(), f"{cmd}\n{result.stderr}"
        if "--ran" in argv:
            assert miner["host"] in result.stdout, result.stdout
        if argv[0] == "host":
            assert MINER in result.stdout, result.stdout


def test_the_readme_pipeline_commands_parse() -> None:
    parser = build_parser()
    for cmd in readme_commands("## Using it on real hosts"):
        parser.parse_args(join_time_values(shlex.split(cmd)[1:], time_options(parser)))


def test_sql_runs_a_named_query_by_name_with_time_parameters(store) -> None:
    env, miner = store
    result = herdwatch(env, "sql", "hosts_ran_exe", "-p", f"exe={MINER}", "-p", "since=-30d", "-p", "until=now",
                       "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [r["host_id"] for r in json.loads(result.stdout)] == [miner["host"]]
    assert herdwatch(env, "sql", "sequence_gaps", "-p", f"host={miner['host']}").returncode == 0
    missing = herdwatch(env, "sql", "sequence_gaps")
    assert missing.returncode == 2 and "-p host=VALUE" in missing.stderr
    typo = herdwatch(env, "sql", "sequence_gaps -p host=x")
    assert typo.returncode == 2 and "herdwatch sql sequence_gaps -p host=..." in typo.stderr, typo.stderr


def test_rollouts_list_and_show_in_every_format(store) -> None:
    env, _ = store
    listed = herdwatch(env, "rollouts", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["new_image"] == "ami-web-2"
    rid = rows[0]["rollout_id"]
    assert herdwatch(env, "rollouts", "--format", "csv").stdout.startswith("rollout_id,image_family,status")
    for key in (rid, "web"):
        shown = herdwatch(env, "rollouts", "show", key)
        assert shown.returncode == 0, shown.stderr
        assert "ami-web-1 -> ami-web-2" in shown.stdout and "+ process:/usr/bin/new" in shown.stdout
    as_json = json.loads(herdwatch(env, "rollouts", "show", rid, "--format", "json").stdout)
    assert as_json[0]["diff"] == {"added": ["process:/usr/bin/new"], "removed": ["process:/usr/bin/old"]}
    unknown = herdwatch(env, "rollouts", "show", "nope")
    assert unknown.returncode == 3 and "`herdwatch rollouts` lists them" in unknown.stderr
    for fmt in ("table", "json", "csv"):
        assert herdwatch(env, "hosts", "--since", "-30d", "--format", fmt).returncode == 0
