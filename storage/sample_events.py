"""A small synthetic host history (snapshots + changes of every family), for tests, the benchmark and
the examples in docs/forensics.md. Deterministic for a given seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contract.events import Event, HostIdentity, Kind
from contract.ids import new_event_id

BASE_PROCS = ["/usr/sbin/sshd", "/usr/sbin/nginx", "/usr/lib/systemd/systemd", "/usr/sbin/cron",
              "/usr/bin/containerd", "/usr/sbin/rsyslogd"]
BASE_CONFIG = {"sshd.permitrootlogin": "no", "sshd.passwordauthentication": "no",
               "sysctl.net.ipv4.ip_forward": "0", "file.mode:/etc/shadow": "0640"}
BASE_PACKAGES = {"openssl": "3.0.13", "nginx": "1.24.0", "openssh-server": "9.6p1"}


def proc(pid: int, exe: str, user: str = "root", ppid: int = 1, start: float = 0.0) -> dict[str, Any]:
    return {"pid": pid, "ppid": ppid, "exe": exe, "name": exe.rsplit("/", 1)[-1], "cmdline": exe,
            "user": user, "start_time": start, "parents": ["/usr/lib/systemd/systemd"]}


def sock(state: str, lport: int, raddr: str = "", rport: int = 0, pid: int = 0, exe: str = "") -> dict[str, Any]:
    return {"state": state, "proto": "tcp", "laddr": "0.0.0.0" if state == "listen" else "10.0.0.5",
            "lport": lport, "raddr": raddr, "rport": rport, "pid": pid, "exe": exe}


@dataclass
class HostHistory:
    """Builds one host's events in order, with a correct per-host seq."""

    host: HostIdentity
    t: datetime
    seq: int = 0
    events: list[Event] = field(default_factory=list)

    def emit(self, kind: Kind, payload: dict[str, Any], after: float = 1.0) -> Event:
        self.t += timedelta(seconds=after)
        e = Event(kind=kind, time=self.t, host_id=self.host.host_id, boot_id=self.host.boot_id,
                  image_id=self.host.image_id, image_family=self.host.image_family, seq=self.seq,
                  payload=payload, tags=self.host.tags,
                  event_id=new_event_id(int(self.t.timestamp() * 1000)))
        self.seq += 1
        self.events.append(e)
        return e


def host_identity(i: int, image: str = "ami-0base", family: str = "web") -> HostIdentity:
    return HostIdentity(host_id=f"i-{i:05x}", boot_id=f"boot-{i:05x}", image_id=image, image_family=family,
                        tags={"cloud.provider": "aws", "cloud.region": "eu-west-1"})


def normal_host(i: int, start: datetime, minutes: int = 14, rng: random.Random | None = None,
                image: str = "ami-0base", compromised: bool = False) -> HostHistory:
    """A host's life: hello, snapshots, some churn, metrics each minute, goodbye. A compromised host
    runs /tmp/.x/xmrig, connects to 203.0.113.50:4444 and turns on root SSH login half way."""
    rng = rng or random.Random(i)
    h = HostHistory(host_identity(i, image), start)
    h.emit(Kind.HELLO, {"agent_version": "0.1.0", "boot_time": start.timestamp(), "hostname": h.host.host_id})
    procs = [proc(100 + n, exe, start=start.timestamp()) for n, exe in enumerate(BASE_PROCS)]
    h.emit(Kind.PROCESS_INVENTORY, {"items": procs})
    h.emit(Kind.NET_INVENTORY, {"items": [sock("listen", 22, pid=100, exe=BASE_PROCS[0]),
                                          sock("listen", 443, pid=101, exe=BASE_PROCS[1])]})
    h.emit(Kind.CONFIG_INVENTORY, {"items": dict(BASE_CONFIG)})
    h.emit(Kind.PACKAGE_INVENTORY, {"items": dict(BASE_PACKAGES), "manager": "dpkg"})
    h.emit(Kind.MODULE_INVENTORY, {"items": {"ext4": "loaded", "overlay": "loaded"}})
    h.emit(Kind.LOGIN_INVENTORY, {"items": []})
    next_pid = 2000
    for minute in range(minutes):
        h.emit(Kind.METRICS, {"values": {"cpu_pct": rng.uniform(5, 30), "mem_pct": rng.uniform(20, 40),
                                         "conns": float(rng.randint(5, 50))}}, after=20)
        worker = proc(next_pid, "/usr/bin/python3", user="www-data", ppid=101, start=h.t.timestamp())
        h.emit(Kind.PROCESS_START, worker)
        h.emit(Kind.NET_OPEN, sock("established", 40000 + minute, "10.0.1.9", 5432, next_pid,
                                   "/usr/bin/python3"))
        h.emit(Kind.NET_CLOSE, sock("established", 40000 + minute, "10.0.1.9", 5432, next_pid,
                                    "/usr/bin/python3"), after=5)
        h.emit(Kind.PROCESS_EXIT, worker, after=5)
        next_pid += 1
        if compromised and minute == minutes // 2:
            h.emit(Kind.AUTH_ATTEMPT, {"user": "root", "outcome": "success", "source": "198.51.100.7",
                                       "method": "password", "service": "sshd"})
            h.emit(Kind.LOGIN_INVENTORY, {"items": [{"user": "root", "terminal": "pts/0",
                                                     "host": "198.51.100.7", "started": h.t.timestamp()}]})
            h.emit(Kind.CONFIG_CHANGE, {"key": "sshd.permitrootlogin", "before": "no", "after": "yes"})
            miner = proc(6666, "/tmp/.x/xmrig", user="www-data", ppid=101, start=h.t.timestamp())
            h.emit(Kind.PROCESS_START, miner)
            h.emit(Kind.NET_OPEN, sock("established", 51000, "203.0.113.50", 4444, 6666, "/tmp/.x/xmrig"))
            h.emit(Kind.PACKAGE_CHANGE, {"key": "netcat", "before": None, "after": "1.10-47"})
    h.emit(Kind.GOODBYE, {"reason": "terminated"}, after=10)
    return h


def fleet(n_hosts: int, start: datetime, minutes: int = 14, compromised: tuple[int, ...] = (0,),
          seed: int = 7) -> list[HostHistory]:
    rng = random.Random(seed)
    out = []
    for i in range(n_hosts):
        offset = timedelta(minutes=rng.randint(0, 60))
        out.append(normal_host(i, start + offset, minutes, rng, compromised=i in compromised))
    return out

