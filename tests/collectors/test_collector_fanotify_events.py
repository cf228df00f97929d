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


OVERLAY = r"""
import json, os, subprocess, sys, time
from collectors.probes.exec_events import ExecRecord
from collectors.probes.fanotify_events import FanotifySource
merged = sys.argv[1]
src = FanotifySource(max_reads_per_s=1e9)
src.open()
procs = [subprocess.Popen([merged + "/prog", "0.2"]) for _ in range(5)]
pids = [p.pid for p in procs]
for p in procs:
    p.wait()
time.sleep(0.3)
recs = [r for r in src.drain() if isinstance(r, ExecRecord) and r.pid in pids]
src.close()
print(json.dumps({"marked": src.marked, "execs": [[r.pid, r.exe, r.argv is not None] for r in recs]}))
"""


def test_a_program_on_overlayfs_is_one_exec_with_its_overlay_path(tmp_path: Path) -> None:
    # overlayfs opens the lower layer's file itself (through a mount of its own) before the program: that
    # event is the same exec, not a second one named after the lower file
    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    shutil.copy(os.path.realpath("/bin/sleep"), tmp_path / "lower" / "prog")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = (f"mount -t overlay overlay -o lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,"
              f"workdir={tmp_path}/work {tmp_path}/merged && exec \"$0\" -c \"$1\" {tmp_path}/merged")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script, sys.executable, OVERLAY], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)
    if done.returncode != 0 and "overlay" in done.stderr and "mount" in done.stderr:
        pytest.skip(f"no overlayfs here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(m.startswith(f"{tmp_path}/merged (overlay") for m in out["marked"])
    execs = out["execs"]
    assert len(execs) == 5 and len({pid for pid, _exe, _argv in execs}) == 5  # one exec each
    assert all(exe == f"{tmp_path}/merged/prog" and argv for _pid, exe, argv in execs)
