"""A small synthetic clone fleet, as telemetry events, for tests, the conformance suite and benchmarks.

Cohorts of identical hosts with noisy-but-normal life (web hosts: failed SSH logins from the internet and
a stream of client connections; app hosts: a config-management run restarting the service on schedule;
batch hosts: short jobs and hosts that live minutes), fleet-wide events (a traffic spike, a config push),
a clean gradual rollout, and injected compromises with their ground truth ({host_id, scenario, start,
end}). Deterministic for a seed. The full simulator lives in simulator; this one is kept small
and dependency-free so the detectors can be tested on their own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.events import Event, Kind

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

BASE_PROCS = [
    ("/usr/lib/systemd/systemd", "/sbin/init", "root"),
    ("/usr/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald", "root"),
    ("/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "root"),
    ("/usr/sbin/cron", "/usr/sbin/cron -f -P", "root"),
    ("/usr/sbin/rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", "syslog"),
]
BASE_PACKAGES = {
    "openssh-server": "1:9.6p1-3ubuntu13.5",
    "openssl": "3.0.13-0ubuntu3.4",
    "sudo": "1.9.15p5-3ubuntu5",
    "curl": "8.5.0-2ubuntu10.4",
}
BASE_CONFIG = {
    "sshd.permitrootlogin": "no",
    "sshd.passwordauthentication": "no",
    "file.sha256:/etc/ssh/sshd_config": "4d1e6a7e",
    "file.mode:/etc/shadow": "0640",
    "authorized_keys:ubuntu": "7f0e1d2c",
    "sysctl.net.ipv4.ip_forward": "0",
}
BASE_MODULES = ["ext4", "nvme", "ena", "nf_conntrack", "overlay"]

ROLES: dict[str, dict[str, Any]] = {
    "web": {
        "procs": [
            ("/usr/sbin/nginx", "nginx: master process /usr/sbin/nginx", "root"),
            ("/usr/sbin/nginx", "nginx: worker process", "www-data"),
        ],
        "listen": [("tcp", 80, "/usr/sbin/nginx"), ("tcp", 443, "/usr/sbin/nginx")],
        "dests": [("tcp", "10.0.5.21", 5432)],
        "packages": {"nginx": "1.24.0-2ubuntu7.1"},
        "metrics": {
            "cpu_pct": (28, 3),
            "mem_pct": (41, 2.5),
            "net_bytes_out": (4.5e6, 4e5),
            "conns": (120, 15),
        },
    },
    "app": {
        "procs": [
            ("/usr/lib/jvm/java-17/bin/java", "java -Xmx2g -jar /opt/orders/orders.jar", "app"),
            (
                "/opt/chef/embedded/bin/ruby",
                "ruby /opt/chef/bin/chef-client --daemonize --interval 1800",
                "root",
            ),
        ],
        "listen": [("tcp6", 8080, "/usr/lib/jvm/java-17/bin/java")],
        "dests": [("tcp", "10.0.7.10", 6379)],
        "packages": {"openjdk-17": "17.0.12+7", "chef": "18.5.0-1"},
        "config": {"file.sha256:/etc/orders/app.conf": "aa11"},
        "metrics": {"cpu_pct": (35, 3.5), "mem_pct": (62, 3), "net_bytes_out": (9e5, 9e4), "conns": (40, 5)},
    },
    "batch": {
        "procs": [("/usr/bin/python3.12", "python3 /opt/batch/worker.py --queue render", "batch")],
        "listen": [],
        "dests": [("tcp", "10.0.9.3", 5672)],
        "packages": {"ffmpeg": "7:6.1.1-3ubuntu5"},
        "metrics": {"cpu_pct": (85, 6), "mem_pct": (55, 5), "net_bytes_out": (3e5, 6e4), "conns": (6, 2)},
    },
    "api": {
        "procs": [
            ("/opt/api/releases/v42/bin/node", "node /opt/api/releases/v42/server.js", "api"),
            ("/usr/bin/envoy", "envoy -c /etc/envoy/envoy.yaml", "envoy"),
        ],
        "listen": [("tcp", 8443, "/usr/bin/envoy")],
        "dests": [("tcp", "10.0.8.4", 5432)],
        "packages": {"api-server": "4.2.0-1", "envoy": "1.30.2"},
        "metrics": {
            "cpu_pct": (22, 2.5),
            "mem_pct": (48, 2.5),
            "net_bytes_out": (2e6, 2e5),
            "conns": (60, 8),
        },
    },
}

COMPROMISES = ("cryptominer", "reverse_shell", "backdoor_port", "sshd_tamper", "authorized_key")


@dataclass
class Cohort:
    name: str
    family: str
    image: str
    role: str
    hosts: int
    ephemeral: tuple[float, float] | None = None
    """Host lifetime range in seconds (batch workers); hosts are replaced when they end."""
    role_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fleet:
    events: list[Event]
    truth: list[dict[str, Any]]
    """Ground truth: {host_id, scenario, kind, image_family, start, end} (ISO times)."""
    hosts: int
    host_hours: float
    start: datetime
    end: datetime


class _Host:
    def __init__(self, fleet: _Builder, host_id: str, cohort: Cohort, start: float, end: float) -> None:
        self.b = fleet
        self.id = host_id
        self.cohort = cohort
        self.role = {**ROLES[cohort.role], **cohort.role_overrides}
        self.start = start
        self.end = end
        self.seq = 0
        self.pid = 1000
        self.boot = f"boot-{host_id}"
        self.extra_metrics: dict[str, float] = {}
        self.extra_from = float("inf")
        self.metric_bias = {k: self.b.rng.gauss(0, sd * 0.5) for k, (_, sd) in self.role["metrics"].items()}
        self.config = {**BASE_CONFIG, **self.role.get("config", {})}

    def emit(self, t: float, kind: Kind, payload: dict[str, Any]) -> None:
        self.b.events.append(
            Event(
                kind=kind,
                time=T0 + timedelta(seconds=t),
                host_id=self.id,
                boot_id=self.boot,
                image_id=self.cohort.image,
                image_family=self.cohort.family,
                seq=self.seq,
                payload=payload,
                tags={},
                event_id=f"{self.id}-{self.seq}",
            )
        )
        self.seq += 1

    def next_pid(self) -> int:
        self.pid += self.b.rng.randint(1, 40)
        return self.pid

    def boot_events(self, t: float) -> None:
        r = self.role
        self.emit(t, Kind.HELLO, {"agent_version": "0.1.0", "boot_time": 0, "hostname": self.id})
        procs = []
        for exe, cmd, user in BASE_PROCS + r["procs"]:
            procs.append(
                {
                    "pid": self.next_pid(),
                    "ppid": 1,
                    "exe": exe,
                    "cmdline": cmd,
                    "user": user,
                    "start_time": 0,
                    "name": exe.rsplit("/", 1)[-1],
                }
            )
        self.emit(t, Kind.PROCESS_INVENTORY, {"items": procs})
        socks = [{"state": "listen", "proto": "tcp", "laddr": "0.0.0.0", "lport": 22, "exe": "/usr/sbin/sshd"}]
        socks += [
            {"state": "listen", "proto": p, "laddr": "0.0.0.0", "lport": port, "exe": exe}
            for p, port, exe in r["listen"]
        ]
        socks += [
            {
                "state": "established",
                "proto": p,
                "laddr": "10.1.0.5",
                "lport": 40000 + i,
                "raddr": a,
                "rport": port,
            }
            for i, (p, a, port) in enumerate(r["dests"])
        ]
        self.emit(t, Kind.NET_INVENTORY, {"items": socks})
        self.emit(t, Kind.CONFIG_INVENTORY, {"items": dict(self.config)})
        self.emit(t, Kind.PACKAGE_INVENTORY, {"items": {**BASE_PACKAGES, **r["packages"]}, "manager": "dpkg"})
        self.emit(t, Kind.MODULE_INVENTORY, {"items": {m: "loaded" for m in BASE_MODULES}})
        self.emit(t, Kind.LOGIN_INVENTORY, {"items": []})

    def cycle(self, t: float, factor: float) -> None:
        rng = self.b.rng
        values = {}
        for k, (mean, sd) in self.role["metrics"].items():
            scale = factor if k in ("net_bytes_out", "conns") else 1.0
            bump = 15.0 * (factor - 1.0) if k == "cpu_pct" else 0.0
            values[k] = max(0.0, mean * scale + bump + self.metric_bias[k] + rng.gauss(0, sd * 0.6))
        if t >= self.extra_from:
            for k, v in self.extra_metrics.items():
                values[k] = values.get(k, 0.0) + v
        if self.cohort.role == "web":  # the internet knocks all day
            for _ in range(rng.randint(0, 4)):
                self.emit(
                    t,
                    Kind.AUTH_ATTEMPT,
                    {
                        "user": rng.choice(["root", "admin", "oracle", "test"]),
                        "outcome": "failure",
                        "source": f"198.51.100.{rng.randint(1, 254)}",
                        "method": "password",
                        "service": "sshd",
                    },
                )
            for _ in range(rng.randint(2, 6)):
                octets = (rng.randint(11, 200), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
                raddr = ".".join(map(str, octets))
                sock = {
                    "state": "established",
                    "proto": "tcp",
                    "laddr": "10.1.0.5",
                    "lport": 443,
                    "raddr": raddr,
                    "rport": rng.randint(1024, 65000),
                    "pid": 0,
                    "exe": "/usr/sbin/nginx",
                }
                self.emit(t, Kind.NET_OPEN, sock)
                self.emit(t + 1, Kind.NET_CLOSE, sock)
        self.emit(t, Kind.METRICS, {"values": values})


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.events: list[Event] = []
        self.truth: list[dict[str, Any]] = []
        self.host_seconds = 0.0
        self.hosts = 0


def _iso(t: float) -> str:
    return (T0 + timedelta(seconds=t)).isoformat()


def build_fleet(
    cohorts: list[Cohort] | None = None,
    duration_s: float = 3600.0,
    cycle_s: float = 10.0,
    seed: int = 7,
    compromises: list[tuple[str, str, int, float]] | None = None,
    rollout: tuple[str, str, float, float] | None = ("api", "api-v43", 900.0, 45.0),
    spike: tuple[str, float, float] | None = ("web", 1500.0, 300.0),
    push: tuple[str, float] | None = ("app", 2100.0),
) -> Fleet:
    """Generate a fleet's events (sorted by time) and ground truth.

    compromises: (scenario, cohort name, host index, at seconds); rollout: (cohort name, new image, start,
    seconds between host replacements); spike: (cohort, at, duration); push: (cohort, at).
    """
    cohorts = cohorts if cohorts is not None else default_cohorts()
    compromises = compromises if compromises is not None else default_compromises()
    b = _Builder(seed)
    rng = b.rng
    by_name = {c.name: c for c in cohorts}
    hosts: list[_Host] = []
    counter = 0

    def launch(c: Cohort, at: float, end: float | None = None) -> _Host:
        nonlocal counter
        counter += 1
        life = end if end is not None else (at + rng.uniform(*c.ephemeral) if c.ephemeral else duration_s)
        h = _Host(b, f"i-{c.name}-{counter:04d}", c, at, min(life, duration_s))
        hosts.append(h)
        b.hosts += 1
        return h

    initial: dict[str, list[_Host]] = {}
    for c in cohorts:
        initial[c.name] = [launch(c, rng.uniform(0, 20)) for _ in range(c.hosts)]
    # A clean gradual rollout: every `gap` seconds one old host is replaced by a new-image host.
    if rollout:
        name, new_image, start, gap = rollout
        old = by_name[name]
        new = Cohort(
            f"{name}2",
            old.family,
            new_image,
            old.role,
            0,
            role_overrides={
                "procs": [
                    ("/opt/api/releases/v43/bin/node", "node /opt/api/releases/v43/server.js", "api"),
                    ("/usr/bin/envoy", "envoy -c /etc/envoy/envoy.yaml", "envoy"),
                ],
                "packages": {"api-server": "4.3.0-1", "envoy": "1.31.0"},
                "config": {"file.sha256:/etc/envoy/envoy.yaml": "bb22"},
            },
        )
        for i, h in enumerate(initial[name]):
            at = start + i * gap
            h.end = min(h.end, at)
            launch(new, at + 5)
        b.truth.append(
            {
                "host_id": None,
                "scenario": "rollout",
                "kind": "rollout",
                "image_family": old.family,
                "start": _iso(start),
                "end": _iso(start + gap * len(initial[name]) + 60),
            }
        )
    # Replacements for ephemeral hosts.
    for c in cohorts:
        if c.ephemeral:
            frontier = list(initial[c.name])
            while frontier:
                h = frontier.pop()
                if h.end < duration_s - 30:
                    frontier.append(launch(c, h.end + rng.uniform(1, 15)))
    for scenario, cname, idx, at in compromises:
        h = initial[cname][idx]
        if at >= min(h.end, duration_s):
            continue  # after the run (or the host) ends: nothing to inject
        _inject(h, scenario, at, min(h.end, duration_s))
        b.truth.append(
            {
                "host_id": h.id,
                "scenario": scenario,
                "kind": scenario,
                "image_family": h.cohort.family,
                "start": _iso(at),
                "end": _iso(min(h.end, duration_s)),
            }
        )
    # Host timelines.
    spike_cohort, spike_at, spike_len = spike if spike else ("", -1.0, 0.0)
    for h in hosts:
        h.boot_events(h.start)
        t = h.start + cycle_s
        phase = rng.uniform(0, 240)
        while t < h.end:
            factor = 3.0 if h.cohort.name == spike_cohort and spike_at <= t < spike_at + spike_len else 1.0
            if h.cohort.role == "app" and (t - phase) % 240 < cycle_s:
                _config_run(h, t)
            if h.cohort.role == "batch" and (t - phase) % 40 < cycle_s:
                _batch_job(h, t)
            h.cycle(t, factor)
            t += cycle_s
        if h.end < duration_s and rng.random() < 0.8:
            h.emit(h.end, Kind.GOODBYE, {"reason": "terminated"})
        b.host_seconds += h.end - h.start
    if spike:
        b.truth.append(
            {
                "host_id": None,
                "scenario": "traffic_spike",
                "kind": "traffic_spike",
                "image_family": by_name[spike_cohort].family,
                "start": _iso(spike_at),
                "end": _iso(spike_at + spike_len),
            }
        )
    if push:
        name, at = push
        for h in initial[name]:
            if h.start <= at < h.end:
                t = at + rng.uniform(0, 60)
                h.emit(
                    t,
                    Kind.CONFIG_CHANGE,
                    {"key": "file.sha256:/etc/orders/app.conf", "before": "aa11", "after": "cc33"},
                )
        b.truth.append(
            {
                "host_id": None,
                "scenario": "config_push",
                "kind": "config_push",
                "image_family": by_name[name].family,
                "start": _iso(at),
                "end": _iso(at + 300),
            }
        )
    b.events.sort(key=lambda e: (e.time, e.host_id, e.seq))
    seqs: dict[str, int] = {}
    for i, e in enumerate(b.events):  # number each host's events in time order
        n = seqs.get(e.host_id, 0)
        seqs[e.host_id] = n + 1
        if e.seq != n:
            b.events[i] = e.replace(seq=n)
    return Fleet(b.events, b.truth, b.hosts, b.host_seconds / 3600.0, T0, T0 + timedelta(seconds=duration_s))


def write_jsonl(fleet: Fleet, path: str) -> None:
    """The fleet's events as a backtest input file (one envelope per line)."""
    import orjson

    with open(path, "wb") as f:
        for e in fleet.events:
            f.write(orjson.dumps(e.to_dict()) + b"\n")


def default_cohorts() -> list[Cohort]:
    return [
        Cohort("web", "web", "ami-web-1", "web", 24),
        Cohort("app", "app", "ami-app-1", "app", 16),
        Cohort("batch", "batch", "ami-batch-1", "batch", 10, ephemeral=(240.0, 900.0)),
        Cohort("api", "api", "ami-api-42", "api", 12),
    ]


def default_compromises() -> list[tuple[str, str, int, float]]:
    return [
        ("cryptominer", "web", 3, 600.0),
        ("reverse_shell", "web", 7, 1200.0),
        ("backdoor_port", "app", 2, 1800.0),
        ("sshd_tamper", "app", 5, 2400.0),
        ("authorized_key", "web", 11, 3000.0),
    ]


def _config_run(h: _Host, t: float) -> None:
    """Config management converges: a chef run, and the service restarts (new pid, same identity)."""
    pid = h.next_pid()
    chef = {
        "pid": pid,
        "ppid": 1,
        "exe": "/opt/chef/embedded/bin/ruby",
        "cmdline": f"ruby /opt/chef/bin/chef-client --once --no-fork --run-id {pid * 7919}",
        "user": "root",
        "parents": ["/usr/lib/systemd/systemd"],
    }
    h.emit(t, Kind.PROCESS_START, chef)
    java = {
        "pid": h.next_pid(),
        "ppid": 1,
        "exe": "/usr/lib/jvm/java-17/bin/java",
        "cmdline": "java -Xmx2g -jar /opt/orders/orders.jar",
        "user": "app",
        "parents": ["/usr/lib/systemd/systemd"],
    }
    h.emit(t + 2, Kind.PROCESS_START, java)
    h.emit(t + 8, Kind.PROCESS_EXIT, chef)


def _batch_job(h: _Host, t: float) -> None:
    job = {
        "pid": h.next_pid(),
        "ppid": 1,
        "exe": "/usr/bin/ffmpeg",
        "user": "batch",
        "cmdline": f"ffmpeg -i /scratch/job-{h.b.rng.randint(1, 99999)}/in.mov -c:v libx264 /tmp/tmpa{h.pid}xq.mp4",
        "parents": ["/usr/bin/python3.12"],
    }
    h.emit(t, Kind.PROCESS_START, job)
    h.emit(t + 30, Kind.PROCESS_EXIT, job)


def _inject(h: _Host, scenario: str, at: float, end: float) -> None:
    if scenario == "cryptominer":
        p = {
            "pid": h.next_pid(),
            "ppid": 1,
            "exe": "/tmp/.x/xmrig",
            "cmdline": "/tmp/.x/xmrig -o pool:3333 --donate 1",
            "user": "www-data",
            "parents": ["/bin/sh", "/usr/sbin/nginx"],
        }
        h.emit(at, Kind.PROCESS_START, p)
        h.emit(
            at + 1,
            Kind.NET_OPEN,
            {
                "state": "established",
                "proto": "tcp",
                "laddr": "10.1.0.5",
                "lport": 51000,
                "raddr": "185.71.65.9",
                "rport": 3333,
                "pid": p["pid"],
                "exe": p["exe"],
            },
        )
        h.extra_metrics["cpu_pct"] = 65.0
        h.extra_from = at
    elif scenario == "reverse_shell":
        p = {
            "pid": h.next_pid(),
            "ppid": 0,
            "exe": "/bin/bash",
            "cmdline": "bash -i",
            "user": "www-data",
            "parents": ["/usr/sbin/nginx"],
        }
        h.emit(at, Kind.PROCESS_START, p)
        h.emit(
            at + 1,
            Kind.NET_OPEN,
            {
                "state": "established",
                "proto": "tcp",
                "laddr": "10.1.0.5",
                "lport": 52344,
                "raddr": "203.0.113.66",
                "rport": 4444,
                "pid": p["pid"],
                "exe": "/bin/bash",
            },
        )
    elif scenario == "backdoor_port":
        p = {
            "pid": h.next_pid(),
            "ppid": 1,
            "exe": "/usr/bin/ncat",
            "cmdline": "ncat -lk -p 31337 -e /bin/sh",
            "user": "app",
            "parents": ["/usr/lib/jvm/java-17/bin/java"],
        }
        h.emit(at, Kind.PROCESS_START, p)
        h.emit(
            at + 1,
            Kind.NET_OPEN,
            {
                "state": "listen",
                "proto": "tcp",
                "laddr": "0.0.0.0",
                "lport": 31337,
                "pid": p["pid"],
                "exe": "/usr/bin/ncat",
            },
        )
    elif scenario == "sshd_tamper":
        h.emit(at, Kind.CONFIG_CHANGE, {"key": "sshd.permitrootlogin", "before": "no", "after": "yes"})
        h.emit(
            at,
            Kind.CONFIG_CHANGE,
            {"key": "file.sha256:/etc/ssh/sshd_config", "before": "4d1e6a7e", "after": "99ee0001"},
        )
    elif scenario == "authorized_key":
        h.emit(at, Kind.CONFIG_CHANGE, {"key": "authorized_keys:root", "before": None, "after": "5eed5eed"})
    else:
        raise ValueError(f"unknown compromise {scenario!r}; known: {', '.join(COMPROMISES)}")
