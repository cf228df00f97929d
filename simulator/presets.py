"""Small deterministic fleets for unit tests, benchmarks and the docs' examples.

Two ways to get one, both deterministic for a seed and ready in milliseconds:

    fleet = presets.fleet({"web": 10}, duration="15m", scenarios=[presets.attack("cryptominer", "web", 4, "5m")])
    events = list(fleet.events())           # a planned run, with its ground truth (fleet.ground_truth)

    clones = presets.Clones(8)              # clones driven by hand: the caller decides when each host
    h = clones.hosts[0]                     # reports, misbehaves, loses events or leaves
    first = clones.step(h, clones.at(0))    # hello and full inventories
    clones.attack(h, "cryptominer")         # its changes go out with the host's next batch
    later = clones.step(h, clones.at(10))

`forensics()` is the fleet of the storage tests and docs/forensics.md: queue workers whose first host is
broken into half way through the run (every event family appears in its history) and later scaled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from contract.events import Event
from simulator.attacks import ATTACKS, Attack
from simulator.fleet import Fleet
from simulator.host import SimHost
from simulator.scenarios import ImageSpec

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""Event time at which the presets start (override with `start=`)."""

MINER_EXE = "/tmp/.x/xmrig"
C2 = ("203.0.113.50", 4444)
"""Where the forensics preset's miner connects."""


def image_id(role: str, version: int = 1) -> str:
    """The AMI-like id of a preset image: `ami-<role>-<version>`."""
    return f"ami-{role}-{version}"


def attack(kind: str, cohort: str, host: int, at: str | float, duration: str | float | None = None,
           name: str | None = None, **params: Any) -> dict[str, Any]:
    """One injected scenario (the `scenarios:` entry of a scenario file), e.g. a miner on web host 4 at 5m."""
    entry: dict[str, Any] = {"name": name or f"{kind}-{cohort}-{host}", "kind": kind, "cohort": cohort,
                             "host": host, "at": at, **params}
    if duration is not None:
        entry["duration"] = duration
    return entry


def scenario(
    cohorts: dict[str, int] | None = None,
    duration: str | float = "15m",
    cycle: str | float = "10s",
    scenarios: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    events: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    images: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    seed: int = 7,
    warmup: str | float = 0,
    bursts_per_hour: float | None = None,
    name: str = "preset",
) -> dict[str, Any]:
    """A scenario mapping: per role in `cohorts` (role -> hosts) one image `ami-<role>-1` of family <role>
    and one cohort named after the role; `images` adds more (e.g. a rollout's next version)."""
    cohorts = cohorts if cohorts is not None else {"web": 10}
    return {
        "name": name,
        "seed": seed,
        "duration": duration,
        "cycle": cycle,
        "warmup": warmup,
        "bursts_per_hour": bursts_per_hour,
        "images": [{"name": image_id(role), "id": image_id(role), "role": role, "family": role} for role in cohorts]
        + list(images),
        "cohorts": [{"name": role, "image": image_id(role), "hosts": n} for role, n in cohorts.items()],
        "events": list(events),
        "scenarios": list(scenarios),
    }


def fleet(cohorts: dict[str, int] | None = None, start: datetime = T0, **kw: Any) -> Fleet:
    """A planned fleet for `scenario(cohorts, **kw)`, starting at `start`."""
    return Fleet.from_dict(scenario(cohorts, **kw), start=start)


def forensics(hosts: int = 6, minutes: int = 14, seed: int = 7, start: datetime = T0) -> Fleet:
    """Queue workers, one task process (with its database connection) a minute each. Host 0 is broken
    into half way: a root password login over SSH and its session, netcat installed, root login enabled
    in sshd_config, a miner started from /tmp that connects to 203.0.113.50:4444, a rootkit's kernel
    module loaded. It is scaled in (goodbye
    "terminated: scale-in") three quarters into the run; the others live to the end."""
    half, late = minutes * 30, minutes * 45
    return fleet(
        {"worker": hosts},
        start=start,
        duration=minutes * 60,
        cycle="30s",
        seed=seed,
        bursts_per_hour=0,
        name="forensics",
        scenarios=[
            attack("ssh_break_in", "worker", 0, half, name="break-in"),
            attack("sshd_tamper", "worker", 0, half, name="root-login"),
            attack("cryptominer", "worker", 0, half, name="miner", exe=MINER_EXE, user="www-data",
                   cmdline=f"{MINER_EXE} -o {C2[0]}:{C2[1]}", pool_ip=C2[0], pool_port=C2[1]),
            attack("kernel_module", "worker", 0, half, name="rootkit"),
        ],
        events=[{"kind": "scale_in", "cohort": "worker", "host": 0, "at": late}],
    )


@dataclass
class Run:
    """A planned fleet generated in full: every event in order, and the ground truth as dicts (the
    format of a run's ground_truth.json, which `herdwatch backtest --truth` reads)."""

    events: list[Event]
    truth: list[dict[str, Any]]
    fleet: Fleet

    def write_jsonl(self, path: str | Path) -> None:
        """The events as a backtest input file (one envelope per line)."""
        with open(path, "wb") as f:
            for event in self.events:
                f.write(orjson.dumps(event.to_dict()) + b"\n")


def run(fleet: Fleet) -> Run:
    """Generate `fleet` in full."""
    return Run(list(fleet.events()), fleet.ground_truth_dicts(), fleet)


@dataclass
class HostHistory:
    """One host's whole telemetry, in order."""

    host_id: str
    events: list[Event]

    @property
    def first(self) -> datetime:
        return self.events[0].time

    @property
    def last(self) -> datetime:
        return self.events[-1].time


def histories(fleet: Fleet) -> list[HostHistory]:
    """Every host's events, hosts in plan order (each cohort's initial hosts first, in index order)."""
    by_host: dict[str, list[Event]] = {host_id: [] for host_id in fleet.plans}
    for event in fleet.events():
        by_host[event.host_id].append(event)
    return [HostHistory(host_id, events) for host_id, events in by_host.items() if events]


class Clones:
    """Clones of one image, driven by hand, for tests and benchmarks that decide themselves when each host
    reports (`step`, `heartbeat`), misbehaves (`attack`), loses events (`host.seq += n`) or leaves
    (`goodbye`). Hosts are the simulator's own (`SimHost`): same processes, sockets, packages, config and
    metrics as in a scenario run. Metric bursts are off, so the only surprises are the ones asked for."""

    def __init__(
        self,
        hosts: int,
        role: str = "web",
        image: str | None = None,
        family: str | None = None,
        start: datetime = T0,
        seed: int = 7,
        cycle: float = 10.0,
    ) -> None:
        self.role = role
        self.image = image or image_id(role)
        self.family = family or role
        self.start = start
        self.cycle = cycle
        raw = scenario({role: hosts}, duration="720h", cycle=cycle, seed=seed, bursts_per_hour=0, name="clones")
        raw["images"] = [{"name": self.image, "id": self.image, "role": role, "family": self.family}]
        raw["cohorts"] = [{"name": self.family, "image": self.image, "hosts": hosts}]
        self.fleet = Fleet.from_dict(raw, start=start)
        self.hosts: list[SimHost] = [self.fleet.make_host(h) for h in self.fleet.initial[self.family]]

    @property
    def packages(self) -> dict[str, str]:
        """The packages of the clones' image."""
        return dict(self.fleet.images[self.image].packages)

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def add_image(self, image: str, packages: dict[str, str] | None = None,
                  rename_exe: dict[str, str] | None = None, config: dict[str, str] | None = None) -> str:
        """A new version of the clones' image (same role and family) with these changes; returns its id."""
        base = self.fleet.scenario.images[self.image]
        spec = ImageSpec(name=image, id=image, family=self.family, role=self.role, version=image,
                         packages={**base.packages, **(packages or {})},
                         rename_exe={**base.rename_exe, **(rename_exe or {})},
                         add_processes=list(base.add_processes), config={**base.config, **(config or {})})
        self.fleet.add_image(spec)
        return image

    def add_hosts(self, n: int, image: str | None = None, at: float = 0.0) -> list[SimHost]:
        """`n` more hosts of `image` (default: the clones' image), launched `at` seconds into the run."""
        new = [self.fleet.make_host(self.fleet.add_host(self.family, image or self.image, at)) for _ in range(n)]
        self.hosts += new
        return new

    def step(self, host: SimHost, when: datetime, traffic: float = 1.0) -> list[Event]:
        """One collector cycle of `host` at `when`: hello and inventories the first time, then its changes,
        metrics, and now and then a heartbeat or a periodic inventory."""
        t = (when - self.start).total_seconds()
        sc = self.fleet.scenario
        level = {"base": 1.0, "traffic": traffic}
        cycle_no = round(t / self.cycle)
        return host.step(t, when, self.cycle, level, cycle_no, sc.inventory_every, sc.heartbeat_every)

    def heartbeat(self, host: SimHost, when: datetime) -> list[Event]:
        """A batch with only a heartbeat (nothing else changed)."""
        return host.heartbeat(when)

    def goodbye(self, host: SimHost, when: datetime, reason: str = "shutdown") -> list[Event]:
        """The host's last batch: its goodbye."""
        return host.goodbye(when, reason)

    def attack(self, host: SimHost, kind: str, **params: Any) -> Attack:
        """Start an attack (simulator/attacks.py, e.g. "cryptominer") on `host` now; the changes it makes go
        out with the host's next `step`. `stop` undoes it."""
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r}; attacks: {', '.join(sorted(ATTACKS))}")
        a = ATTACKS[kind](kind, params)
        a.begin(host)
        return a

    def stop(self, host: SimHost, attack: Attack) -> None:
        attack.end(host)

