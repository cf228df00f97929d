"""fanotify exec events in a PID namespace made by the test (root, real processes): the connector is
refused there, the agent picks fanotify and says so, and processes living 1-5 ms and a 200 ms dropper-like
script are reported with their exe; the probe reports their exits from its /proc listing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# millisecond processes raced against the reader, as in test_collector_exec_events.py: run alone
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="fanotify and PID namespaces need root"),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
              pytest.mark.alone]

INSIDE = r"""
import json, os, subprocess, sys, time
from pathlib import Path
from collectors.agent import build_probes, open_exec_source
from collectors.probes import ProcessProbe
from collectors.probes.exec_events import ExecRecord, ExecSource, ExecSourceUnavailable
from collectors.settings import CollectorSettings
from contract.events import Kind

out = {"pid": os.getpid()}
try:
    ExecSource().open()
    out["connector"] = "opened"
except ExecSourceUnavailable as e:
    out["connector"] = str(e)
state = Path(sys.argv[1])
settings = CollectorSettings(state_dir=state, cloud_metadata=False, journal=False, auth_logs=[],
                             image_file=state / "none.json", host_id="ns-host", image_id="img", metrics_port=0,
                             process_interval_s=0.5, exec_window_s=0.5)
probes = build_probes(settings)
probe = next(p for p in probes if isinstance(p, ProcessProbe))
out["source_info"] = probe.source_info()
emits = list(probe.collect(True))
sleep = os.path.realpath("/bin/sleep")
spawner = subprocess.Popen([sys.executable, "-c", '''
import os, sys, time
sleep = sys.argv[1]
for n in range(200):  # 1-5 ms each, 100 a second, waited for
    pid = os.posix_spawn(sleep, [sleep, f"0.00{n % 5 + 1}"], os.environ)
    os.waitpid(pid, 0)
    time.sleep(0.01)
''', sleep])
script = state / "update.sh"
script.write_text("#!/bin/sh\n: > " + str(state / "dropped") + "\nsleep 0.2\n")
script.chmod(0o755)
spawner.wait()
dropper = subprocess.Popen([str(script)])
dropper.wait()
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    time.sleep(0.5)
    emits += probe.collect(False)
emits += [(Kind.PROCESS_START, {**probe.exec_item(r), "count": n}) for r, n in probe.storms.flush()]
probe.close()
out["spawner"] = spawner.pid
out["dropper"] = dropper.pid
out["starts"] = [p for k, p in emits if k is Kind.PROCESS_START]
out["exits"] = [p["pid"] for k, p in emits if k is Kind.PROCESS_EXIT]
out["seen"] = probe.exec_source.execs_seen if probe.exec_source else 0
print(json.dumps(out))
"""


def test_in_a_pid_namespace_fanotify_reports_every_short_exec_with_its_exe(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", INSIDE,
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["pid"] < 10  # the helper ran in a PID namespace of its own
    assert out["connector"] != "opened"  # the kernel refuses the connector there
    assert out["source_info"] == {"mode": "fanotify"}
    sleep = os.path.realpath("/bin/sleep")
    sh = os.path.realpath("/bin/sh")
    starts = out["starts"]
    assert all(p["source"] == "fanotify" for p in starts)
    # every sleep exec in the namespace is the spawner's 200 or the dropper's one: each is reported with its
    # exe (the file the event opened), one by one or counted
    assert sum(p.get("count", 1) for p in starts if p["exe"] == sleep) == 201
    ours = [p for p in starts if p["ppid"] == out["spawner"]]  # read before the process was gone
    full = sum(p.get("count", 1) for p in ours if "missing" not in p)
    print(f"1-5 ms processes reported with their full identity: {full}/200")
    assert full >= 180  # the rest were gone before the reader got to them (a loaded 2-core machine)
    assert all(p["user"] == "root" for p in ours)
    assert {p["cmdline"] for p in ours if "missing" not in p} <= {f"/usr/bin/sleep 0.00{n}" for n in range(1, 6)}
    assert not [p for p in starts if p["exe"] == sleep and "python" in p["cmdline"]]  # never the old program's
    # the dropper-like script: its own exec (the interpreter, as /proc/<pid>/exe has it) with its command
    # line, and the 200 ms child it ran, with its parent
    dropper = [p for p in starts if p["pid"] == out["dropper"]]
    assert dropper and dropper[0]["exe"] == sh and dropper[0]["cmdline"].endswith("update.sh")
    child = [p for p in starts if p["ppid"] == out["dropper"]]
    assert child and child[0]["exe"] == sleep and child[0]["cmdline"] == "sleep 0.2"
    assert child[0]["parents"][0] == sh and "missing" not in child[0]
    # exits come from the probe's listing: the dropper and its child are gone, each reported once
    assert out["exits"].count(out["dropper"]) == 1 and out["exits"].count(child[0]["pid"]) == 1
    assert (tmp_path / "dropped").exists()
