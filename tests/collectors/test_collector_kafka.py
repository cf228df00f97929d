"""The agent against the real broker: every probe's events arrive, decode with the contract, keyed by
host_id, one message per cycle, with contiguous sequence numbers."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from collector_helpers import read_events

from collectors.agent import Agent
from collectors.probes import (
    ConfigProbe,
    LoginProbe,
    MetricsProbe,
    ModuleProbe,
    NetworkProbe,
    PackageProbe,
    ProcessProbe,
)
from collectors.settings import CollectorSettings
from contract.events import Event, Kind
from contract.settings import KafkaSettings

pytestmark = pytest.mark.integration


def fast_probes(settings: CollectorSettings, fake_proc: Path) -> list:
    processes = ProcessProbe(0.3, 600)
    network = NetworkProbe(0.3, 600, full_scan_s=0)  # owner-scan pacing has its own unit test
    logins = LoginProbe(0.3, 600, auth_logs=settings.auth_logs, boot_time=0)
    return [processes, network, logins,
            MetricsProbe(0.5, procs=lambda: len(processes.known), conns=lambda: network.count,
                         failed_logins=lambda: logins.failed_total),
            ConfigProbe(0.3, 600, root=settings.root),
            PackageProbe(0.3, 600, root=settings.root),
            ModuleProbe(0.3, 600, proc=fake_proc)]


def test_every_probe_publishes_through_kafka(kafka_settings: KafkaSettings, agent_settings: CollectorSettings,
                                             fake_root: Path, fake_proc: Path, tmp_path: Path) -> None:
    settings = agent_settings.copy(heartbeat_interval_s=1.0)
    auth_log = settings.auth_logs[0]
    auth_log.write_text("")
    agent = Agent(settings, kafka_settings, probes=fast_probes(settings, fake_proc))
    runner = threading.Thread(target=agent.run, kwargs={"duration": 7.0})
    runner.start()
    time.sleep(1.5)

    # things the probes must notice
    child = subprocess.Popen(["sleep", "1.5"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with open(auth_log, "a") as f:
        f.write("Mar  1 12:00:00 vm sshd[42]: Failed password for invalid user admin from 203.0.113.9 "
                "port 5 ssh2\n"
                "Mar  1 12:00:01 vm sshd[43]: Accepted publickey for alice from 198.51.100.7 port 6 ssh2\n")
    sshd = fake_root / "etc/ssh/sshd_config"
    sshd.write_text(sshd.read_text().replace("PermitRootLogin no", "PermitRootLogin yes"))
    with open(fake_root / "var/lib/dpkg/status", "a") as f:
        f.write("\nPackage: netcat-openbsd\nStatus: install ok installed\nVersion: 1.219-1\n")
    with open(fake_proc / "modules", "a") as f:
        f.write("rootkit_mod 1 0 - Live 0x0\n")
    time.sleep(2.5)
    child.wait()
    listener.close()
    runner.join(timeout=30)
    assert not runner.is_alive()

    messages = read_events(kafka_settings, until=agent.seq.next)
    events: list[Event] = [e for _, _, batch in messages for e in batch]
    host = settings.host_id or ""
    assert {key for key, _, _ in messages} == {host.encode()}
    assert len({part for _, part, _ in messages}) == 1
    assert [e.seq for e in events] == list(range(agent.seq.next))  # contiguous, in order, no duplicates
    for _, _, batch in messages:  # one message = one cycle: its events share one time
        assert len({e.time for e in batch}) == 1
    kinds = {e.kind for e in events}
    assert kinds == set(Kind), f"missing: {set(Kind) - kinds}"
    assert events[0].kind is Kind.HELLO and events[-1].kind is Kind.GOODBYE
    assert all(e.image_id == "ami-test" and e.image_family == "test-family" and e.host_id == host
               for e in events)

    def of(kind: Kind) -> list[dict]:
        return [e.payload for e in events if e.kind is kind]

    starts = [p for p in of(Kind.PROCESS_START) if p["pid"] == child.pid]
    assert starts and starts[0]["cmdline"] == "sleep 1.5"
    assert starts[0]["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert starts[0]["parents"][0] == psutil.Process().exe()  # the parent chain starts at this test
    assert any(p["pid"] == child.pid for p in of(Kind.PROCESS_EXIT))
    opened = [p for p in of(Kind.NET_OPEN) if p["lport"] == port and p["state"] == "listen"]
    assert opened and opened[0]["pid"] == os.getpid()
    assert any(p["lport"] == port for p in of(Kind.NET_CLOSE))
    attempts = of(Kind.AUTH_ATTEMPT)
    assert {"user": "admin", "outcome": "failure", "source": "203.0.113.9", "method": "password",
            "service": "sshd"} in attempts
    assert any(a["outcome"] == "success" and a["user"] == "alice" for a in attempts)
    assert {"key": "sshd.permitrootlogin", "before": "no", "after": "yes"} in of(Kind.CONFIG_CHANGE)
    assert {"key": "netcat-openbsd", "before": None, "after": "1.219-1"} in of(Kind.PACKAGE_CHANGE)
    assert {"key": "rootkit_mod", "before": None, "after": "loaded"} in of(Kind.MODULE_CHANGE)
    inventory = of(Kind.CONFIG_INVENTORY)[0]["items"]
    assert inventory["sshd.x11forwarding"] == "yes" and inventory["user.alice"].startswith("1000:")
    assert "authorized_keys:alice" in inventory and "sudoers.sha256" in inventory
    assert of(Kind.PACKAGE_INVENTORY)[0]["items"]["openssh-server"] == "1:9.2p1-2"
    assert "removed-thing" not in of(Kind.PACKAGE_INVENTORY)[0]["items"]
    assert any(m["values"].get("failed_logins", 0) >= 1 for m in of(Kind.METRICS))
    assert of(Kind.HEARTBEAT)[0]["events_dropped"] == 0
    assert of(Kind.GOODBYE)[0]["reason"] == "duration"
