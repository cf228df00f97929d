"""Samples are not a census: a polling agent catches a periodic job's short-lived child (or its short
connection) on some clones at some times. Such a sighting leaves the host's features at once instead of
lingering, so "1 of N hosts shows it" is never judged on it; what lives longer is judged as before.

Found in the lab (herdwatch lab run --plan ci / --plan long): after a rollout to a new image (no history yet)
the jobs' children (`curl .../health`, `sh -c hostname; date -u >> /var/log/app.log`) and their
connections (`dest:tcp/8080@local`) were reported as rare on the clone that happened to catch them."""

from __future__ import annotations

from typing import Any

from det_helpers import EventMaker, drive_job_catches

from contract.events import Event, Kind
from contract.findings import FindingKind
from detectors import EngineConfig, FamilyEngine, HostState
from detectors.backtest import Replay
from simulator.presets import Clones

POLL = {"mode": "poll", "reason": "process events connector refused"}
JOBS = (
    {"exe": "/usr/bin/curl", "cmdline": "curl -fsS -o /dev/null http://127.0.0.1:8081/health", "user": "root",
     "name": "curl"},
    {"exe": "/usr/bin/dash", "cmdline": "/bin/sh -c hostname >/dev/null; date -u >> /var/log/app.log",
     "user": "root", "name": "sh"},
)
CURL = {"pid": 40, "ppid": 1, "exe": "/usr/bin/curl", "cmdline": "curl http://127.0.0.1:8080/health",
        "user": "root", "parents": ["/usr/bin/dash"]}
OUT = {"state": "established", "proto": "tcp", "laddr": "127.0.0.1", "lport": 41000, "raddr": "127.0.0.1",
       "rport": 8080}


def polling(source: dict[str, str] | None = POLL) -> tuple[HostState, EventMaker]:
    ev = EventMaker()
    hs = HostState("h1", "web-v2", "web")
    hs.apply(ev(Kind.HELLO, 0, {"agent_version": "1", "boot_time": 0,
                                **({"process_source": source} if source else {})}))
    return hs, ev


def test_a_process_a_polling_agent_saw_once_leaves_at_once() -> None:
    hs, ev = polling()
    o = hs.apply(ev(Kind.PROCESS_START, 10.0, CURL))
    assert o is not None and "proc:/usr/bin/curl|curl http://#.#.#.#:#/health|root" in o.added
    gone = hs.apply(ev(Kind.PROCESS_EXIT, 10.9, CURL))
    assert gone is not None and set(gone.removed) == set(o.added)
    assert not hs.linger


def test_a_longer_lived_process_and_every_process_of_a_connector_agent_still_linger() -> None:
    hs, ev = polling()
    hs.apply(ev(Kind.PROCESS_START, 10.0, CURL))
    assert hs.apply(ev(Kind.PROCESS_EXIT, 60.0, CURL)) is None  # seen for 50 s: lingers
    for source in ({"mode": "connector"}, None):  # the kernel's events are a census; older agents say nothing
        hs, ev = polling(source)
        hs.apply(ev(Kind.PROCESS_START, 10.0, CURL))
        assert hs.apply(ev(Kind.PROCESS_EXIT, 10.001, CURL)) is None


def test_a_connection_seen_once_leaves_at_once_a_long_one_lingers() -> None:
    hs, ev = polling(None)
    o = hs.apply(ev(Kind.NET_OPEN, 10.0, OUT))
    assert o is not None and o.added == ("dest:tcp/8080@local",)
    gone = hs.apply(ev(Kind.NET_CLOSE, 16.0, OUT))  # one 5 s listing plus a slow one
    assert gone is not None and gone.removed == ("dest:tcp/8080@local",)
    hs.apply(ev(Kind.NET_OPEN, 20.0, OUT))
    assert hs.apply(ev(Kind.NET_CLOSE, 140.0, OUT)) is None  # a reverse shell's connection lingers


def test_polling_state_round_trips() -> None:
    hs, ev = polling()
    hs.apply(ev(Kind.PROCESS_START, 10.0, CURL))
    hs.apply(ev(Kind.NET_OPEN, 10.0, OUT))
    again = HostState.from_dict(hs.to_dict())
    assert again.polled and set(again.born) == {"40"} and set(again.opened) == set(hs.opened)
    assert again.apply(ev(Kind.PROCESS_EXIT, 10.9, CURL)) is not None


def _poll(events: list[Event]) -> list[Event]:
    for e in events:
        if e.kind in (Kind.HELLO, Kind.HEARTBEAT):
            e.payload["process_source"] = dict(POLL)
    return events


def run_new_image(minutes: float, catch: float, seed: int = 5, miner_at: float | None = None) -> list[Any]:
    """4 fresh clones of a new image (no history: the first minutes after a rollout), a 1 s polling agent
    that catches each job's child in a listing with probability `catch` (gone by the next listing)."""
    clones = Clones(4, cycle=1.0)
    replay = Replay(FamilyEngine(config=EngineConfig()))
    drive_job_catches(clones, replay, int(minutes * 60), JOBS, catch, seed,
                      miner=None if miner_at is None else (2, miner_at), mark=_poll)
    return replay.finish().findings


def test_children_a_polling_agent_catches_on_some_clones_of_a_new_image_are_not_rare() -> None:
    for seed in (5, 6):  # without the fix each run reported the first catches of curl (and sh) as rare
        findings = run_new_image(minutes=8, catch=0.003, seed=seed)
        assert [f"{f.kind} {f.host_id} {f.subject}" for f in findings] == []


def test_a_miner_on_a_polling_host_is_still_rare() -> None:
    findings = run_new_image(minutes=6, catch=0.003, miner_at=180.0)
    miner = [f for f in findings if f.kind == FindingKind.RARE_FEATURE and "xmrig" in f.subject]
    assert miner and {f.host_id for f in miner} == {Clones(4).hosts[2].host_id}
