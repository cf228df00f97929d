"""The lab: a real clone fleet on this machine. The integration test runs the CI plan (4 web hosts, about
3.5 minutes): every attack found on its host, the clean rollout without host findings (none in the rollout
window itself, whichever fleet-life window the report puts them in), and nothing of the lab left afterwards
(namespaces, links, processes)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from herdwatch.kafka_local import LocalKafka
from herdwatch.lab import netns
from herdwatch.lab.images import available, load_image
from herdwatch.lab.schedule import ci_plan, full_plan, long_plan

ROOT = Path(__file__).resolve().parents[2]


def test_every_image_loads_and_every_planned_attack_exists() -> None:
    from herdwatch.lab.attacks import ATTACKS

    assert {"web", "web-v2", "worker"} <= set(available())
    assert all(a.evidence for a in ATTACKS.values())  # what a finding must name to be credited to the attack
    for name in available():
        image = load_image(name)
        assert image.services and image.jobs and "/etc/ssh/sshd_config" in image.files
    for plan in (ci_plan(), full_plan(), long_plan()):
        assert {s.args["attack"] for s in plan.steps if s.action == "attack"} <= set(ATTACKS)
    for plan in (full_plan(), long_plan()):
        assert {s.args["attack"] for s in plan.steps if s.action == "attack"} == set(ATTACKS)
    long = long_plan()
    assert sum(long.hosts.values()) == 12 and long.duration_s == 65 * 60
    assert {s.args.get("kind") for s in long.steps if s.action == "replace"} == {"rollout", "rollback"}
    assert {"config_push", "agent_restart", "reboot", "scale_out", "scale_in"} <= {s.action for s in long.steps}
    # an attack's host is never replaced or restarted while the attack runs
    busy = [(s.at, s.args["slot"]) for s in long.steps if s.action in ("replace", "reboot", "agent_restart")]
    for a in (s for s in long.steps if s.action == "attack"):
        assert not [b for b in busy if b[1] == a.args["slot"] and a.at <= b[0] <= a.at + a.args["duration"]], a


def test_lab_refuses_without_root_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from herdwatch.commands import lab

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lab.run(argparse.Namespace(action="up")) == 2
    assert "needs root" in capsys.readouterr().err


def test_kafka_listen_adds_a_second_advertised_listener(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path, 19092, 19093, listen="10.213.47.1")
    assert broker.listen_address == "10.213.47.1:19094"
    props = broker._listen_properties()
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092,LAB://10.213.47.1:19094"
    assert LocalKafka(tmp_path, 19092, 19093).listen_address is None
    (tmp_path / "ports").write_text("19092 19093 listen=10.213.47.1:19094")
    again = LocalKafka.from_root(tmp_path)
    assert again.listen_address == "10.213.47.1:19094" and not again.secure


def test_peer_checks_are_spread_evenly_over_the_web_slots(tmp_path: Path) -> None:
    """Every web host once checked the first web host: that host alone received the fleet's checks and was
    reported for its inbound traffic (metric_deviation net_bytes_in, a false alarm the lab made)."""
    import subprocess

    from herdwatch.lab.fleet import Lab
    from herdwatch.lab.state import HostRecord, LabState

    state = LabState(lab_id="hwl0000", lab_dir=str(tmp_path), subnet="10.213.49", bridge="b", bridge_mac="m",
                     topic_prefix="p", kafka_root="k", kafka_port=1, controller_port=2, lab_port=3, started="",
                     web_slots=4)
    for i, (slot, family) in enumerate([*((f"web-{k}", "web") for k in range(4)), ("worker-0", "worker")]):
        state.hosts.append(HostRecord(slot=slot, host_id=f"h{i}", image=family, image_id=f"{family}-v1",
                                      family=family, ns="n", ip=f"10.213.49.{10 + i}", veth="v"))
    lab = Lab(state)
    lab.peers_dir.mkdir()
    for h in state.hosts:
        (lab.peers_dir / h.slot).write_text(h.ip + "\n")

    def resolve(expr: str) -> str:
        return subprocess.run(["/bin/sh", "-c", f"echo {expr}"], capture_output=True, text=True).stdout.strip()

    checked = [resolve(lab._peer(h)) for h in state.hosts if h.family == "web"]
    assert checked == ["10.213.49.11", "10.213.49.12", "10.213.49.13", "10.213.49.10"]  # a ring: once each
    assert resolve(lab._peer(state.hosts[-1])) in checked  # a worker: one web slot, another every second
    assert "% 4" in lab._peer(state.hosts[-1])


def test_a_host_added_after_a_config_push_boots_with_it(tmp_path: Path) -> None:
    """An autoscaled worker booted with the image's /etc/hosts, without the line pushed to its family minutes
    before, and was reported, rightly, for drifting from its clones (config_drift file.sha256:/etc/hosts)."""
    from herdwatch.lab.fleet import Lab
    from herdwatch.lab.state import HostRecord, LabState

    state = LabState(lab_id="hwl0000", lab_dir=str(tmp_path), subnet="10.213.49", bridge="b", bridge_mac="m",
                     topic_prefix="p", kafka_root="k", kafka_port=1, controller_port=2, lab_port=3, started="")
    lab = Lab(state)
    old = HostRecord(slot="worker-0", host_id="h0", image="worker", image_id="worker-v1", family="worker", ns="n",
                     ip="10.213.49.10", veth="v")
    new = HostRecord(slot="worker-auto-0", host_id="h1", image="worker", image_id="worker-v1", family="worker",
                     ns="n", ip="10.213.49.11", veth="v")
    state.hosts.append(old)
    lab._write_image_files(lab.host_dir(old) / "fs", load_image("worker"))  # what add_host writes
    lab.config_push("worker", "10.213.49.1 config.lab.internal")
    lab.config_push("web", "10.213.49.1 web.lab.internal")
    state.hosts.append(new)
    lab._write_image_files(lab.host_dir(new) / "fs", load_image("worker"))
    hosts = [(lab.host_dir(h) / "fs" / "hosts").read_text() for h in (old, new)]
    assert hosts[0] == hosts[1] and "config.lab.internal" in hosts[1] and "web.lab.internal" not in hosts[1]


def test_every_host_boots_with_the_passwd_of_the_labs_start(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A package installed on the machine during a long run added a system user to /etc/passwd; every host
    booted after it copied the new file and was reported (config_drift file.sha256:/etc/passwd) for
    differing from its older clones. The lab's passwd is now the machine's at the first host, for all."""
    from herdwatch.lab import fleet
    from herdwatch.lab.state import HostRecord, LabState

    machine = tmp_path / "machine-passwd"
    machine.write_text("root:x:0:0:root:/root:/bin/bash\n")
    monkeypatch.setattr(fleet, "MACHINE_PASSWD", machine)
    state = LabState(lab_id="hwl0000", lab_dir=str(tmp_path / "lab"), subnet="10.213.49", bridge="b",
                     bridge_mac="m", topic_prefix="p", kafka_root="k", kafka_port=1, controller_port=2, lab_port=3,
                     started="")
    lab = fleet.Lab(state)
    hosts = [HostRecord(slot=f"worker-{i}", host_id=f"h{i}", image="worker", image_id="worker-v1", family="worker",
                        ns="n", ip=f"10.213.49.1{i}", veth="v") for i in range(2)]
    lab._prepare_files(hosts[0], load_image("worker"))
    machine.write_text(machine.read_text() + "prometheus:x:102:105::/var/lib/prometheus:/usr/sbin/nologin\n")
    lab._prepare_files(hosts[1], load_image("worker"))
    copies = [(lab.host_dir(h) / "fs" / "passwd").read_text() for h in hosts]
    assert copies[0] == copies[1]
    assert copies[0].startswith("root:x:0:0") and fleet.LAB_USER in copies[0] and "prometheus" not in copies[0]


HOLD_A_COPY = """
import sys
from herdwatch.lab.hostinit import Host
host = Host.__new__(Host)
host.spec = {"mounts": [(sys.argv[1], sys.argv[2])]}
import subprocess
subprocess.run(["mount", "--bind", sys.argv[1], sys.argv[2]], check=True)
print("mounted", flush=True)
sys.stdin.readline()
print("seen:" + open(sys.argv[2]).read().strip(), flush=True)
print("again:" + ",".join(host.keep_mounts()), flush=True)
print("seen:" + open(sys.argv[2]).read().strip(), flush=True)
print("again:" + ",".join(host.keep_mounts()), flush=True)
"""


def test_a_host_mounts_its_copy_again_when_the_machine_replaces_the_file(tmp_path: Path) -> None:
    """A package installed on the machine during a long run renamed a new /etc/passwd over the old one:
    the kernel detached every lab host's bind mount on it, and hosts read the machine's passwd (4 config
    drift findings against their clones). A host's init now mounts its copy again. Real mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a mount namespace of its own)")
    machine, copy = tmp_path / "passwd", tmp_path / "host-passwd"
    machine.write_text("machine v1")
    copy.write_text("the host's own")
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", HOLD_A_COPY,
                              str(copy), str(machine)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "mounted"
        (tmp_path / "passwd.new").write_text("machine v2")
        os.rename(tmp_path / "passwd.new", machine)  # what adduser does, outside the host's namespace
        child.stdin.write("go\n")
        child.stdin.flush()
        out = [child.stdout.readline().strip() for _ in range(4)]
    finally:
        child.kill()
        child.wait()
    assert out == ["seen:machine v2", f"again:{machine}", "seen:the host's own", "again:"]


def test_mount_targets_are_left_while_another_lab_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """One lab's `down` removed /root/.ssh (it had made it) while another lab ran: that lab's next host restart
    failed ("mount point does not exist"). Now `down` leaves them while another lab's bridge is up, and every
    boot makes a missing target again."""
    from herdwatch.lab import fleet

    monkeypatch.setattr(netns, "link_list", lambda: ["lo", "eth0", "hwl1234b", "hwl1234v10", "hwl5678b"])
    assert fleet.other_labs("hwl1234") == ["hwl5678b"]
    monkeypatch.setattr(netns, "link_list", lambda: ["lo", "hwl1234b", "hwl1234va"])
    assert fleet.other_labs("hwl1234") == []
    assert "self._mount_targets()" in Path(fleet.__file__).read_text().split("def _boot", 1)[1].split("def ", 1)[0]


def test_stopping_an_attack_ends_a_descendant_in_a_process_group_of_its_own() -> None:
    """The reverse shell's `bash -i` makes its own process group: killing the attack's group left it running
    (and reported) after the attack's ground-truth window ended."""
    import subprocess
    import time

    from herdwatch.lab.attacks import RunningAttack, stop_attack

    proc = subprocess.Popen(["/bin/sh", "-c", "setsid sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (kids := psutil.Process(proc.pid).children(recursive=True)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kids and kids[0].pid != proc.pid
    stop_attack(RunningAttack("reverse_shell", "web-2", "h", groups=[proc.pid]))
    with contextlib.suppress(psutil.NoSuchProcess):
        kids[0].wait(5)
    assert not kids[0].is_running() or kids[0].status() == psutil.STATUS_ZOMBIE


def _lab_processes(lab_dir: str, lab_id: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if lab_dir in line or f"{lab_id}-" in line:
            found.append(f"{p.info['pid']}: {line[:160]}")
    return found


def rollout_window_findings(report: dict[str, Any], rollout: dict[str, Any], after_s: float = 60.0) -> list[str]:
    """Host findings on the rolled-out family from the rollout's start to `after_s` after its end that are
    not one of the injected attacks, whatever fleet-life window the report attributed them to."""
    start = datetime.fromisoformat(rollout["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(rollout["end"].replace("Z", "+00:00")) + timedelta(seconds=after_s)
    attacks = {s["scenario"] for s in report["scenarios"]}
    return [f"{f['kind']} {f['host_id']} {f['subject']}" for f in report["anomalies"]
            if f["image_family"] == rollout["image_family"] and f["label"] not in attacks | {"image"}
            and start <= datetime.fromisoformat(f["time"].replace("Z", "+00:00")) <= end]


@pytest.mark.integration
def test_ci_plan_finds_every_attack_and_leaves_nothing_behind() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (namespaces, veth pairs, a bridge)")
    if not shutil.which("java") or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("the lab needs java, unshare and nsenter")
    from herdwatch.lab.fleet import outside_reach
    from herdwatch.lab.runner import run_plan

    if outside_reach(ROOT):
        pytest.skip(f"this checkout is under /tmp ({ROOT}): every lab host mounts its own /tmp, so the agents "
                    "could not run from it; run the suite from a checkout outside /tmp")

    lines: list[str] = []
    # under the repository, not /tmp: each host mounts its own /tmp over the real one
    report, lab = run_plan(ROOT / "var" / "lab-test", ci_plan(), say=lines.append, subnet="10.213.48")
    text = "\n".join(lines)
    state = lab.state

    attacks = [s for s in report["scenarios"]]
    assert len(attacks) == 3, text
    missed = [f"{s['scenario']} on {s['host_id']}" for s in attacks if not s["detected"]]
    assert not missed, f"missed {missed}\n{text}"
    for s in attacks:
        assert s["first_finding"]["host_id"] == s["host_id"]
    rollouts = [r for r in report["rollouts"] if r["kind"] == "rollout"]
    assert len(rollouts) == 1 and len(rollouts[0]["hosts"]) == 4, text
    assert rollouts[0]["host_anomalies"] == 0, f"rollout host anomalies: {rollouts[0]['anomalies']}\n{text}"
    during = rollout_window_findings(report, rollouts[0])

    assert not [n for n in netns.netns_list() if n.startswith(state.lab_id)]
    assert not [n for n in netns.link_list() if n.startswith(state.lab_id)]
    assert not _lab_processes(state.lab_dir, state.lab_id)
    assert not LocalKafka.from_root(Path(state.kafka_root)).is_running()
    assert state.netns == [] and state.links == [] and state.processes == []
    assert (Path(state.lab_dir) / "report.json").exists() and (Path(state.lab_dir) / "report.html").exists()
    # counted in the rollout window itself, whatever fleet-life window the report attributed them to (the
    # config push's grace covers the rollout): none, also none from the jobs' short-lived children
    assert during == [], f"{len(during)} host findings on {rollouts[0]['image_family']} hosts during the " \
                         f"rollout: {'; '.join(during)}\n{text}"


def test_teardown_finds_what_is_left_of_a_lab_whatever_its_records_say(tmp_path: Path) -> None:
    """`down` kills, last, every process whose command line names the lab: a host whose record was lost
    (or no longer matched its process) once outlived a CI run's teardown."""
    from herdwatch.lab.fleet import stray_processes

    lab_dir = str(tmp_path / "lab" / "hwltest")
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{lab_dir}/hosts/h/spec.json"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "/elsewhere/spec.json"])
    try:
        found = {p.pid for p in stray_processes(lab_dir, "hwltest")}
        assert left.pid in found and other.pid not in found and os.getpid() not in found
    finally:
        for p in (left, other):
            p.kill()
            p.wait()


def test_a_finished_lab_is_rescored_from_its_files_with_todays_rules(tmp_path: Path) -> None:
    from contract.findings import Finding, FindingKind, Severity
    from herdwatch.cli import main
    from herdwatch.lab.state import HostRecord, LabState

    t0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    iso = lambda s: (t0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    hosts = [HostRecord(f"web-{i}", f"hwl1-web-{i}", "web", "web-v1", "web", "ns", f"10.9.9.{i}", "v",
                        first=iso(0), last=iso(3600), alive=False) for i in range(3)]
    truth = [{"scenario": "dropper-web-1", "kind": "compromise", "attack": "dropper", "host_id": "hwl1-web-1",
              "image_family": "web", "start": iso(600), "end": iso(900), "hosts": [],
              "details": {"slot": "web-1", "evidence": ["update.sh"]}}]
    state = LabState("hwl1", str(tmp_path), "10.9.9", "br", "mac", "hwl1.", "k", 1, 2, 3, iso(0), warmup_s=60.0,
                     hosts=hosts, truth=truth, ended=iso(3600))
    state.save()

    def finding(host: str, s: float, subject: str) -> dict:
        f = Finding(FindingKind.RARE_FEATURE, host, "web-v1", "web", t0 + timedelta(seconds=s), 0.9, Severity.HIGH,
                    subject, "x", {})
        return {**f.to_dict(), "label": "false_alarm"}  # the labels of the old report are not trusted

    anomalies = [finding("hwl1-web-1", 630, "proc:/usr/bin/curl|curl http://#.#.#.#:#/update.sh|root"),
                 finding("hwl1-web-1", 640, "proc:/usr/bin/bash|bash /root/.pyenv/bin/pyenv init -|root"),
                 finding("hwl1-web-2", 2000, "proc:/usr/bin/date|date|root")]
    (tmp_path / "report.json").write_text(json.dumps({"anomalies": anomalies, "rollout_events": []}))
    assert main(["lab", "rescore", "--dir", str(tmp_path)]) == 0
    new = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "report.previous.json").exists()
    assert [a["label"] for a in new["anomalies"]] == ["dropper-web-1", "during_attack:dropper-web-1", "false_alarm"]
    assert new["summary"]["detected"] == 1 and new["summary"]["false_alarms"] == 1
    assert main(["lab", "rescore", "--dir", str(tmp_path / "nothing")]) == 2
