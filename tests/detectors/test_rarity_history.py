"""Rarity over the image's history: a periodic job's short-lived children, caught by a polling collector on
some clones at some times, are the image's behaviour, not rare features; a new process still is."""

from __future__ import annotations

from det_helpers import drive_job_catches

from contract.findings import FindingKind
from detectors import EngineConfig, FamilyEngine
from detectors.backtest import Replay
from detectors.records import FeatureHistory
from detectors.store_keys import HISTORY
from simulator.presets import Clones

JOBS = (
    {"exe": "/usr/bin/curl", "cmdline": "curl -fsS http://127.0.0.1:8080/health", "user": "root", "name": "curl"},
    {"exe": "/usr/bin/dash", "cmdline": "sh -c date", "user": "root", "name": "sh"},
    {"exe": "/usr/bin/hostname", "cmdline": "hostname", "user": "root", "name": "hostname"},
)


def run_fleet(hours: float, catch: float, seed: int = 3, miner_at: float | None = None) -> tuple[list, FamilyEngine]:
    """8 clones at a 10 s cycle; each cycle every clone catches each job's child with probability `catch`
    (a /proc poll that sees a process living a few milliseconds). A miner starts on host 5 at `miner_at`."""
    clones = Clones(8, cycle=10.0)
    engine = FamilyEngine(config=EngineConfig())
    replay = Replay(engine)
    drive_job_catches(clones, replay, int(hours * 360), JOBS, catch, seed,
                      miner=None if miner_at is None else (5, miner_at), parent_exe="/usr/sbin/cron")
    return replay.finish().findings, engine


def job_findings(findings: list) -> list:
    return [f for f in findings if any(j["exe"] in f.subject for j in JOBS)]


def test_children_of_periodic_jobs_caught_unevenly_are_not_rare() -> None:
    findings, engine = run_fleet(hours=4, catch=0.002)
    jobs = job_findings(findings)
    # Without the image's history every catch on a host whose clones showed nothing at that moment was a
    # finding (dozens in four hours). With it, at most the first catches of each feature are reported
    # (a first catch and a campaign of the catches that follow it closely), nothing in the last three hours.
    late = [f for f in jobs if (f.time - findings[0].time).total_seconds() > 3600] if findings else []
    assert late == [], [f"{f.host_id} {f.subject}" for f in late]
    assert len(jobs) <= 2 * len(JOBS) * 2, [f"{f.time} {f.host_id} {f.subject}" for f in jobs]
    # the history is typed and stored in the engine's store, under its own key family
    stored = {k: FeatureHistory.from_json(v) for k, v in engine.store.items() if HISTORY.holds(k)}
    assert any("curl" in k for k in stored)
    assert all(h.last >= h.first for h in stored.values())


def test_a_new_process_is_still_rare_on_the_same_fleet() -> None:
    findings, _ = run_fleet(hours=2, catch=0.002, miner_at=5400.0)
    miner = [f for f in findings if f.kind == FindingKind.RARE_FEATURE and "xmrig" in f.subject]
    assert miner
    assert {f.host_id for f in miner} == {Clones(8).hosts[5].host_id}


def test_history_is_bounded_per_image_and_survives_a_reload() -> None:
    engine = FamilyEngine(config=EngineConfig(history_max=10))
    h = engine.history
    for i in range(25):
        h.judged("ami-1", f"proc:/usr/bin/job{i}|job|root", float(i))
    assert len(h.entries["ami-1"]) <= 10
    assert "proc:/usr/bin/job24|job|root" in h.entries["ami-1"]  # the oldest went first
    assert "proc:/usr/bin/job0|job|root" not in h.entries["ami-1"]
    again = FamilyEngine(store=engine.store, config=EngineConfig(history_max=10))
    again.load()
    assert again.history.entries == h.entries
    # known within history_s; forgotten after it (nobody showed it since)
    assert again.history.known("ami-1", "proc:/usr/bin/job24|job|root", "h1", 24.0 + 3600, False)
    assert not again.history.known("ami-1", "proc:/usr/bin/job24|job|root", "h1", 24.0 + 90000, False)
