"""Bad input from a live system: vanishing processes, unreadable /proc entries, non-UTF-8 bytes, huge
cmdlines and environments, garbage in /proc/net, clock jumps. Each has a clear outcome; none raises."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from collectors.agent import Agent
from collectors.probes import NetworkProbe, ProcessProbe
from collectors.probes.logins import LogFollower
from collectors.safe import absent, clean
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings

UNREACHABLE = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit")


@pytest.fixture
def spawn() -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(args: list, **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(args, **kw)  # type: ignore[call-overload]
        procs.append(p)
        first = os.fsencode(args[0]) + b"\0"
        for _ in range(300):  # until the child has exec'd (before that it shows our cmdline)
            if Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(first):
                break
            time.sleep(0.01)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_clean_replaces_invalid_utf8_and_flags_it() -> None:
    text, truncated, invalid = clean(b"caf\xe9 \xff\x00x\n\ty", 100)
    assert text == "caf\ufffd \ufffd x y" and invalid and not truncated
    orjson.dumps(text)  # encodable: a lone surrogate would not be
    assert clean("/tmp/a\udcffb", 100)[:3] == ("/tmp/a\ufffdb", False, True)
    assert clean("x" * 50, 10) == ("x" * 10, True, False)


def test_absent_turns_process_errors_into_none() -> None:
    def raise_(e: BaseException) -> None:
        raise e
    for err in (psutil.NoSuchProcess(1), psutil.AccessDenied(1), psutil.ZombieProcess(1), PermissionError(),
                FileNotFoundError(), ProcessLookupError()):
        assert absent(lambda e=err: raise_(e)) is None  # type: ignore[misc]
    with pytest.raises(ValueError):
        absent(lambda: raise_(ValueError("a real bug is not hidden")))


def test_huge_cmdline_and_environment_are_truncated_and_flagged(spawn) -> None:
    big_args = ["a" * 10_000 for _ in range(20)]
    env = {**os.environ, **{f"BIG{i}": "e" * 100_000 for i in range(10)}}
    p = spawn(["sh", "-c", "sleep 30; true", *big_args], env=env)
    item = ProcessProbe(max_cmdline_chars=4096).read(p.pid)
    assert item is not None
    assert item["cmdline_truncated"] is True and len(item["cmdline"]) == 4096
    assert item["cmdline"].startswith("sh -c sleep 30; true aaaa")
    assert "eeee" not in orjson.dumps(item).decode()  # environment blocks are never read


def test_non_utf8_cmdline_and_exe_path(spawn, tmp_path: Path) -> None:
    odd_dir = Path(os.fsdecode(bytes(tmp_path) + b"/bin\xff\xfe"))
    odd_dir.mkdir()
    exe = odd_dir / "sh"
    shutil.copy("/bin/sh", exe)
    p = spawn([os.fsencode(exe), b"-c", b"sleep 30; true", b"arg\xc3\x28end"])
    item = ProcessProbe().read(p.pid)
    assert item is not None and item["invalid_utf8"] is True
    assert item["exe"].endswith("/bin\ufffd\ufffd/sh")
    assert item["cmdline"].endswith("arg\ufffd(end")
    orjson.dumps(item)


def test_vanished_process_is_absent_and_not_reported(spawn) -> None:
    p = spawn(["sleep", "30"])
    probe = ProcessProbe()
    probe.collect(full=False)
    p.kill()
    p.wait()
    assert probe.read(p.pid) is None
    out = probe.collect(full=False)
    assert (Kind.PROCESS_EXIT, probe_exit(out, p.pid)) in out


def probe_exit(out: list, pid: int) -> dict:
    return next(payload for kind, payload in out if kind is Kind.PROCESS_EXIT and payload["pid"] == pid)


def test_process_vanishing_mid_read(spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = ProcessProbe()
    probe.collect(full=False)
    p = spawn(["sleep", "30"])

    def gone(self: psutil.Process) -> float:
        raise psutil.NoSuchProcess(self.pid)
    monkeypatch.setattr(psutil.Process, "create_time", gone)  # vanishes between readdir and the read
    out = probe.collect(full=False)
    assert not [1 for kind, pl in out if kind is Kind.PROCESS_START and pl["pid"] == p.pid]


def test_unreadable_proc_fields_are_left_empty(spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    p = spawn(["sleep", "30"])

    def denied(self: object) -> None:
        raise psutil.AccessDenied(p.pid)
    # what the kernel does for another user's process without CAP_SYS_PTRACE (psutil's Linux layer)
    monkeypatch.setattr(psutil._pslinux.Process, "exe", denied)
    monkeypatch.setattr(psutil._pslinux.Process, "uids", denied)
    item = ProcessProbe().read(p.pid)
    assert item is not None and item["exe"] == "" and item["user"] == "" and item["cmdline"] == "sleep 30"


def test_unreadable_or_garbage_proc_net(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net/tcp").write_text("header\n  0: zzzz:0050 00000000:0000 0A 0 0 0 0 0 0 12345\n garbage\n"
                                  "  1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:0 0 0 0 0 777\n")
    (proc / "net/udp").mkdir()  # a directory where a file should be: unreadable
    probe = NetworkProbe(proc=proc, source="proc")  # the /proc/net mode, used where netlink is refused
    out = probe.collect(full=True)
    inventory = next(p for k, p in out if k is Kind.NET_INVENTORY)
    assert inventory["items"] == [{"state": "listen", "proto": "tcp", "laddr": "127.0.0.1", "lport": 8080,
                                   "raddr": "", "rport": 0, "pid": 0, "exe": "", "user": ""}]


def test_huge_and_non_utf8_auth_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_bytes(b"")
    follower = LogFollower(log, max_bytes=1_000_000)
    assert follower.read_lines() == []
    log.write_bytes(b"x" * 20_000 + b"\nvm sshd[1]: Failed password for b\xffd from 1.2.3.4 port 1 ssh2\n")
    lines = follower.read_lines()
    assert len(lines[0]) == 4096 and lines[1].endswith("for b\ufffdd from 1.2.3.4 port 1 ssh2")


def test_clock_jump_is_reported_and_does_not_disturb_probes(agent_settings: CollectorSettings) -> None:
    wall = [1_800_000_000.0]
    mono = [1000.0]
    agent = Agent(agent_settings, UNREACHABLE, probes=[], wall=lambda: wall[0], mono=lambda: mono[0])
    agent.cycle(first=True)
    wall[0] += 3600 + 1  # NTP step forward by an hour while one second passes
    mono[0] += 1
    events = agent.cycle()
    heartbeat = next(e for e in events if e.kind is Kind.HEARTBEAT)
    assert heartbeat.payload["clock_jumps_s"] == [3600.0]
    wall[0] -= 7200 - 1  # and back by two hours
    mono[0] += 1
    events = agent.cycle()
    assert next(e for e in events if e.kind is Kind.HEARTBEAT).payload["clock_jumps_s"] == [-7200.0]
    assert [e.seq for e in events] == [agent.seq.next - 1]  # seq keeps counting whatever the clock says
    agent.delivery.close()
