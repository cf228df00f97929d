"""A small synthetic clone fleet, for the stream tests, the benchmark and trying a worker by hand.

Every host of an image runs the same processes and listeners and reports a batch per collector cycle:
a heartbeat, metrics, and a few short-lived cron processes (which change nothing in the cohort). A host
can be made to misbehave (start a miner), and a family can be rolled out to a new image.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.events import Event, HostIdentity, Kind

BASE_PROCS = [("/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D", "root"),
              ("/usr/sbin/nginx", "nginx: master process /usr/sbin/nginx", "root"),
              ("/usr/sbin/nginx", "nginx: worker process", "www-data"),
              ("/usr/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald", "root")]
CRON = ("/usr/sbin/logrotate", "/usr/sbin/logrotate /etc/logrotate.conf", "root")
MINER = ("/tmp/.x/xmrig", "/tmp/.x/xmrig -o pool.example.net:3333", "nobody")


@dataclass
class SampleHost:
    identity: HostIdentity
    seq: int = 0
    pids: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    next_pid: int = 1000
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def host_id(self) -> str:
        return self.identity.host_id

    def event(self, kind: Kind, payload: dict[str, Any], t: datetime) -> Event:
        e = Event.new(self.identity, kind, self.seq, payload, time=t)
        self.seq += 1
        return e

    def proc(self, pid: int, exe: str, cmdline: str, user: str) -> dict[str, Any]:
        return {"pid": pid, "ppid": 1, "exe": exe, "cmdline": cmdline, "user": user, "name": exe.rsplit("/")[-1],
                "start_time": 0, "parents": ["/usr/lib/systemd/systemd"]}


class SampleFleet:
    """Hosts cloned from `image` (family `family`), with event time starting at `start`."""

    def __init__(self, hosts: int, image: str = "ami-0abc", family: str = "web", prefix: str = "h",
                 start: datetime | None = None, seed: int = 7) -> None:
        self.image, self.family = image, family
        self.rng = random.Random(seed)
        self.start = start or datetime.now(UTC)
        self.hosts = [self._host(f"{prefix}{i:04d}", image) for i in range(hosts)]
        self.packages = {"openssl": "3.0.13", "nginx": "1.24.0", "openssh-server": "1:9.6p1-3ubuntu13.5"}

    def _host(self, host_id: str, image: str) -> SampleHost:
        ident = HostIdentity(host_id=host_id, boot_id=f"boot-{host_id}", image_id=image,
                             image_family=self.family, tags={"cloud.provider": "test"})
        return SampleHost(ident)

    def add_hosts(self, n: int, image: str, prefix: str) -> list[SampleHost]:
        new = [self._host(f"{prefix}{i:04d}", image) for i in range(n)]
        self.hosts += new
        return new

    def hello(self, h: SampleHost, t: datetime, packages: dict[str, str] | None = None) -> list[Event]:
        """The first batch of a host: hello and full inventories."""
        items = []
        for exe, cmd, user in BASE_PROCS:
            h.pids[h.next_pid] = (exe, cmd, user)
            items.append(h.proc(h.next_pid, exe, cmd, user))
            h.next_pid += 1
        h.packages = dict(packages or self.packages)
        return [
            h.event(Kind.HELLO, {"agent_version": "test", "boot_time": t.timestamp() - 60,
                                 "hostname": h.host_id}, t),
            h.event(Kind.PROCESS_INVENTORY, {"items": items}, t),
            h.event(Kind.NET_INVENTORY, {"items": [
                {"state": "listen", "proto": "tcp", "laddr": "0.0.0.0", "lport": 80, "raddr": "", "rport": 0,
                 "pid": 1001, "exe": "/usr/sbin/nginx"},
                {"state": "listen", "proto": "tcp", "laddr": "0.0.0.0", "lport": 22, "raddr": "", "rport": 0,
                 "pid": 1000, "exe": "/usr/sbin/sshd"}]}, t),
            h.event(Kind.CONFIG_INVENTORY, {"items": {"sshd.permitrootlogin": "no",
                                                      "sysctl.net.ipv4.ip_forward": "0"}}, t),
            h.event(Kind.PACKAGE_INVENTORY, {"items": h.packages, "manager": "dpkg"}, t),
        ]

    def cycle(self, h: SampleHost, t: datetime, events: int = 10, cpu: float | None = None) -> list[Event]:
        """One collector cycle: heartbeat, metrics and cron process churn up to `events` events."""
        cpu = cpu if cpu is not None else 20.0 + self.rng.uniform(-2.0, 2.0)
        out = [h.event(Kind.HEARTBEAT, {"events_sent": h.seq, "events_dropped": 0}, t),
               h.event(Kind.METRICS, {"values": {"cpu_pct": cpu, "mem_pct": 41.0 + self.rng.uniform(-1, 1),
                                                 "load1": 0.5 + self.rng.uniform(0, 0.1)}}, t)]
        while len(out) + 2 <= events:
            pid = h.next_pid
            h.next_pid += 1
            exe, cmd, user = CRON
            out.append(h.event(Kind.PROCESS_START, h.proc(pid, exe, cmd, user), t))
            out.append(h.event(Kind.PROCESS_EXIT, h.proc(pid, exe, cmd, user), t))
        return out

    def miner(self, h: SampleHost, t: datetime) -> list[Event]:
        """The misbehaviour: a crypto miner started from /tmp (kept running)."""
        pid = h.next_pid
        h.next_pid += 1
        h.pids[pid] = MINER
        return [h.event(Kind.PROCESS_START, h.proc(pid, *MINER), t)]

    def goodbye(self, h: SampleHost, t: datetime) -> list[Event]:
        return [h.event(Kind.GOODBYE, {"reason": "shutdown"}, t)]

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)
