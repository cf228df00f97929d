"""Small builders for detector tests: observations and events at offsets from a fixed event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contract.events import Event, Kind
from detectors import FamilyEngine, Finding, Observation, RolloutEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

BASE = (
    "proc:/usr/sbin/sshd|sshd: /usr/sbin/sshd -D|root",
    "proc:/usr/sbin/nginx|nginx: worker process|www-data",
    "pc:/usr/lib/systemd/systemd>/usr/sbin/nginx",
    "listen:tcp/22@any|/usr/sbin/sshd",
    "listen:tcp/80@any|/usr/sbin/nginx",
    "dest:tcp/5432@10.0.5.0/24",
    "cfg:sshd.permitrootlogin=no",
    "cfg:file.sha256:/etc/app.conf=aa11",
    "pkg:openssh-server=1:9.6p1-3ubuntu13.5",
    "pkg:nginx=1.24.0",
    "mod:ext4",
)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def obs(
    host: str,
    image: str,
    s: float,
    added: tuple[str, ...] | list[str] = (),
    removed: tuple[str, ...] = (),
    metrics: dict[str, float] | None = None,
    family: str | None = None,
    first: bool = False,
    gone: bool = False,
) -> Observation:
    return Observation(
        host,
        image,
        family or image.split("-")[0],
        at(s),
        tuple(added),
        tuple(removed),
        dict(metrics or {}),
        gone,
        first,
    )


def join(
    engine: FamilyEngine,
    image: str,
    n: int,
    s: float = 0.0,
    family: str | None = None,
    features: tuple[str, ...] = BASE,
    prefix: str | None = None,
) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        out += engine.process(
            obs(f"{prefix or image}-h{i:02d}", image, s + i * 0.01, features, family=family, first=True)
        )
    return out


def advance(engine: FamilyEngine, start: float, end: float, step: float = 10.0) -> list[Any]:
    out: list[Any] = []
    t = start
    while t <= end:
        out += engine.tick(at(t))
        t += step
    return out


def findings(out: list[Any]) -> list[Finding]:
    return [o for o in out if isinstance(o, Finding)]


def rollouts(out: list[Any]) -> list[RolloutEvent]:
    return [o for o in out if isinstance(o, RolloutEvent)]


class EventMaker:
    """Events of one host with increasing seq."""

    def __init__(self, host: str = "h1", image: str = "ami-1", family: str = "web") -> None:
        self.host, self.image, self.family = host, image, family
        self.seq = 0

    def __call__(self, kind: Kind, s: float, payload: dict[str, Any], seq: int | None = None) -> Event:
        e = Event(
            kind=kind,
            time=at(s),
            host_id=self.host,
            boot_id="b1",
            image_id=self.image,
            image_family=self.family,
            seq=self.seq if seq is None else seq,
            payload=payload,
        )
        self.seq = e.seq + 1
        return e


def drive_job_catches(
    clones: Any,
    replay: Any,
    cycles: int,
    jobs: tuple[dict[str, str], ...],
    catch: float,
    seed: int,
    miner: tuple[int, float] | None = None,
    parent_exe: str | None = None,
    mark: Any = None,
) -> None:
    """Drive `clones` through `replay` for `cycles` collector cycles. Each cycle every clone catches each job's
    short-lived child with probability `catch` (a /proc poll seeing a process that lives milliseconds), gone by
    the next cycle. `miner` = (host index, event-time second) starts a crypto miner there; `mark` may rewrite
    each cycle's events (e.g. to say the agent polls)."""
    import random

    rng = random.Random(seed)
    caught: dict[int, list[int]] = {}
    for cycle in range(cycles):
        t = cycle * clones.cycle
        when = clones.at(t)
        if miner is not None and t == miner[1]:
            clones.attack(clones.hosts[miner[0]], "cryptominer", exe="/tmp/.x/xmrig")
        for i, host in enumerate(clones.hosts):
            for pid in caught.pop(i, []):
                host.exit_process(pid)
            if cycle > 0:
                for job in jobs:
                    if rng.random() < catch:
                        proc = host.start_process(dict(job), **({"parent_exe": parent_exe} if parent_exe else {}))
                        caught.setdefault(i, []).append(proc["pid"])
            events = clones.step(host, when)
            for event in mark(events) if mark else events:
                replay.feed(event)
        replay.tick(when)
