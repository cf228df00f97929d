"""Scenario files: a fleet (images, cohorts), its normal fleet-wide events, and injected scenarios.

A scenario file is YAML (see simulator/scenarios/*.yaml and docs/simulator.md). Loading
checks every field and says how to fix a mistake. The ground truth of a run (which host was compromised
when, which family rolled out when) follows from the file and the seed, before any event is generated.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(__file__).parent / "scenarios"
ROLES_FILE = Path(__file__).parent / "roles.yaml"

COMPROMISES = (
    "cryptominer",
    "reverse_shell",
    "backdoor_port",
    "sshd_tamper",
    "authorized_key",
    "exfiltration",
    "ssh_break_in",
    "kernel_module",
)
"""Host compromises: each must be reported on its host."""
HOST_KINDS = (*COMPROMISES, "stale_image")
COHORT_KINDS = ("rollout", "rollback")
FLEET_EVENT_KINDS = ("traffic_spike", "config_push", "scale_in", "drift")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the field and how to fix it."""


_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$|^\d+(?:\.\d+)?$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, where: str) -> float:
    """Seconds from 30, "30s", "5m", "1.5h", "5m30s"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).replace(" ", "")
    if not _DURATION.match(text):
        raise ScenarioError(f"{where}: {value!r} is not a duration; write e.g. 30s, 5m, 5m30s or 1h")
    return sum(float(n) * _UNITS[u or None] for n, u in _PART.findall(text))


@dataclass(frozen=True)
class ImageSpec:
    """One machine image: a role plus changes. `id` is an AMI-like id; `family` links its rollouts."""

    name: str
    id: str
    family: str
    role: str
    version: str
    packages: dict[str, str] = field(default_factory=dict)
    """Package versions set (or added) on top of the role."""
    rename_exe: dict[str, str] = field(default_factory=dict)
    """Executable path changes, e.g. a new release directory."""
    add_processes: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EphemeralSpec:
    concurrent: int
    lifetime: tuple[float, float]
    no_goodbye: float
    """Share of hosts destroyed without a goodbye (their agents just stop)."""


@dataclass(frozen=True)
class CohortSpec:
    name: str
    image: str
    hosts: int
    region: str = "eu-west-1"
    instance_type: str = "m6i.large"
    ephemeral: EphemeralSpec | None = None


@dataclass(frozen=True)
class FleetEvent:
    """A normal fleet event (not an anomaly): a traffic spike over a cohort, a config push, one host of a
    cohort scaled in (destroyed, with or without a goodbye), or hosts drifting from their image as they age
    (drift: a manual change each host of the cohort makes with probability `share` at an age in `age`)."""

    kind: str
    at: float
    duration: float
    cohort: str | None = None
    factor: float = 1.0
    key: str = ""
    value: str = ""
    host: int = 0
    """scale_in: index of the host among the cohort's initial hosts."""
    reason: str | None = "terminated: scale-in"
    """scale_in: the goodbye reason; None = the host vanishes without a goodbye."""
    changes: dict[str, str] = field(default_factory=dict)
    """drift: the configuration keys a drifting host changes, and their new values."""
    share: float = 1.0
    """drift: the share of the cohort's hosts that drift (each host decides once, from the seed)."""
    age: tuple[float, float] = (0.0, 0.0)
    """drift: a drifting host changes at a host age (time since launch) uniform in this range."""


@dataclass(frozen=True)
class Injection:
    """One scenario on top of normal life, with its ground truth window [at, at + duration)."""

    name: str
    kind: str
    cohort: str
    at: float
    duration: float | None
    """None: lasts until the end of the run."""
    host: int = 0
    """Index of the target host among the cohort's initial hosts (host scenarios)."""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    start: datetime
    duration: float
    cycle: float
    warmup: float
    """Normal life only, before any injection: the cohort baselines form (reports count it apart)."""
    inventory_every: int
    """Cycles between periodic full inventories."""
    heartbeat_every: int
    images: dict[str, ImageSpec]
    cohorts: list[CohortSpec]
    events: list[FleetEvent]
    injections: list[Injection]
    roles: dict[str, dict[str, Any]]
    path: Path | None = None
    bursts_per_hour: float | None = None
    """Overrides the roles' short metric bursts per host-hour (0 = none)."""

    def image(self, name: str) -> ImageSpec:
        return self.images[name]

    def cohort(self, name: str) -> CohortSpec:
        for c in self.cohorts:
            if c.name == name:
                return c
        raise ScenarioError(f"no cohort named {name!r}; cohorts: {', '.join(c.name for c in self.cohorts)}")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration)


@dataclass(frozen=True)
class GroundTruth:
    """What was injected: one host's compromise window, or a family's rollout window."""

    scenario: str
    kind: str
    """compromise | stale_image | rollout | rollback (host scenarios and rollouts, from `scenarios:`),
    traffic_spike | config_push (normal fleet life, from `events:`) or drift (one host's manual change after
    it was cloned, from a drift event: a host finding from then on is expected)"""
    attack: str
    """The scenario kind (cryptominer, reverse_shell, ..., rollout)."""
    host_id: str | None
    image_family: str | None
    """None: the whole fleet (a config push to every host)."""
    start: datetime
    end: datetime
    hosts: tuple[str, ...] = ()
    """Hosts involved in a rollout (the new image's hosts)."""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kind": self.kind,
            "attack": self.attack,
            "host_id": self.host_id,
            "image_family": self.image_family,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "hosts": list(self.hosts),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroundTruth:
        return cls(
            scenario=d["scenario"],
            kind=d["kind"],
            attack=d.get("attack", d["kind"]),
            host_id=d.get("host_id"),
            image_family=d.get("image_family"),
            start=_parse_time(d["start"], "start"),
            end=_parse_time(d["end"], "end"),
            hosts=tuple(d.get("hosts", ())),
            details=dict(d.get("details", {})),
        )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as e:
            raise ScenarioError(f"{where}: {value!r} is not an ISO-8601 time (write e.g. 2026-03-01T12:00:00Z)") from e
    if t.tzinfo is None:
        raise ScenarioError(f"{where}: {value!r} has no timezone; add a trailing Z for UTC")
    return t.astimezone(UTC)


def resolve_path(name_or_path: str | Path) -> Path:
    """A scenario file path, or the name of a bundled scenario ("demo", "ci")."""
    p = Path(name_or_path)
    if p.exists():
        return p
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    names = ", ".join(sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml")))
    raise ScenarioError(f"scenario {str(name_or_path)!r} not found: give a YAML file path or one of: {names}")


def load_roles(path: Path = ROLES_FILE) -> dict[str, dict[str, Any]]:
    """Role templates: the base role merged with each role's extra processes/ports/packages."""
    raw = yaml.safe_load(path.read_text())
    roles: dict[str, dict[str, Any]] = {}
    for name, r in raw.items():
        if name.startswith("_"):
            continue
        role = dict(r)
        role["processes"] = list(r.get("processes", [])) + list(r.get("extra_processes", []))
        role["listen"] = list(r.get("listen", [])) + list(r.get("extra_listen", []))
        role["packages"] = {**r.get("packages", {}), **r.get("extra_packages", {})}
        role["config"] = dict(r.get("config", {}))
        role["modules"] = list(r.get("modules", []))
        role.setdefault("life", {})
        roles[name] = role
    return roles


def load_scenario(name_or_path: str | Path, seed: int | None = None, start: datetime | None = None) -> Scenario:
    """Read and check a scenario file. `seed`/`start` override the file's values."""
    path = resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping with name, cohorts, images, scenarios")
    return parse_scenario(raw, seed=seed, start=start, path=path)


def parse_scenario(
    raw: dict[str, Any], seed: int | None = None, start: datetime | None = None, path: Path | None = None
) -> Scenario:
    where = str(path or "scenario")
    roles = load_roles()
    the_seed = int(seed if seed is not None else raw.get("seed", 0))
    t0 = start or _parse_time(raw.get("start", "2026-03-01T12:00:00Z"), f"{where}: start")
    duration = parse_duration(_need(raw, "duration", where), f"{where}: duration")
    cycle = parse_duration(raw.get("cycle", "10s"), f"{where}: cycle")
    if cycle <= 0 or duration < cycle:
        raise ScenarioError(f"{where}: cycle must be > 0 and duration >= cycle")

    images: dict[str, ImageSpec] = {}
    for i, im in enumerate(_need(raw, "images", where)):
        w = f"{where}: images[{i}]"
        name = _need(im, "name", w)
        base = images.get(im["from"]) if "from" in im else None
        if "from" in im and base is None:
            raise ScenarioError(f"{w}: 'from: {im['from']}' names no earlier image")
        role = im.get("role", base.role if base else None)
        if role not in roles:
            raise ScenarioError(f"{w}: role {role!r} is unknown; roles: {', '.join(sorted(roles))}")
        family = im.get("family", base.family if base else role)
        images[name] = ImageSpec(
            name=name,
            id=str(im.get("id") or _image_id(name)),
            family=family,
            role=role,
            version=str(im.get("version", name)),
            packages={
                **(base.packages if base else {}),
                **{k: str(v) for k, v in im.get("packages", {}).items()},
            },
            rename_exe={**(base.rename_exe if base else {}), **im.get("rename_exe", {})},
            add_processes=[*(base.add_processes if base else []), *im.get("add_processes", [])],
            config={**(base.config if base else {}), **{k: str(v) for k, v in im.get("config", {}).items()}},
        )

    cohorts: list[CohortSpec] = []
    for i, c in enumerate(_need(raw, "cohorts", where)):
        w = f"{where}: cohorts[{i}]"
        image = _need(c, "image", w)
        if image not in images:
            raise ScenarioError(f"{w}: image {image!r} is not defined under images")
        eph = None
        if "ephemeral" in c:
            e = c["ephemeral"]
            lo, hi = (parse_duration(x, f"{w}: ephemeral.lifetime") for x in e.get("lifetime", ["2m", "5m"]))
            eph = EphemeralSpec(
                concurrent=int(e.get("concurrent", 4)),
                lifetime=(lo, hi),
                no_goodbye=float(e.get("no_goodbye", 0.0)),
            )
        cohorts.append(
            CohortSpec(
                name=_need(c, "name", w),
                image=image,
                hosts=int(c.get("hosts", eph.concurrent if eph else 0)),
                region=c.get("region", "eu-west-1"),
                instance_type=c.get("instance_type", "m6i.large"),
                ephemeral=eph,
            )
        )
    cohort_names = {c.name for c in cohorts}

    events: list[FleetEvent] = []
    for i, ev in enumerate(raw.get("events", []) or []):
        w = f"{where}: events[{i}]"
        kind = _need(ev, "kind", w)
        if kind not in FLEET_EVENT_KINDS:
            raise ScenarioError(f"{w}: kind {kind!r} unknown; fleet events: {', '.join(FLEET_EVENT_KINDS)}")
        cohort = ev.get("cohort")
        if cohort is not None and cohort not in cohort_names:
            raise ScenarioError(f"{w}: cohort {cohort!r} is not defined under cohorts")
        host = int(ev.get("host", 0))
        changes: dict[str, str] = {}
        age = (0.0, 0.0)
        if kind == "drift":
            if cohort is None or not isinstance(ev.get("set"), dict) or not ev["set"]:
                raise ScenarioError(f"{w}: drift needs 'cohort: <name>' and 'set: {{key: value, ...}}' (the change "
                                    "each drifting host makes, e.g. sshd.permitrootlogin: 'yes')")
            changes = {str(k): str(v) for k, v in ev["set"].items()}
            lo, hi = (parse_duration(x, f"{w}: age") for x in (ev.get("age") or ["0s", "0s"]))
            if not 0 <= lo <= hi or not 0 < float(ev.get("share", 1.0)) <= 1:
                raise ScenarioError(f"{w}: drift needs age: [min, max] with min <= max and 0 < share <= 1")
            age = (lo, hi)
        if kind == "scale_in":
            spec = next((c for c in cohorts if c.name == cohort), None)
            if spec is None or spec.ephemeral is not None:
                raise ScenarioError(f"{w}: scale_in needs 'cohort: <name>' of a cohort that is not ephemeral")
            if not 0 <= host < spec.hosts:
                raise ScenarioError(f"{w}: host {host} is out of range; cohort {cohort} has {spec.hosts} hosts")
        events.append(
            FleetEvent(
                kind=kind,
                at=parse_duration(ev.get("at", 0) if kind == "drift" else _need(ev, "at", w), f"{w}: at"),
                duration=parse_duration(ev.get("duration", "30s"), f"{w}: duration"),
                cohort=cohort,
                factor=float(ev.get("factor", 1.0)),
                key=str(ev.get("key", "")),
                value=str(ev.get("value", "")),
                host=host,
                reason=str(ev.get("reason", "terminated: scale-in")) if ev.get("goodbye", True) else None,
                changes=changes,
                share=float(ev.get("share", 1.0)),
                age=age,
            )
        )

    injections: list[Injection] = []
    for i, sc in enumerate(raw.get("scenarios", []) or []):
        w = f"{where}: scenarios[{i}]"
        kind = _need(sc, "kind", w)
        if kind not in HOST_KINDS + COHORT_KINDS:
            raise ScenarioError(f"{w}: kind {kind!r} unknown; kinds: {', '.join(HOST_KINDS + COHORT_KINDS)}")
        cohort = _need(sc, "cohort", w)
        if cohort not in cohort_names:
            raise ScenarioError(f"{w}: cohort {cohort!r} is not defined under cohorts")
        spec = next(c for c in cohorts if c.name == cohort)
        host = int(sc.get("host", 0))
        if kind in HOST_KINDS and not 0 <= host < spec.hosts:
            raise ScenarioError(f"{w}: host {host} is out of range; cohort {cohort} has {spec.hosts} hosts")
        params = {k: v for k, v in sc.items() if k not in ("name", "kind", "cohort", "at", "duration", "host")}
        if kind in COHORT_KINDS:
            target = _need(sc, "to", w)
            if target not in images:
                raise ScenarioError(f"{w}: image {target!r} (to) is not defined under images")
            if images[target].family != images[spec.image].family:
                raise ScenarioError(
                    f"{w}: image {target!r} is in family {images[target].family!r}, "
                    f"cohort {cohort} runs family {images[spec.image].family!r}"
                )
            params["over"] = parse_duration(sc.get("over", "5m"), f"{w}: over")
            if kind == "rollback":
                params["back_over"] = parse_duration(sc.get("back_over", "2m"), f"{w}: back_over")
                params["hold"] = parse_duration(sc.get("hold", "1m"), f"{w}: hold")
                params["peak"] = float(sc.get("peak", 0.5))
        if kind == "stale_image" and "after" not in sc:
            raise ScenarioError(
                f"{w}: stale_image needs 'after: <rollout scenario name>' (the rollout that leaves this host behind)"
            )
        dur = sc.get("duration")
        injections.append(
            Injection(
                name=str(sc.get("name", f"{kind}-{i}")),
                kind=kind,
                cohort=cohort,
                at=parse_duration(sc.get("at", 0), f"{w}: at"),
                duration=None if dur is None else parse_duration(dur, f"{w}: duration"),
                host=host,
                params=params,
            )
        )
    warmup = parse_duration(raw.get("warmup", 0), f"{where}: warmup")
    for inj in injections:
        if inj.at < warmup and inj.kind != "stale_image":
            raise ScenarioError(
                f"{where}: scenario {inj.name!r} starts at {inj.at:g}s, inside the warm-up "
                f"({warmup:g}s); start it later or shorten warmup"
            )
    names = [inj.name for inj in injections]
    if len(set(names)) != len(names):
        raise ScenarioError(f"{where}: scenario names must be unique, got {names}")
    for inj in injections:
        if inj.kind == "stale_image":
            after = inj.params["after"]
            ro = next((x for x in injections if x.name == after and x.kind == "rollout"), None)
            family = images[next(c.image for c in cohorts if c.name == inj.cohort)].family
            if ro is None or images[ro.params["to"]].family != family:
                raise ScenarioError(
                    f"{where}: stale_image {inj.name!r}: 'after: {after}' must name a rollout in family {family} "
                    "(of the host's own cohort, which then leaves the host behind, or of a sibling cohort)"
                )

    return Scenario(
        name=str(raw.get("name", path.stem if path else "scenario")),
        description=str(raw.get("description", "")).strip(),
        seed=the_seed,
        start=t0,
        duration=duration,
        cycle=cycle,
        warmup=parse_duration(raw.get("warmup", 0), f"{where}: warmup"),
        inventory_every=int(raw.get("inventory_every", 30)),
        heartbeat_every=int(raw.get("heartbeat_every", 6)),
        images=images,
        cohorts=cohorts,
        events=events,
        injections=injections,
        roles=roles,
        path=path,
        bursts_per_hour=None if raw.get("bursts_per_hour") is None else float(raw["bursts_per_hour"]),
    )


def drift_at(ev: FleetEvent, index: int, host: str, launched: float, seed: int) -> float | None:
    """When (seconds into the run) `host`, launched at `launched`, makes the change of drift event number
    `index` of a scenario with `seed`; None when it does not drift. Deterministic: the simulator's fleet uses
    it, and a driver of real hosts (the lab) can use it for its own hosts to replay the same decay."""
    rng = random.Random(f"{seed}:drift:{index}:{host}")
    if rng.random() >= ev.share:
        return None
    return max(launched + rng.uniform(*ev.age), ev.at)


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ScenarioError(f"{where}: field {key!r} is missing")
    return d[key]


def _image_id(name: str) -> str:
    """A stable AMI-like id for an image name (same name, same id, whatever the seed)."""
    return "ami-0" + hashlib.sha256(name.encode()).hexdigest()[:16]
