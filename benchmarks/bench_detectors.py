"""Detector benchmarks: scoring cost, state size per cohort, and detection quality vs two baselines.

    .venv/bin/python benchmarks/bench_detectors.py [--quick]

Prints:
1. set-feature path: host observations per second on one core (FamilyEngine.process), and the same
   through HostState.apply (raw events -> observations);
2. state of one cohort of 1,000 hosts: Python heap (tracemalloc) and the store's JSON size;
3. simulator scenarios (several cohorts, injected compromises, a clean gradual rollout, a rollback, traffic
   spikes and config pushes) through the cohort engine, per-host history only, and one global model:
   precision, recall, time to detect and false alarms side by side.

Every engine is built as the stream worker builds it: with the parsed hardening checks and policy rules
(streams/checks_data.py engine_inputs) and the configured OSV data, if any (streams/osv_data.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors import EngineConfig, FamilyEngine, HostState, Observation
from detectors.backtest import replay
from detectors.reference import GlobalModel, HostHistoryModel
from herdwatch.evaluation.scoring import evaluate, format_comparison
from simulator import presets
from streams.checks_data import engine_inputs
from streams.osv_data import osv_source

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def worker_engine(config: EngineConfig | None = None) -> FamilyEngine:
    """A FamilyEngine as the worker builds it: the checks, rules and OSV data its config names."""
    c = EngineConfig() if config is None else config
    return FamilyEngine(config=c, osv=osv_source(c), **engine_inputs(c))


def host_features(i: int, rng: random.Random) -> list[str]:
    """~80 features like a real host: shared processes/config/packages plus a few host-specific ones."""
    feats = [f"proc:/usr/bin/svc{k}|svc{k} --flag|root" for k in range(25)]
    feats += [f"pc:/usr/lib/systemd/systemd>/usr/bin/svc{k}" for k in range(25)]
    feats += [f"listen:tcp/{8000 + k}@any|/usr/bin/svc{k}" for k in range(4)]
    feats += [f"cfg:key{k}=value{k}" for k in range(12)]
    feats += [f"pkg:package{k}=1.{k}.0" for k in range(10)]
    feats += [f"dest:tcp/5432@10.0.{rng.randint(0, 3)}.0/24", "login:ubuntu"]
    return feats


def bench_throughput(hosts: int, n_obs: int) -> None:
    rng = random.Random(1)
    engine = worker_engine(EngineConfig(mv_enabled=False))
    for i in range(hosts):
        engine.process(Observation(f"h{i}", "ami-bench", "bench", T0, tuple(host_features(i, rng)), first=True))
    toggles = [f"proc:/usr/bin/job|job --run #|batch{k}" for k in range(8)] + [
        f"dest:tcp/443@10.9.{k}.0/24" for k in range(8)
    ]
    # Steady state: hosts gain and lose common features (jobs, connections); 1 in 1,000 is rare.
    stream = []
    shown: dict[tuple[int, str], bool] = {}
    for j in range(n_obs):
        h = rng.randrange(hosts)
        f = toggles[rng.randrange(len(toggles))] if j % 1000 else f"proc:/tmp/x{j}|x|root"
        on = shown.get((h, f), False)
        shown[(h, f)] = not on
        t = T0 + timedelta(seconds=1 + j * 0.001)
        stream.append(Observation(f"h{h}", "ami-bench", "bench", t, () if on else (f,), (f,) if on else ()))
    gc.collect()
    start = time.perf_counter()
    found = 0
    for o in stream:
        found += len(engine.process(o))
    elapsed = time.perf_counter() - start
    print(
        f"set-feature path: {n_obs:,} observations on a {hosts:,}-host cohort in {elapsed:.2f} s = "
        f"{n_obs / elapsed:,.0f} observations/s on one core ({found} findings)"
    )

    # The same cohort through HostState: raw events -> observations -> engine.
    fleet = presets.run(presets.fleet({"web": 40}, duration=900.0))
    states: dict[str, HostState] = {}
    engine2 = worker_engine(EngineConfig(mv_enabled=False))
    start = time.perf_counter()
    n = 0
    for e in fleet.events:
        hs = states.get(e.host_id) or states.setdefault(e.host_id, HostState(e.host_id, e.image_id, e.image_family))
        ob = hs.apply(e)
        if ob is not None:
            n += 1
            engine2.process(ob)
    elapsed = time.perf_counter() - start
    print(
        f"events path (HostState.apply + process): {len(fleet.events):,} events -> {n:,} observations in "
        f"{elapsed:.2f} s = {len(fleet.events) / elapsed:,.0f} events/s on one core"
    )


def bench_state(hosts: int) -> None:
    import sklearn.ensemble  # noqa: F401  (library code is not cohort state: import it before measuring)

    worker_engine()  # reads the checks and policy rules once (library data, not cohort state)
    rng = random.Random(2)
    gc.collect()
    tracemalloc.start()
    engine = worker_engine()
    for i in range(hosts):
        feats = [*host_features(i, rng), f"dest:tcp/443@10.{i % 250}.{rng.randint(0, 255)}.0/24"]
        metrics = {
            "cpu_pct": rng.gauss(30, 3),
            "mem_pct": rng.gauss(50, 3),
            "conns": rng.gauss(100, 8),
            "net_bytes_out": rng.gauss(4e6, 3e5),
            "auth_failures": float(rng.randint(0, 4)),
        }
        engine.process(Observation(f"h{i}", "ami-state", "state", T0, tuple(feats), metrics=metrics, first=True))
    engine.tick(T0 + timedelta(seconds=30))  # builds the multivariate model and peer statistics too
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store_bytes = len(json.dumps(dict(engine.store)))
    print(
        f"state of one cohort of {hosts:,} hosts (~82 features and 5 metrics each): {current / 1e6:.1f} MB "
        f"Python heap (peak {peak / 1e6:.1f} MB), store {len(engine.store):,} keys / "
        f"{store_bytes / 1e6:.1f} MB as JSON"
    )


def bench_scenario(name: str) -> None:
    """The same comparison on a scenario of the fleet simulator (simulator), if installed."""
    try:
        from simulator import Fleet
    except ImportError:
        print(f"\n(simulator not available: scenario {name} skipped)")
        return
    fleet = Fleet.from_scenario(name)
    events = [e for _, batch in fleet.batches() for e in batch]
    truth = fleet.ground_truth_dicts()
    print(
        f"\nsimulator scenario {name!r}: {len(events):,} events, "
        f"{sum(1 for t in truth if t.get('host_id'))} injected host scenarios, "
        f"{sum(1 for t in truth if not t.get('host_id'))} rollouts/rollbacks"
    )
    compare(events, truth)


def compare(events: list[Any], truth: list[dict[str, Any]]) -> None:
    reports = {}
    for name, model in (
        ("cohort engine", worker_engine()),
        ("per-host history", HostHistoryModel(**engine_inputs(EngineConfig()))),
        ("global model", GlobalModel(EngineConfig(), **engine_inputs(EngineConfig()))),
    ):
        start = time.perf_counter()
        result = replay(events, model)
        reports[name] = evaluate(
            result.outputs, truth, host_hours=result.host_hours, family_of_host=result.family_of_host
        )
        print(
            f"  {name}: replayed in {time.perf_counter() - start:.1f} s; false alarm examples: "
            f"{reports[name]['false_positive_examples'][:3]}; by fleet event: "
            f"{reports[name]['noise_false_alarms']}"
        )
    print()
    print(format_comparison(reports))
    print("\ncohort engine, per compromise:")
    for p in reports["cohort engine"]["per_truth"]:
        print(f"  {p['scenario']:18} host {p['host_id']:20} detected={p['detected']} ttd={p['ttd_s']} s")


def bench_week(hosts: int = 12, days: float = 7.0, cadence_s: float = 300.0) -> None:
    """Backtest of one cohort over `days` at a `cadence_s` collector cycle (simulated clones): wall time of
    the replay and how often the multivariate model was refitted."""
    clones = presets.Clones(hosts, cycle=cadence_s)
    events = []
    for cycle in range(int(days * 86400 / cadence_s)):
        when = clones.at(cycle * cadence_s)
        for host in clones.hosts:
            events += clones.step(host, when)
    engine = worker_engine()
    start, cpu = time.perf_counter(), time.process_time()
    result = replay(events, engine)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"\nbacktest of one cohort of {hosts} hosts over {days:g} days at a {cadence_s:g} s cadence: "
        f"{len(events):,} events in {took:.1f} s ({cpu:.1f} s of CPU); multivariate refits {engine.mv.fits} "
        f"({engine.mv.fits / days:.1f} a day), findings {len(result.findings)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument(
        "--scenario",
        action="append",
        help="simulator scenario(s) to compare on (default: demo, normal; --quick: ci)",
    )
    ap.add_argument("--week", action="store_true", help="only the backtest of a week of one 12-host cohort")
    args = ap.parse_args()
    if args.week:
        bench_week()
        return
    bench_throughput(hosts=1000, n_obs=50_000 if args.quick else 200_000)
    bench_state(hosts=1000)
    for name in args.scenario if args.scenario is not None else (["ci"] if args.quick else ["demo", "normal"]):
        bench_scenario(name)


if __name__ == "__main__":
    main()
