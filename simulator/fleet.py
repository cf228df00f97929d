"""The simulated fleet: cohorts of clones living their normal lives, with scenarios injected on top.

    fleet = Fleet.from_scenario("demo", seed=7)
    for cycle in fleet.cycles():          # event-time order, one entry per collector cycle
        for host_id, events in cycle.batches:
            ...                           # one batch = one Kafka message of the real collector
    fleet.ground_truth                    # known before the first event: what was injected, where, when

The whole life of the fleet is planned up front from the scenario and the seed (which hosts exist when,
which are replaced by a rollout, which ephemeral workers come and go), so the ground truth is known
before generation starts and a run is reproducible event for event.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from contract.events import Event
from simulator.attacks import ATTACKS, Attack
from simulator.host import Image, SimHost
from simulator.scenarios import (
    COMPROMISES,
    FleetEvent,
    GroundTruth,
    ImageSpec,
    Injection,
    Scenario,
    drift_at,
    load_scenario,
    parse_duration,
    parse_scenario,
)


@dataclass
class HostPlan:
    """One host's planned life: launched at `start`, destroyed at `end` (None: lives to the end)."""

    host_id: str
    cohort: str
    image: str
    start: float
    end: float | None = None
    goodbye: str | None = "shutdown"
    """The goodbye reason sent when destroyed; None = destroyed without a goodbye."""
    role: str = ""


@dataclass
class Cycle:
    """One collector cycle of the whole fleet: each live host's batch, in event-time order."""

    index: int
    time: datetime
    """End of the cycle (every batch of the cycle is at or before it): the time to `tick` detectors at."""
    batches: list[tuple[str, list[Event]]]


class Fleet:
    """Generates a scenario's telemetry, host by host and cycle by cycle."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.seed = scenario.seed
        self.cycle = scenario.cycle
        self.n_cycles = round(scenario.duration / scenario.cycle)
        self.images = {name: _build_image(spec, scenario) for name, spec in scenario.images.items()}
        self.plans: dict[str, HostPlan] = {}
        self.initial: dict[str, list[str]] = {}
        """Each cohort's hosts at the start, in order (scenario `host: N` indexes this list)."""
        self.ground_truth: list[GroundTruth] = []
        self._attacks: dict[int, list[tuple[str, str, Attack]]] = {}
        self._drifts: dict[int, list[tuple[str, dict[str, str]]]] = {}
        """cycle -> (host, configuration changes) of drift events."""
        self._rng = random.Random(f"{self.seed}:plan")
        self._plan()

    @classmethod
    def from_scenario(cls, path: str | Path, seed: int | None = None, start: datetime | None = None) -> Fleet:
        """A fleet for a scenario file (or a bundled scenario name like "demo"); `seed` overrides the file."""
        return cls(load_scenario(path, seed=seed, start=start))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], seed: int | None = None, start: datetime | None = None) -> Fleet:
        """A fleet for a scenario given as a mapping (the YAML file's content), e.g. a preset's."""
        return cls(parse_scenario(raw, seed=seed, start=start))

    # --- planning -----------------------------------------------------------------------------------

    def _new_host_id(self) -> str:
        while True:
            host_id = f"i-0{self._rng.getrandbits(64):016x}"
            if host_id not in self.plans:
                return host_id

    def _add(self, cohort: str, image: str, start: float, end: float | None = None) -> HostPlan:
        plan = HostPlan(self._new_host_id(), cohort, image, self._snap(start), end, role=self.images[image].role)
        self.plans[plan.host_id] = plan
        return plan

    def _snap(self, t: float) -> float:
        """Round a time up to the cycle grid (changes happen at collector cycles)."""
        return min(self.n_cycles - 1, math.ceil(t / self.cycle - 1e-9)) * self.cycle

    def _plan(self) -> None:
        sc = self.scenario
        for c in sc.cohorts:
            self.initial[c.name] = [self._add(c.name, c.image, 0.0).host_id for _ in range(c.hosts)]
            if c.ephemeral:
                self._plan_ephemeral(c.name, c.image, c.ephemeral.lifetime, c.ephemeral.no_goodbye)
        for ev in sc.events:
            if ev.kind == "scale_in" and ev.cohort is not None:
                plan = self.plans[self.initial[ev.cohort][ev.host]]
                plan.end, plan.goodbye = max(self.cycle, self._snap(ev.at)), ev.reason
        stale_targets = {
            i.params["after"]: self.initial[i.cohort][i.host]
            for i in sc.injections
            if i.kind == "stale_image" and _rollout_cohort(sc, i.params["after"]) == i.cohort
        }
        rollout_end: dict[str, float] = {}
        for inj in sc.injections:
            if inj.kind in ("rollout", "rollback"):
                rollout_end[inj.name] = self._plan_rollout(inj, stale_targets.get(inj.name))
        for inj in sc.injections:
            if inj.kind in COMPROMISES:
                self._plan_attack(inj)
            elif inj.kind == "stale_image":
                host_id = self.initial[inj.cohort][inj.host]
                plan = self.plans[host_id]
                self.ground_truth.append(
                    GroundTruth(
                        scenario=inj.name,
                        kind="stale_image",
                        attack="stale_image",
                        host_id=host_id,
                        image_family=self.images[plan.image].family,
                        start=self._at(rollout_end[inj.params["after"]]),
                        end=self._at(plan.end if plan.end is not None else self.n_cycles * self.cycle),
                        details={
                            "image_id": self.images[plan.image].id,
                            "left_behind_by": inj.params["after"],
                        },
                    )
                )

        for i, ev in enumerate(sc.events):
            if ev.kind == "drift":
                self._plan_drift(i, ev)
        for i, ev in enumerate(sc.events):  # normal fleet life: findings in these windows are false alarms
            if ev.kind in ("scale_in", "drift"):
                continue  # one host less is not a window of unusual behaviour; drift is per host
            family = self.images[sc.cohort(ev.cohort).image].family if ev.cohort else None
            self.ground_truth.append(
                GroundTruth(
                    scenario=f"{ev.kind}-{i}",
                    kind=ev.kind,
                    attack=ev.kind,
                    host_id=None,
                    image_family=family,
                    start=self._at(self._snap(ev.at)),
                    end=self._at(ev.at + ev.duration + self.cycle),
                    details={"cohort": ev.cohort, "factor": ev.factor}
                    if ev.kind == "traffic_spike"
                    else {"key": ev.key},
                )
            )

    def _plan_drift(self, i: int, ev: FleetEvent) -> None:
        """Each host of the cohort (replacements and later launches included) drifts with probability
        `share`, at an age uniform in `age`, if it is alive then and it is after `at`."""
        end_of_run = self.n_cycles * self.cycle
        for plan in sorted((p for p in self.plans.values() if p.cohort == ev.cohort), key=lambda p: p.host_id):
            when = drift_at(ev, i, plan.host_id, plan.start, self.seed)
            end = plan.end if plan.end is not None else end_of_run
            if when is None or when >= end_of_run:
                continue
            t = self._snap(when)
            if t >= end:
                continue
            self._drifts.setdefault(round(t / self.cycle), []).append((plan.host_id, dict(ev.changes)))
            self.ground_truth.append(
                GroundTruth(
                    scenario=f"drift-{i}-{plan.host_id}",
                    kind="drift",
                    attack="drift: " + ", ".join(f"{k}={v}" for k, v in ev.changes.items()),
                    host_id=plan.host_id,
                    image_family=self.images[plan.image].family,
                    start=self._at(t),
                    end=self._at(end),
                    details={"changes": dict(ev.changes), "age_s": round(t - plan.start, 1),
                             "image_id": self.images[plan.image].id},
                )
            )

    def _plan_ephemeral(self, cohort: str, image: str, lifetime: tuple[float, float], no_goodbye: float) -> None:
        rng, end_of_run = self._rng, self.n_cycles * self.cycle
        for plan in [self.plans[h] for h in self.initial[cohort]]:
            t = plan.start
            life = rng.uniform(*lifetime) * rng.uniform(0.2, 1.0)  # the first hosts are mid-life already
            while True:
                death = self._snap(t + life)
                if death >= end_of_run - self.cycle:
                    break
                plan.end = death
                plan.goodbye = None if rng.random() < no_goodbye else "shutdown: batch job finished"
                t = death + rng.choice((1, 1, 2)) * self.cycle
                if t >= end_of_run - self.cycle:
                    break
                plan = self._add(cohort, image, t)
                life = rng.uniform(*lifetime)

    def _plan_rollout(self, inj: Injection, keep: str | None) -> float:
        """Replace the cohort's hosts by hosts of the new image, evenly over `over`; returns the end time."""
        old_hosts = [h for h in self.initial[inj.cohort] if h != keep and self.plans[h].end is None]
        old_image = self.plans[old_hosts[0]].image
        new_image = inj.params["to"]
        n = len(old_hosts)
        k = n if inj.kind == "rollout" else max(1, math.ceil(inj.params["peak"] * n))
        over = float(inj.params["over"])
        times = [self._snap(inj.at + over * i / max(1, k - 1)) for i in range(k)]
        new_hosts: list[str] = []
        for host_id, t in zip(old_hosts[:k], times, strict=True):
            self.plans[host_id].end = t
            self.plans[host_id].goodbye = "terminated: instance refresh"
            new_hosts.append(self._add(inj.cohort, new_image, t).host_id)
        end = times[-1]
        details: dict[str, Any] = {
            "old_image": self.images[old_image].id,
            "new_image": self.images[new_image].id,
            "replaced": k,
            "of": n + (1 if keep else 0),
        }
        if inj.kind == "rollback":
            back_start = end + float(inj.params["hold"])
            back = float(inj.params["back_over"])
            for i, host_id in enumerate(new_hosts):
                t = self._snap(back_start + back * i / max(1, k - 1))
                self.plans[host_id].end = t
                self.plans[host_id].goodbye = "terminated: rollback"
                self._add(inj.cohort, old_image, t)
                end = t
            details["peak_share"] = round(k / (n + (1 if keep else 0)), 3)
        self.ground_truth.append(
            GroundTruth(
                scenario=inj.name,
                kind=inj.kind,
                attack=inj.kind,
                host_id=None,
                image_family=self.images[new_image].family,
                start=self._at(self._snap(inj.at)),
                end=self._at(end + self.cycle),
                hosts=tuple(new_hosts),
                details=details,
            )
        )
        return end + self.cycle

    def _plan_attack(self, inj: Injection) -> None:
        host_id = self.initial[inj.cohort][inj.host]
        plan = self.plans[host_id]
        begin = self._snap(inj.at)
        host_end = plan.end if plan.end is not None else self.n_cycles * self.cycle
        end = host_end if inj.duration is None else min(host_end, self._snap(begin + inj.duration))
        attack = ATTACKS[inj.kind](inj.name, inj.params)
        k0, k1 = round(begin / self.cycle), round(end / self.cycle)
        self._attacks.setdefault(k0, []).append(("begin", host_id, attack))
        if inj.duration is not None and end < host_end:
            self._attacks.setdefault(k1, []).append(("end", host_id, attack))
        self.ground_truth.append(
            GroundTruth(
                scenario=inj.name,
                kind="compromise",
                attack=inj.kind,
                host_id=host_id,
                image_family=self.images[plan.image].family,
                start=self._at(begin),
                end=self._at(end),
                details={"cohort": inj.cohort, "image_id": self.images[plan.image].id, **attack.describe()},
            )
        )

    def _at(self, t: float) -> datetime:
        return self.scenario.start + timedelta(seconds=t)

    # --- generation ---------------------------------------------------------------------------------

    def cycles(self) -> Iterator[Cycle]:
        """Every collector cycle of the run, in event-time order."""
        sc = self.scenario
        launches: dict[int, list[HostPlan]] = {}
        ends: dict[int, dict[str, str | None]] = {}
        for plan in self.plans.values():
            launches.setdefault(round(plan.start / self.cycle), []).append(plan)
            if plan.end is not None:
                ends.setdefault(round(plan.end / self.cycle), {})[plan.host_id] = plan.goodbye
        live: dict[str, SimHost] = {}
        order: list[tuple[float, str]] = []
        levels = _Levels(sc, self.seed)
        pushes = _ConfigPushes(sc, self.seed)
        for k in range(self.n_cycles):
            t = k * self.cycle
            for plan in launches.get(k, ()):
                host = self._make_host(plan, t, pushes.current())
                live[plan.host_id] = host
                bisect.insort(order, (host.phase, plan.host_id))
            for action, host_id, attack in self._attacks.get(k, ()):
                if host_id in live:
                    (attack.begin if action == "begin" else attack.end)(live[host_id])
            for host_id, changes in self._drifts.get(k, ()):
                if host_id in live:
                    for key, value in changes.items():
                        live[host_id].set_config(key, value)
            pushes.apply(t, self.cycle, live)
            ending = ends.get(k, {})
            batches: list[tuple[str, list[Event]]] = []
            for phase, host_id in order:
                host = live[host_id]
                if host_id in ending and ending[host_id] is None:
                    continue  # destroyed without a goodbye: its agent just stops
                when = sc.start + timedelta(seconds=t + phase)
                events = host.step(
                    t,
                    when,
                    self.cycle,
                    levels.at(host.cohort, t),
                    k,
                    sc.inventory_every,
                    sc.heartbeat_every,
                    goodbye=ending.get(host_id),
                )
                batches.append((host_id, events))
            for host_id in ending:
                if host_id in live:
                    host = live.pop(host_id)
                    order.remove((host.phase, host_id))
            yield Cycle(k, sc.start + timedelta(seconds=t + self.cycle), batches)

    def batches(self) -> Iterator[tuple[str, list[Event]]]:
        """Every (host_id, events) batch of the run, in event-time order."""
        for cycle in self.cycles():
            yield from cycle.batches

    def events(self) -> Iterator[Event]:
        """Every event of the run, batch after batch (each host's events in `seq` order)."""
        for _host_id, events in self.batches():
            yield from events

    def write_jsonl(self, path: str | Path) -> int:
        """The run's events as a backtest input file (one envelope per line); returns the count."""
        n = 0
        with open(path, "wb") as f:
            for event in self.events():
                f.write(orjson.dumps(event.to_dict()) + b"\n")
                n += 1
        return n

    def _make_host(self, plan: HostPlan, t: float, config: dict[str, str]) -> SimHost:
        cohort = self.scenario.cohort(plan.cohort)
        rng = random.Random(f"{self.seed}:{plan.host_id}")
        az = cohort.region + "abc"[int(plan.host_id[-1], 16) % 3]
        tags = {
            "cloud.provider": "aws",
            "cloud.region": cohort.region,
            "cloud.zone": az,
            "cloud.instance_type": cohort.instance_type,
        }
        host = SimHost(
            plan.host_id,
            self.images[plan.image],
            plan.cohort,
            tags,
            rng,
            phase=rng.uniform(0.0, self.cycle * 0.9),
            launched=t,
            id_rng=random.Random(f"{self.seed}:ids:{plan.host_id}"),
        )
        host.config.update(config)
        return host

    # --- hosts outside the plan (hand-driven fleets) -------------------------------------------------

    def make_host(self, host_id: str) -> SimHost:
        """A fresh SimHost for a planned host, to drive by hand (`simulator.presets.Clones`)."""
        plan = self.plans[host_id]
        return self._make_host(plan, plan.start, {})

    def add_host(self, cohort: str, image: str, t: float) -> str:
        """Plan one more host of `image` in `cohort`, launched `t` seconds into the run; returns its id."""
        return self._add(cohort, image, t).host_id

    def add_image(self, spec: ImageSpec) -> Image:
        """Build one more image (e.g. the next version a hand-driven rollout moves to)."""
        self.images[spec.name] = _build_image(spec, self.scenario)
        return self.images[spec.name]

    # --- summary ------------------------------------------------------------------------------------

    def host_table(self) -> list[dict[str, Any]]:
        """Every planned host with its cohort, image and life span (for reports and host-hours)."""
        end_of_run = self.n_cycles * self.cycle
        return [
            {
                "host_id": p.host_id,
                "cohort": p.cohort,
                "role": p.role,
                "image": p.image,
                "image_id": self.images[p.image].id,
                "image_family": self.images[p.image].family,
                "start": self._at(p.start).isoformat(),
                "end": self._at(p.end or end_of_run).isoformat(),
                "goodbye": p.goodbye if p.end is not None else None,
            }
            for p in self.plans.values()
        ]

    def ground_truth_dicts(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self.ground_truth]


class _Levels:
    """Shared per-cohort load levels: peers move together (slow wave + a little shared noise), and a
    traffic spike lifts a whole cohort at once."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc = sc
        self.rng = random.Random(f"{seed}:levels")
        self.phase = {c.name: self.rng.uniform(0, 2 * math.pi) for c in sc.cohorts}
        self.noise = {c.name: 0.0 for c in sc.cohorts}
        self.cache: dict[str, tuple[float, dict[str, float]]] = {}

    def at(self, cohort: str, t: float) -> dict[str, float]:
        hit = self.cache.get(cohort)
        if hit is not None and hit[0] == t:
            return hit[1]
        self.noise[cohort] = 0.8 * self.noise[cohort] + self.rng.gauss(0.0, 0.01)
        base = 1.0 + 0.06 * math.sin(2 * math.pi * t / 3600.0 + self.phase[cohort]) + self.noise[cohort]
        spike = 1.0
        for ev in self.sc.events:
            if ev.kind == "traffic_spike" and ev.cohort in (None, cohort) and ev.at <= t < ev.at + ev.duration:
                ramp = min(
                    1.0,
                    (t - ev.at + self.sc.cycle) / max(self.sc.cycle, ev.duration * 0.2),
                    (ev.at + ev.duration - t) / max(self.sc.cycle, ev.duration * 0.2),
                )
                spike *= 1.0 + (ev.factor - 1.0) * max(0.0, ramp)
        level = {"base": base, "traffic": base * spike}
        self.cache[cohort] = (t, level)
        return level


class _ConfigPushes:
    """Fleet-wide configuration pushes: every live host changes the key within `duration` of `at`;
    hosts launched afterwards boot with the new value."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.pushes = [ev for ev in sc.events if ev.kind == "config_push"]
        self.rng = random.Random(f"{seed}:pushes")
        self.values = {
            i: ev.value or hashlib.sha256(f"{ev.key}@{ev.at}".encode()).hexdigest() for i, ev in enumerate(self.pushes)
        }
        self.due: dict[int, dict[str, float]] = {}
        self.done: dict[str, str] = {}

    def current(self) -> dict[str, str]:
        return self.done

    def apply(self, t: float, cycle: float, live: dict[str, SimHost]) -> None:
        for i, ev in enumerate(self.pushes):
            if i not in self.due and t >= ev.at:
                self.due[i] = {h: ev.at + self.rng.uniform(0, ev.duration) for h in sorted(live)}
                self.done[ev.key] = self.values[i]
            due = self.due.get(i)
            if not due:
                continue
            for host_id in [h for h, at in due.items() if at < t + cycle]:
                del due[host_id]
                host = live.get(host_id)
                if host is not None and (ev.cohort is None or host.cohort == ev.cohort):
                    host.set_config(ev.key, self.values[i])


def _build_image(spec: ImageSpec, sc: Scenario) -> Image:
    role = sc.roles[spec.role]
    processes = []
    for p in [*role["processes"], *spec.add_processes]:
        p = dict(p)
        for old, new in spec.rename_exe.items():
            for field in ("exe", "parent"):
                if p.get(field) == old:
                    p[field] = new
            if "cmdline" in p:
                p["cmdline"] = p["cmdline"].replace(old.rsplit("/bin/", 1)[0], new.rsplit("/bin/", 1)[0])
        processes.append(p)
    listen = [{**s, "exe": spec.rename_exe.get(s["exe"], s["exe"])} for s in role["listen"]]
    life = {name: _life(name, dict(v)) for name, v in role.get("life", {}).items()}
    service = role.get("service", "/usr/lib/systemd/systemd")
    return Image(
        name=spec.name,
        id=spec.id,
        family=spec.family,
        role=spec.role,
        processes=processes,
        listen=listen,
        packages={**role["packages"], **spec.packages},
        config={str(k): str(v) for k, v in {**role["config"], **spec.config}.items()},
        modules=list(role["modules"]),
        gauges={k: (float(v[0]), float(v[1])) for k, v in role["gauges"].items()},
        rates={k: (float(v[0]), float(v[1])) for k, v in role["rates"].items()},
        life=life,
        cores=int(role.get("cores", 2)),
        mem_total=float(role.get("mem_total_bytes", 8 << 30)),
        bursts=_bursts(role, sc),
        service=spec.rename_exe.get(service, service),
    )


def _rollout_cohort(sc: Scenario, name: str) -> str | None:
    return next((i.cohort for i in sc.injections if i.name == name), None)


def _bursts(role: dict[str, Any], sc: Scenario) -> dict[str, Any]:
    spec = dict(role.get("bursts") or {})
    if sc.bursts_per_hour is not None:
        spec["per_hour"] = sc.bursts_per_hour
    return spec if spec and float(spec.get("per_hour", 0)) > 0 else {}


def _life(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    for key in ("every", "duration"):
        if key in spec:
            spec[f"{key}_s"] = parse_duration(spec[key], f"roles.yaml: {name}.{key}")
    return spec
