"""The Lab: a clone fleet of real hosts on one machine, its fleet life and its teardown.

`Lab.up` makes the bridge (pinned MAC), the attacker namespace, a Kafka broker listening on the bridge
address, a stream worker and a sink (on this side, as in production), then the hosts. Everything made is
written to the state file first, so `Lab.down` (or `down_from_state` after a crash) removes it all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from herdwatch.kafka_local import LocalKafka, free_port
from herdwatch.lab import netns
from herdwatch.lab.attacks import PAYLOAD_PORT, REVERSE_SHELL_PORT, RunningAttack, start_attack, stop_attack
from herdwatch.lab.drift import Drift, apply_drift
from herdwatch.lab.images import Image, load_image
from herdwatch.lab.state import HostRecord, LabState, ProcessRecord, current_file, iso, labs_dir, now

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SUBNET = "10.213.47"
HOST_STOP_S = 25.0
READY_S = 30.0

# Real path inside a host -> its per-host copy (a folder or file under the host's fs/), bind-mounted over it.
MOUNTS = [("/etc/ssh", "etc_ssh"), ("/etc/passwd", "passwd"), ("/etc/hosts", "hosts"),
          ("/root/.ssh", "root_ssh"), ("/home", "home"), ("/var/log", "var_log"), ("/tmp", "tmp")]
LAB_USER = "deploy:x:2101:2101:lab deploy user:/home/deploy:/bin/sh\n"
MACHINE_PASSWD = Path("/etc/passwd")


def outside_reach(path: Path) -> bool:
    """True if a lab host cannot see `path`: it is under /tmp, which every host replaces with its own."""
    return path.resolve().is_relative_to("/tmp")


def other_labs(lab_id: str) -> list[str]:
    """Bridges of other labs up on this machine (every lab names its bridge `hwl<4 hex>b`)."""
    return [n for n in netns.link_list()
            if len(n) == 8 and n.startswith("hwl") and n.endswith("b") and not n.startswith(lab_id)]


class LabError(RuntimeError):
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError("the lab makes network, PID, mount and UTS namespaces and needs root: "
                              "run it as root (sudo .venv/bin/herdwatch lab ...)")


def _proc_record(what: str, pid: int) -> ProcessRecord:
    return ProcessRecord(what, pid, psutil.Process(pid).create_time())


def _same_process(rec: ProcessRecord) -> psutil.Process | None:
    try:
        p = psutil.Process(rec.pid)
        return p if abs(p.create_time() - rec.create_time) < 1.0 else None
    except psutil.Error:
        return None


def _end_group(rec: ProcessRecord, timeout: float = 15.0) -> None:
    """SIGTERM the process group the lab started, SIGKILL it after `timeout`."""
    proc = _same_process(rec)
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.wait(5)


def stray_processes(lab_dir: str, lab_id: str) -> list[psutil.Process]:
    """Processes whose command line names this lab (its folder, or one of its hosts or namespaces), but not
    this process or its ancestors: what is left of the lab however its records were lost."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] not in mine and (lab_dir in line or f"{lab_id}-" in line):
            found.append(p)
    return found


def agent_env(state: LabState, host: HostRecord, host_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    env.update({
        "HERDWATCH_KAFKA_BOOTSTRAP": f"{state.bridge_ip}:{state.lab_port}",
        "HERDWATCH_KAFKA_TOPIC_PREFIX": state.topic_prefix,
        "HERDWATCH_COLLECTOR_HOST_ID": host.host_id,
        "HERDWATCH_COLLECTOR_IMAGE_ID": host.image_id,
        "HERDWATCH_COLLECTOR_IMAGE_FAMILY": host.family,
        "HERDWATCH_COLLECTOR_STATE_DIR": str(host_dir / "state"),
        "HERDWATCH_COLLECTOR_CLOUD_METADATA": "false",
        "HERDWATCH_COLLECTOR_JOURNAL": "false",
        "HERDWATCH_COLLECTOR_AUTH_LOGS": '["/var/log/auth.log"]',
        "HERDWATCH_COLLECTOR_METRICS_INTERVAL_S": "10",
        "HERDWATCH_COLLECTOR_NETWORK_INTERVAL_S": "5",
        "HERDWATCH_COLLECTOR_LOGIN_INTERVAL_S": "5",
        "HERDWATCH_COLLECTOR_HEARTBEAT_INTERVAL_S": "30",
    })
    return env


def pipeline_env(state: LabState) -> dict[str, str]:
    from contract.settings import StorageSettings

    lab_dir = Path(state.lab_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")}
    env.update({
        "HERDWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{state.kafka_port}",
        "HERDWATCH_KAFKA_TOPIC_PREFIX": state.topic_prefix,
        "HERDWATCH_STORAGE_VAR_DIR": str(lab_dir),
        "HERDWATCH_STORAGE_DSN": StorageSettings(var_dir=lab_dir).resolved_dsn(),
        "HERDWATCH_WORKER_APP_ID": f"{state.topic_prefix}-streams",
        "HERDWATCH_WORKER_DATA_DIR": str(lab_dir / "streams"),
        "HERDWATCH_SINK_GROUP_ID": f"{state.topic_prefix}-sink",
    })
    return env


class Lab:
    def __init__(self, state: LabState) -> None:
        self.state = state
        self.python = sys.executable
        self.attacks: list[RunningAttack] = []

    @property
    def lab_dir(self) -> Path:
        return Path(self.state.lab_dir)

    # --- up ------------------------------------------------------------------------------------------
    @classmethod
    def up(cls, var: Path, subnet: str = DEFAULT_SUBNET, warmup_s: float = 60.0) -> Lab:
        require_root()
        var = var.resolve()
        if under_tmp := [str(x) for x in (REPO, Path(sys.prefix), var) if outside_reach(x)]:
            raise LabError(f"{', '.join(under_tmp)} under /tmp: every lab host mounts its own /tmp, so its "
                           "agent could not see them; use a checkout, virtualenv and lab folder outside /tmp")
        if current_file(var).exists():
            raise LabError(f"a lab is already up ({current_file(var).read_text().strip()}); "
                           f"`herdwatch lab down` removes it first")
        octets = subnet.split(".")
        if len(octets) != 3 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
            raise LabError(f"--subnet {subnet!r}: give the first three octets of a private /24, e.g. 10.213.47")
        if f"{subnet}." in netns.routes():
            raise LabError(f"{subnet}.0/24 is already routed on this machine (ip route); pick another --subnet")
        lab_id = "hwl" + secrets.token_hex(2)
        lab_dir = labs_dir(var) / lab_id
        lab_dir.mkdir(parents=True)
        kafka_port = free_port()
        state = LabState(lab_id=lab_id, lab_dir=str(lab_dir), subnet=subnet, bridge=f"{lab_id}b",
                         bridge_mac="02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5)),
                         topic_prefix=lab_id, kafka_root=str(lab_dir / "kafka"), kafka_port=kafka_port,
                         controller_port=free_port(), lab_port=free_port(), started=iso(now()), warmup_s=warmup_s)
        state.save()
        current_file(var).write_text(str(lab_dir))
        lab = cls(state)
        try:
            lab._make_network()
            lab._start_pipeline()
        except BaseException:
            lab.down()
            raise
        return lab

    def _make_network(self) -> None:
        s = self.state
        s.links.append(s.bridge)
        s.save()
        netns.make_bridge(s.bridge, s.bridge_mac, f"{s.bridge_ip}/24")
        ns, veth = f"{s.lab_id}-attacker", f"{s.lab_id}va"
        s.netns.append(ns)
        s.links.append(veth)
        s.save()
        netns.make_netns(ns, s.bridge, veth, f"{s.lab_id}pa", f"{s.attacker_ip}/24")
        self._spawn("attacker", ["ip", "netns", "exec", ns, self.python, "-m", "herdwatch.lab.workloads.attacker",
                                 str(REVERSE_SHELL_PORT), str(PAYLOAD_PORT)], self.lab_dir / "attacker.log")

    def _spawn(self, what: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=REPO)
        self.state.processes.append(_proc_record(what, proc.pid))
        self.state.save()
        return proc.pid

    def _start_pipeline(self) -> None:
        from contract.kafka_admin import ensure_topics
        from contract.settings import KafkaSettings

        s = self.state
        broker = LocalKafka(Path(s.kafka_root), s.kafka_port, s.controller_port,
                            listen=f"{s.bridge_ip}:{s.lab_port}")
        broker.start()
        ensure_topics(KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=s.topic_prefix))
        exe = shutil.which("herdwatch", path=str(Path(self.python).parent)) or "herdwatch"
        env = pipeline_env(s)
        self._spawn("worker", [exe, "worker"], self.lab_dir / "worker.log", env)
        self._spawn("sink", [exe, "sink"], self.lab_dir / "sink.log", env)

    # --- hosts ---------------------------------------------------------------------------------------
    def host_dir(self, host: HostRecord) -> Path:
        return self.lab_dir / "hosts" / host.host_id

    def add_host(self, image_name: str, slot: str | None = None) -> HostRecord:
        s = self.state
        image = load_image(image_name)
        index = s.next_index
        if index > 249:
            raise LabError("the lab's /24 is used up (hosts .10-.249); start a new lab")
        s.next_index += 1
        slot = slot or f"{image.family}-{sum(1 for h in s.hosts if h.family == image.family)}"
        host = HostRecord(slot=slot, host_id=f"{s.lab_id}-{image.family}-{index}", image=image_name,
                          image_id=image.image_id, family=image.family, ns=f"{s.lab_id}-h{index}",
                          ip=f"{s.subnet}.{index}", veth=f"{s.lab_id}v{index}")
        s.hosts.append(host)
        s.netns.append(host.ns)
        s.links.append(host.veth)
        s.save()
        netns.make_netns(host.ns, s.bridge, host.veth, f"{s.lab_id}p{index}", f"{host.ip}/24")
        self.peers_dir.mkdir(exist_ok=True)
        (self.peers_dir / slot).write_text(host.ip + "\n")
        self._prepare_files(host, image)
        self._boot(host, image)
        host.first = iso(now())
        s.save()
        return host

    def _prepare_files(self, host: HostRecord, image: Image) -> None:
        fs = self.host_dir(host) / "fs"
        for sub in ("etc_ssh", "root_ssh", "home/deploy/.ssh", "var_log", "tmp"):
            (fs / sub).mkdir(parents=True, exist_ok=True)
        (fs / "tmp").chmod(0o1777)
        (fs / "root_ssh").chmod(0o700)
        (fs / "passwd").write_text(self._image_passwd())
        (fs / "var_log" / "auth.log").touch()
        self._write_image_files(fs, image)
        for sub in ("state", "control", "logs"):
            (self.host_dir(host) / sub).mkdir(exist_ok=True)

    def _image_passwd(self) -> str:
        """The /etc/passwd every host of the lab boots with: the machine's, read once when the first host is
        prepared, plus the lab's user. Read at each boot instead, a package installed on the machine during
        a long run (it added a system user) gave every later host a passwd none of its older clones had,
        and each was reported, rightly, for drifting from them."""
        base = self.lab_dir / "passwd"
        if not base.exists():
            base.write_text(MACHINE_PASSWD.read_text() + LAB_USER)
        return base.read_text()

    def _mount_targets(self) -> None:
        """A mount needs its target: make missing ones (removed again by `down`). Before every boot: another
        lab's `down` may have removed one it had made (a host restart failed on a missing /root/.ssh)."""
        for real, _ in MOUNTS:
            target = Path(real)
            if not target.exists():
                target.mkdir(mode=0o700, parents=True)
                if real not in self.state.created_paths:
                    self.state.created_paths.append(real)
                self.state.save()

    def _write_image_files(self, fs: Path, image: Image) -> None:
        for path, text in image.files.items():
            real, name = next(((r, n) for r, n in MOUNTS if path == r or path.startswith(r + "/")), (None, None))
            if real is None or name is None:
                raise LabError(f"image {image.name}: {path} is not under a per-host copy "
                               f"({', '.join(r for r, _ in MOUNTS)})")
            dest = fs / name / path[len(real):].lstrip("/") if path != real else fs / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            if real == "/etc/ssh":  # as a hardened image ships it: only root reads sshd's configuration
                dest.chmod(0o600)
        with open(fs / "hosts", "a") as f:  # config management: a new host gets what was pushed to its family
            f.writelines(line + "\n" for line in self.state.pushed.get(image.family, []))

    @property
    def peers_dir(self) -> Path:
        """<slot> -> the address of the host holding the slot now (written by add_host), read by the jobs."""
        return self.lab_dir / "peers"

    def _peer(self, host: HostRecord) -> str:
        """What a job's {peer} becomes: a shell expression giving a web host's address at each run, spread
        evenly over the web slots web-0 .. web-(N-1) (N: state.web_slots, else the live web hosts): web-i
        checks web-(i+1) (a ring), any other host a web slot that changes every second. So no host receives
        more of the fleet's checks than its clones (when every check went to one host, that host was
        reported, rightly, for its inbound traffic). Read from peers/<slot> at each run, so a check follows
        its slot through replacements."""
        n = self.state.web_slots or sum(1 for h in self.state.live_hosts() if h.family == "web")
        tail = host.slot.rsplit("-", 1)[-1]
        if host.family == "web" and host.slot.startswith("web-") and tail.isdigit() and int(tail) < n:
            if n < 2:
                return self.state.attacker_ip
            return f"$(cat {self.peers_dir}/web-{(int(tail) + 1) % n})"
        if n < 1:
            return self.state.attacker_ip
        return f"$(cat {self.peers_dir}/web-$(( $(date +%s) % {n} )))"

    def _boot(self, host: HostRecord, image: Image) -> None:
        hd = self.host_dir(host)
        fs = hd / "fs"
        self._mount_targets()

        def fill(text: str) -> str:
            return (text.replace("{python}", self.python).replace("{peer}", self._peer(host))
                    .replace("{bastion}", self.state.bridge_ip))

        exe = shutil.which("herdwatch", path=str(Path(self.python).parent)) or "herdwatch"
        spec: dict[str, Any] = {
            "hostname": host.slot,
            "mounts": [[str(fs / name), real] for real, name in MOUNTS],
            "services": [[svc.name, [fill(a) for a in svc.cmd]] for svc in image.services],
            "jobs": [{"name": j.name, "every": j.every_s, "cmd": fill(j.cmd)} for j in image.jobs],
            "agent": {"argv": [exe, "collect"], "env": agent_env(self.state, host, hd)},
            "control_dir": str(hd / "control"),
            "log_dir": str(hd / "logs"),
        }
        import json

        (hd / "spec.json").write_text(json.dumps(spec, indent=1))
        (hd / "control" / "ready").unlink(missing_ok=True)
        argv = netns.host_command(host.ns, [self.python, "-m", "herdwatch.lab.hostinit", str(hd / "spec.json")])
        host.unshare_pid = self._spawn(f"host {host.host_id}", argv, hd / "logs" / "init.log")
        deadline = time.monotonic() + READY_S
        while not (hd / "control" / "ready").exists():
            if time.monotonic() > deadline or _same_process(self.state.processes[-1]) is None:
                raise LabError(f"host {host.host_id} did not start; see {hd / 'logs' / 'init.log'}")
            time.sleep(0.1)
        host.init_pid = self._init_pid(host.unshare_pid)
        self.state.save()

    @staticmethod
    def _init_pid(launcher: int) -> int:
        for child in psutil.Process(launcher).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "herdwatch.lab.hostinit" in child.cmdline() and child.name().startswith("python"):
                    return child.pid
        raise LabError(f"cannot find the host's PID 1 below process {launcher}")

    def _halt(self, host: HostRecord, graceful: bool = True) -> None:
        """End every process of the host (graceful: the agent says goodbye first)."""
        rec = next((p for p in self.state.processes if p.pid == host.unshare_pid), None)
        if graceful and host.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.init_pid, signal.SIGTERM)
            proc = _same_process(rec) if rec else None
            if proc is not None:
                with contextlib.suppress(psutil.TimeoutExpired):
                    proc.wait(HOST_STOP_S)
        if rec is not None:
            _end_group(rec, timeout=5)
            self.state.processes.remove(rec)
        host.init_pid = 0
        self.state.save()

    def remove_host(self, host: HostRecord, graceful: bool = True) -> None:
        self._halt(host, graceful)
        netns.delete_netns(host.ns)
        netns.delete_link(host.veth)
        self.state.netns.remove(host.ns)
        self.state.links.remove(host.veth)
        host.alive = False
        host.last = iso(now())
        self.state.save()

    # --- fleet life ----------------------------------------------------------------------------------
    def note(self, what: str, host: HostRecord | None = None, **details: Any) -> None:
        self.state.life.append({"time": iso(now()), "what": what, "host_id": host.host_id if host else None,
                                **details})
        self.state.save()

    def restart_agent(self, host: HostRecord) -> None:
        (self.host_dir(host) / "control" / "restart-agent").write_text("")
        self.note("agent_restart", host)

    def reboot(self, host: HostRecord) -> None:
        self._halt(host, graceful=True)
        self._boot(host, load_image(host.image))
        self.note("reboot", host)

    def config_push(self, family: str, line: str) -> list[HostRecord]:
        hosts = [h for h in self.state.live_hosts() if h.family == family]
        self.state.pushed.setdefault(family, []).append(line)
        for h in hosts:
            with open(self.host_dir(h) / "fs" / "hosts", "a") as f:
                f.write(line + "\n")
        self.note("config_push", None, family=family, file="/etc/hosts", hosts=[h.host_id for h in hosts])
        return hosts

    def drift(self, host: HostRecord, name: str) -> Drift:
        """A change made by hand on one host (herdwatch/lab/drift.py)."""
        drift = apply_drift(name, self.host_dir(host) / "fs", host.ns)
        self.note("drift", host, drift=name, changes=drift.changes)
        return drift

    def replace(self, host: HostRecord, image_name: str) -> HostRecord:
        """A rollout step: the host is destroyed and a host of `image_name` takes its slot."""
        self.remove_host(host)
        new = self.add_host(image_name, slot=host.slot)
        self.note("replace", new, old=host.host_id, image=image_name)
        return new

    def attack(self, name: str, host: HostRecord) -> RunningAttack:
        running = start_attack(name, host.init_pid, host.slot, host.host_id, self.state.attacker_ip, self.python)
        self.attacks.append(running)
        return running

    def stop_attack(self, running: RunningAttack) -> None:
        stop_attack(running)
        if running in self.attacks:
            self.attacks.remove(running)

    def record_truth(self, row: dict[str, Any]) -> None:
        self.state.truth.append(row)
        self.state.save()

    # --- down ----------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything the lab made; returns what was removed. Safe to call again."""
        done: list[str] = []
        for running in list(self.attacks):
            self.stop_attack(running)
        s = self.state
        for host in s.live_hosts():
            self._halt(host, graceful=False)
            host.alive, host.last = False, host.last or iso(now())
            done.append(f"host {host.host_id}")
        for rec in list(s.processes):
            _end_group(rec)
            s.processes.remove(rec)
            done.append(f"process {rec.what} ({rec.pid})")
        s.save()
        for proc in stray_processes(s.lab_dir, s.lab_id):  # a record lost or no longer matching its process
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)
                done.append(f"stray process {proc.pid}")
        broker = LocalKafka.from_root(Path(s.kafka_root), s.kafka_port, s.controller_port)
        if broker.is_running():
            broker.stop()
            done.append("kafka")
        for ns in [*s.netns, *(n for n in netns.netns_list() if n.startswith(f"{s.lab_id}-"))]:
            if ns in netns.netns_list():
                netns.delete_netns(ns)
                done.append(f"netns {ns}")
        for link in [*s.links, *(n for n in netns.link_list() if n.startswith(s.lab_id))]:
            if link in netns.link_list():
                netns.delete_link(link)
                done.append(f"link {link}")
        s.netns, s.links = [], []
        if not other_labs(s.lab_id):  # another lab's hosts may still mount them: leave them to its `down`
            for path in s.created_paths:
                with contextlib.suppress(OSError):
                    Path(path).rmdir()  # only when still empty
                    done.append(f"path {path}")
        s.created_paths = []
        s.ended = s.ended or iso(now())
        s.save()
        pointer = current_file(Path(s.lab_dir).parents[1])
        if pointer.exists() and pointer.read_text().strip() == s.lab_dir:
            pointer.unlink()
        return done

    def summary(self) -> dict[str, Any]:
        return {"lab_id": self.state.lab_id, "hosts": [asdict(h) for h in self.state.live_hosts()]}
