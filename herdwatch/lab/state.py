"""The lab's state file (var/lab/<lab_id>/state.json, and var/lab/current naming the live lab): every
namespace, link, process and path the lab made, its hosts and its ground truth. Written after every
change, so `herdwatch lab down` removes everything even after the lab's driver crashed."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class HostRecord:
    slot: str
    """The host's place in the fleet (web-0, web-1, ...): replacements keep it, host ids change."""
    host_id: str
    image: str
    image_id: str
    family: str
    ns: str
    ip: str
    veth: str
    unshare_pid: int = 0
    init_pid: int = 0
    """PID 1 of the host's PID namespace, as seen from the lab's side (for nsenter and signals)."""
    first: str = ""
    last: str = ""
    alive: bool = True


@dataclass
class ProcessRecord:
    what: str
    pid: int
    create_time: float


@dataclass
class LabState:
    lab_id: str
    lab_dir: str
    subnet: str
    """The first three octets of the lab's /24, e.g. 10.213.47."""
    bridge: str
    bridge_mac: str
    topic_prefix: str
    kafka_root: str
    kafka_port: int
    controller_port: int
    lab_port: int
    """The broker's listener on the bridge address (what the hosts' agents bootstrap from)."""
    started: str
    warmup_s: float = 60.0
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    created_paths: list[str] = field(default_factory=list)
    """Mount targets the lab had to create on this machine (removed by `down` when still empty)."""
    hosts: list[HostRecord] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    life: list[dict[str, Any]] = field(default_factory=list)
    next_index: int = 10
    pushed: dict[str, list[str]] = field(default_factory=dict)
    """family -> /etc/hosts lines pushed to it: a host the family gains later boots with them too."""
    web_slots: int = 0
    """How many web slots (web-0 ..) the fleet plans; the jobs' peer checks are spread over them."""
    ended: str = ""

    @property
    def path(self) -> Path:
        return Path(self.lab_dir) / "state.json"

    @property
    def bridge_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def attacker_ip(self) -> str:
        return f"{self.subnet}.250"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def live_hosts(self) -> list[HostRecord]:
        return [h for h in self.hosts if h.alive]

    def host(self, slot_or_id: str) -> HostRecord:
        for h in self.live_hosts():
            if slot_or_id in (h.slot, h.host_id):
                return h
        names = ", ".join(f"{h.slot} ({h.host_id})" for h in self.live_hosts())
        raise LookupError(f"no live lab host {slot_or_id!r}; live hosts: {names or 'none'}")

    @classmethod
    def load(cls, path: Path) -> LabState:
        raw = json.loads(path.read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        raw["hosts"] = [HostRecord(**h) for h in raw.get("hosts", [])]
        return cls(**raw)


def labs_dir(var: Path) -> Path:
    return var / "lab"


def current_file(var: Path) -> Path:
    return labs_dir(var) / "current"


def load_current(var: Path) -> LabState | None:
    """The lab `herdwatch lab up` made last and `down` has not removed (None: no lab)."""
    pointer = current_file(var)
    if not pointer.exists():
        return None
    path = Path(pointer.read_text().strip()) / "state.json"
    return LabState.load(path) if path.exists() else None
