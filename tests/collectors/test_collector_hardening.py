"""An agent nobody can stall and that writes only its own files: FIFOs, devices and symlinks planted where
probes read, links below users' home folders, stuck probes, SIGTERM with a stuck probe, file modes under
umask 022 and links planted at the spool and state paths. Everything lives under tmp_path, with the
probes pointed there."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collectors import signals
from collectors.agent import Agent
from collectors.probes import ConfigProbe, ModuleProbe
from collectors.probes.base import Emit, Probe
from collectors.probes.logins import LogFollower
from collectors.runner import ProbeRunner
from collectors.safe import read_below, read_bounded, read_text
from collectors.settings import CollectorSettings, default_state_dir
from collectors.spool import HEADER, Spool
from collectors.state import read_json, write_json
from contract.events import Kind
from contract.settings import KafkaSettings

UNREACHABLE = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit")
REPO = Path(__file__).resolve().parents[2]


def inventory(probe: ConfigProbe) -> dict[str, str]:
    """The config inventory, collected in a thread so a regression that blocks fails instead of hanging."""
    got: list[list[Emit]] = []
    worker = threading.Thread(target=lambda: got.append(probe.collect(full=True)), daemon=True)
    worker.start()
    worker.join(10)
    assert got, "the config probe blocked"
    return next(p for k, p in got[0] if k is Kind.CONFIG_INVENTORY)["items"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- reads that cannot block or follow links ----------------------------------------------------------
def test_safe_reads_refuse_fifos_devices_directories_and_links(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    secret = tmp_path / "secret"
    secret.write_text("root:$6$hash:19000::::::\n")
    link = tmp_path / "link"
    link.symlink_to(secret)
    started = time.monotonic()
    assert read_bounded(fifo, 100) is None  # returns at once: nobody writes to it
    assert time.monotonic() - started < 1
    assert read_bounded("/dev/zero", 100) is None  # a device would never end
    assert read_bounded(tmp_path, 100) is None
    assert read_bounded(link, 100) is None  # the link's target is not read
    assert read_bounded(secret, 100) == (secret.read_bytes(), False)
    assert read_bounded(secret, 4) == (b"root", True)


def test_truncation_is_reported(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    before = signals.input_truncated.value(what="test-file")
    assert read_text(big, 1000, what="test-file") == "x" * 1000
    assert signals.input_truncated.value(what="test-file") == before + 1


def test_read_below_follows_no_link_under_the_base(tmp_path: Path) -> None:
    home = tmp_path / "home/alice"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/authorized_keys").write_text("ssh-ed25519 AAAA alice\n")
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "authorized_keys").write_text("root-only content\n")
    assert read_below(home, ".ssh/authorized_keys", 1000) == (b"ssh-ed25519 AAAA alice\n", False)
    assert read_below(home, "../../etc/authorized_keys", 1000) is None
    (home / ".ssh/authorized_keys").unlink()
    (home / ".ssh/authorized_keys").symlink_to(elsewhere / "authorized_keys")
    assert read_below(home, ".ssh/authorized_keys", 1000) is None
    (home / ".ssh/authorized_keys").unlink()
    (home / ".ssh").rmdir()
    (home / ".ssh").symlink_to(elsewhere)  # ~/.ssh -> a folder the user cannot read
    assert read_below(home, ".ssh/authorized_keys", 1000) is None
    (home / ".ssh").unlink()
    (home / ".ssh").mkdir()
    os.link(elsewhere / "authorized_keys", home / ".ssh/authorized_keys")  # a hard link to another file
    assert read_below(home, ".ssh/authorized_keys", 1000) is None


def test_config_probe_is_not_stalled_by_a_fifo_and_never_reads_through_links(fake_root: Path,
                                                                            tmp_path: Path) -> None:
    keys = fake_root / "home/alice/.ssh/authorized_keys"
    keys.unlink()
    os.mkfifo(keys)  # the reproduced hang: a FIFO as authorized_keys
    (fake_root / "etc/cron.d").mkdir()
    os.mkfifo(fake_root / "etc/cron.d/pipe")
    shadow = fake_root / "etc/shadow"
    shadow.write_text("root:$6$secret-hash:19000::::::\n")
    (fake_root / "home/bob").mkdir()
    (fake_root / "home/bob/.ssh").symlink_to(fake_root / "etc")  # bob points ~/.ssh at /etc
    (fake_root / "etc/authorized_keys").write_text("not bob's\n")
    passwd = fake_root / "etc/passwd"
    passwd.write_text(passwd.read_text() + "bob:x:1001:1001::/home/bob:/bin/bash\n")
    (fake_root / "etc/systemd/system").mkdir(parents=True)
    unit = fake_root / "lib/systemd/system/evil.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/tmp/x\n")
    (fake_root / "etc/systemd/system/evil.service").symlink_to(unit)
    items = inventory(ConfigProbe(root=fake_root, proc=tmp_path / "no-proc"))
    assert "authorized_keys:alice" not in items and "authorized_keys:bob" not in items
    assert items["file.type:/etc/cron.d/pipe"] == "fifo"
    assert items["file.sha256:/etc/cron.d/pipe"] == "unreadable"
    assert items["file.link:/etc/systemd/system/evil.service"] == str(unit)
    assert "file.sha256:/etc/systemd/system/evil.service" not in items
    assert "sshd.permitrootlogin" in items  # everything else is still collected


def test_log_follower_does_not_block_on_a_fifo_or_read_through_a_link(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    os.mkfifo(log)
    follower = LogFollower(log, 1000, from_start_if_newer_than=0.0)
    started = time.monotonic()
    assert follower.read_lines() == []
    assert time.monotonic() - started < 1
    log.unlink()
    target = tmp_path / "private"
    target.write_text("Mar 1 vm sshd[9]: Failed password for root from 192.0.2.1 port 22 ssh2\n")
    log.symlink_to(target)
    assert LogFollower(log, 1000, from_start_if_newer_than=0.0).read_lines() == []


def test_module_probe_refuses_a_fifo_in_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    os.mkfifo(proc / "modules")
    assert ModuleProbe(proc=proc).collect(full=True) == [(Kind.MODULE_INVENTORY, {"items": {},
                                                                                  "available": False})]


# -- probe time budgets --------------------------------------------------------------------------------
class Stuck(Probe):
    name = "stuck"

    def __init__(self) -> None:
        super().__init__(interval=0.05, inventory_interval=None)
        self.release = threading.Event()
        self.runs = 0

    def collect(self, full: bool) -> list[Emit]:
        self.runs += 1
        self.release.wait(30)
        return [(Kind.MODULE_INVENTORY, {"items": {"late": "loaded"}})]


class Quick(Probe):
    name = "quick"

    def __init__(self) -> None:
        super().__init__(interval=0.05, inventory_interval=None)
        self.runs = 0

    def collect(self, full: bool) -> list[Emit]:
        self.runs += 1
        return [(Kind.MODULE_INVENTORY, {"items": {}})]


def test_a_stuck_probe_is_reported_once_and_skipped_while_the_others_go_on() -> None:
    runner = ProbeRunner(0.2)
    stuck, quick = Stuck(), Quick()
    stop = threading.Event()
    reported = signals.probe_stuck.value(probe="stuck")
    started = time.monotonic()
    assert runner.run(stuck, False, stop) == []
    assert 0.15 < time.monotonic() - started < 2
    for _ in range(5):
        assert runner.run(stuck, False, stop) == []  # skipped at once, not waited for again
        assert runner.run(quick, False, stop) == [(Kind.MODULE_INVENTORY, {"items": {}})]
    assert stuck.runs == 1 and quick.runs == 5
    assert signals.probe_stuck.value(probe="stuck") == reported + 1  # reported once
    assert runner.skipped["stuck"] == 5 and set(runner.stuck()) == {"stuck"}
    stuck.release.set()
    time.sleep(0.1)
    assert runner.run(stuck, False, stop) == [(Kind.MODULE_INVENTORY, {"items": {"late": "loaded"}})]
    assert runner.stuck() == {}
    assert runner.run(stuck, False, stop) != [] and stuck.runs == 2  # back on its rhythm


def test_the_agent_reports_a_stuck_probe_in_its_heartbeat(agent_settings: CollectorSettings) -> None:
    settings = agent_settings.copy(probe_timeout_s=0.2, heartbeat_interval_s=0.0)
    stuck, quick = Stuck(), Quick()
    agent = Agent(settings, UNREACHABLE, probes=[stuck, quick])
    try:
        agent.cycle(first=True)
        time.sleep(0.1)
        events = agent.cycle()
        heartbeat = next(e for e in events if e.kind is Kind.HEARTBEAT)
        assert set(heartbeat.payload["stuck_probes"]) == {"stuck"}
        assert quick.runs == 2 and stuck.runs == 1
    finally:
        stuck.release.set()
        agent.delivery.close()


AGENT_WITH_A_STUCK_PROBE = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from collectors.agent import Agent, build_probes
    from collectors.probes.base import Probe
    from collectors.settings import load_settings
    from contract.settings import KafkaSettings

    class BlockedInOpen(Probe):
        name = "blocked"
        def collect(self, full):
            os.open(sys.argv[1], os.O_RDONLY)  # a FIFO nobody writes to: blocks in the kernel for good
            return []

    logging.basicConfig(level=logging.INFO)
    settings = load_settings()
    agent = Agent(settings, KafkaSettings(), probes=[BlockedInOpen(1.0), *build_probes(settings)])
    agent.install_signal_handlers()
    print("running", flush=True)
    agent.run()
    print("stopped", agent.stop_reason, flush=True)
""")


def agent_env(tmp_path: Path, fake_root: Path, flush_s: float) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HERDWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "HERDWATCH_KAFKA_TOPIC_PREFIX": "unit", "HERDWATCH_COLLECTOR_STATE_DIR": str(tmp_path / "state"),
            "HERDWATCH_COLLECTOR_ROOT": str(fake_root), "HERDWATCH_COLLECTOR_CLOUD_METADATA": "false",
            "HERDWATCH_COLLECTOR_JOURNAL": "false", "HERDWATCH_COLLECTOR_HOST_ID": "stall-test",
            "HERDWATCH_COLLECTOR_IMAGE_ID": "ami-test",
            "HERDWATCH_COLLECTOR_AUTH_LOGS": orjson.dumps([str(tmp_path / "auth.log")]).decode(),
            "HERDWATCH_COLLECTOR_PROBE_TIMEOUT_S": "1", "HERDWATCH_COLLECTOR_SHUTDOWN_FLUSH_S": str(flush_s)}


def spooled_events(state: Path) -> list[dict]:
    events: list[dict] = []
    for segment in sorted((state / "spool").glob("*.seg")):
        data, pos = segment.read_bytes(), 0
        while pos + HEADER.size <= len(data):
            _, length, _, _, _ = HEADER.unpack_from(data, pos)
            events += orjson.loads(data[pos + HEADER.size:pos + HEADER.size + length])
            pos += HEADER.size + length
    return events


def wait_for_spool(state: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["kind"] == Kind.CONFIG_INVENTORY.value for e in spooled_events(state)):
            return
        time.sleep(0.1)
    raise AssertionError("the agent's first cycle never reached the spool")


def stop_and_time(proc: subprocess.Popen) -> tuple[float, str, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return time.monotonic() - started, out, err


def test_sigterm_ends_an_agent_with_a_stuck_probe_within_its_flush_time(fake_root: Path,
                                                                          tmp_path: Path) -> None:
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    script = tmp_path / "agent.py"
    script.write_text(AGENT_WITH_A_STUCK_PROBE)
    flush_s = 2.0
    proc = subprocess.Popen([sys.executable, str(script), str(fifo)], env=agent_env(tmp_path, fake_root, flush_s),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_spool(tmp_path / "state", proc)
    took, out, err = stop_and_time(proc)
    assert proc.returncode == 0, err
    assert took < flush_s + 3.0, f"took {took:.1f} s after SIGTERM"
    assert "stopped sigterm" in out
    assert "collector_probe_stuck" in err and "probe=blocked" in err
    kinds = [e["kind"] for e in spooled_events(tmp_path / "state")]
    assert kinds[-1] == Kind.GOODBYE.value and Kind.PROCESS_INVENTORY.value in kinds  # the others went on


def test_herdwatch_collect_is_not_stalled_by_fifos_where_it_reads(fake_root: Path, tmp_path: Path) -> None:
    keys = fake_root / "home/alice/.ssh/authorized_keys"
    keys.unlink()
    os.mkfifo(keys)
    os.mkfifo(tmp_path / "auth.log")
    flush_s = 2.0
    proc = subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "collect"],
                            env=agent_env(tmp_path, fake_root, flush_s), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_spool(tmp_path / "state", proc)
    took, _, err = stop_and_time(proc)
    assert proc.returncode == 0, err
    assert took < flush_s + 3.0, f"took {took:.1f} s after SIGTERM"
    events = spooled_events(tmp_path / "state")
    config = next(e for e in events if e["kind"] == Kind.CONFIG_INVENTORY.value)["payload"]["items"]
    assert "sshd.permitrootlogin" in config and "authorized_keys:alice" not in config
    assert events[-1]["kind"] == Kind.GOODBYE.value and events[-1]["payload"]["reason"] == "sigterm"


# -- files 0700/0600, absolute defaults, no writing through links ------------------------------------
def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_state_and_spool_are_private_under_umask_022(agent_settings: CollectorSettings, umask_022: None) -> None:
    agent = Agent(agent_settings, UNREACHABLE, probes=[Quick()])
    agent.run(once=True)
    state = agent_settings.state_dir
    found = modes(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert any(name.endswith(".seg") for name in found) and "seq.json" in found and "identity.json" in found
    for name, mode in found.items():
        expected = 0o700 if (state / name).is_dir() else 0o600
        assert mode == expected, (name, oct(mode))


def test_an_existing_world_readable_state_dir_is_made_private(agent_settings: CollectorSettings,
                                                             umask_022: None) -> None:
    (agent_settings.state_dir / "spool").mkdir(parents=True, mode=0o755)
    agent = Agent(agent_settings, UNREACHABLE, probes=[Quick()])
    agent.delivery.close()
    assert stat.S_IMODE(agent_settings.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((agent_settings.state_dir / "spool").stat().st_mode) == 0o700


def test_default_paths_are_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("HERDWATCH_COLLECTOR_")]:
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("HERDWATCH_COLLECTOR_STATE_DIR=planted\n")  # not read from the cwd
    s = CollectorSettings()
    assert s.state_dir == default_state_dir() and s.state_dir.is_absolute()
    assert all(p.is_absolute() for p in (s.root, s.proc, s.image_file, *s.auth_logs))
    assert CollectorSettings(state_dir=Path("rel/dir")).state_dir == tmp_path / "rel/dir"  # resolved at load


def test_a_symlink_planted_at_a_spool_segment_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "000000000001.seg").symlink_to(victim)  # planted before the agent starts
    spool = Spool(spool_dir)
    spool.append(b"batch", 0, 1)
    spool.close()
    assert victim.read_text() == "precious\n"
    segment = spool_dir / "000000000001.seg"
    assert not segment.is_symlink() and stat.S_IMODE(segment.stat().st_mode) == 0o600

    later = Spool(tmp_path / "spool2")
    (tmp_path / "spool2" / f"{later.write_seg:012d}.seg").symlink_to(victim)  # planted while running
    with pytest.raises(OSError):
        later.append(b"batch", 0, 1)
    assert victim.read_text() == "precious\n"


def test_a_symlink_planted_at_a_state_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "seq.json").symlink_to(victim)
    (state / "seq.json.tmp").symlink_to(victim)
    assert read_json(state / "seq.json") is None  # not read through either
    write_json(state / "seq.json", {"next": 7})
    assert victim.read_text() == "precious\n"
    assert not (state / "seq.json").is_symlink() and read_json(state / "seq.json") == {"next": 7}


def test_a_symlink_at_the_state_dir_is_refused(agent_settings: CollectorSettings, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    agent_settings.state_dir.symlink_to(real)
    with pytest.raises(RuntimeError, match="not a symlink"):
        Agent(agent_settings, UNREACHABLE, probes=[Quick()])
    assert list(real.iterdir()) == []


def test_a_fork_is_reported_with_the_program_it_execs() -> None:
    from collectors.probes import ProcessProbe

    probe = ProcessProbe()
    probe.collect(full=False)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: looks exactly like this test process until it execs
        os.close(write)
        os.read(read, 1)
        os.execv("/bin/sleep", ["sleep", "2"])
    os.close(read)
    try:
        first = [p for k, p in probe.collect(full=False) if k is Kind.PROCESS_START and p["pid"] == pid]
        assert first == []  # identical to its parent: looked at again next cycle
        parent_exe = os.readlink(f"/proc/{pid}/exe")
        os.write(write, b"x")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{pid}/exe") == parent_exe and time.monotonic() < deadline:
            time.sleep(0.01)  # until the exec happened
        started = [p for k, p in probe.collect(full=False) if k is Kind.PROCESS_START and p["pid"] == pid]
        if not started:  # caught between its new program and its command line: looked at once more, a
            time.sleep(0.1)  # cycle later
            started = [p for k, p in probe.collect(full=False) if k is Kind.PROCESS_START and p["pid"] == pid]
        assert [p["cmdline"] for p in started] == ["sleep 2"]
    finally:
        os.close(write)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
