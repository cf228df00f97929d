"""Metric detection on real data with the defaults `herdwatch worker` runs with (EngineConfig()).

    .venv/bin/python benchmarks/bench_real_data.py [--smd ../shared/data/smd] [--nab /work/nab] [--jobs 2]

SMD (Server Machine Dataset, 1-minute metrics, 38 per machine): every machine is a host of its own (a
cohort of one: only its own history judges it), train rows then test rows through one FamilyEngine;
machines 2-* (one service group) also run together as one cohort of 4 (peer view + own history), cut to
their common length. Reported per machine and pooled over the test minutes, WITHOUT point-adjust: AP and
best F1 of the engine's per-report `metric` score, and precision/recall of its actual findings; against
a baseline computed in the same run: per metric robust z of the host's own training data (all of its
training rows, as the SMD README splits them), |x - median| / max(1.4826 MAD, 1e-3), averaged over the
metrics (the maximum over the metrics is printed too, pooled, as `max-z`).

NAB realKnownCause and artificialWithAnomaly: every series a host of its own. A window is detected if a
METRIC_DEVIATION finding falls inside it; false positives (`FP`) are the findings outside every window, each
one an alert (the engine already reports an episode of flagged reports once); `FP runs` is the count used
before, a run of findings less than suppress_s + 2 reporting intervals apart counted once. Each false
positive is then explained: the score that flagged it (smoothed, single report or level shift) as a multiple
of its calibrated threshold, and its rank in that multiple over all the series' judged reports beside the best
rank inside each window (SelfHistory.judged). NAB is read from its path and never copied.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors import EngineConfig, FamilyEngine, Finding, FindingKind, Observation  # noqa: E402

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; SMD publishes no clock times
SMD_MACHINES = ("1-6", "1-7", "2-1", "2-2", "2-7", "2-8", "3-3", "3-4")
COHORT = ("2-1", "2-2", "2-7", "2-8")
NAB_SETS = ("realKnownCause", "artificialWithAnomaly")
SHOWN = (
    "alarm_budget",
    "peer_min_peers",
    "peer_window_s",
    "peer_window_intervals",
    "self_history_alpha",
    "self_history_warmup",
)


# ---- metrics -----------------------------------------------------------------------------------------
def ap_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Average precision and best F1 over thresholds, point by point (no point-adjust)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(float)
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # one point per distinct threshold
    tp, k = tp[last], k[last]
    precision, recall = tp / k, tp / max(y.sum(), 1.0)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))
    return ap, f1


def robust_z(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per test row and metric, |x - median| / max(1.4826 MAD, 1e-3) against the host's training rows."""
    med = np.median(train, axis=0)
    mad = np.median(np.abs(train - med), axis=0)
    return np.asarray(np.abs(test - med) / np.maximum(1.4826 * mad, 1e-3))


def robust_z_baseline(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The baseline: per-metric robust z of the host's own training data, averaged over the metrics.

    (Taking the maximum over the metrics instead loses most of the signal: one metric that never moved in
    training, MAD 0, gets a z in the hundreds for any small change and ranks first; printed as `max-z`.)"""
    return np.asarray(robust_z(train, test).mean(axis=1))


def robust_z_max(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return np.asarray(robust_z(train, test).max(axis=1))


# ---- SMD ---------------------------------------------------------------------------------------------
def replay_hosts(
    series: dict[str, np.ndarray], image: str, step_s: float = 60.0
) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Feed hosts' rows (aligned, one per step) through one default engine; per host the `metric` score of
    every row and the rows with a metric finding."""
    engine = FamilyEngine(config=EngineConfig(record_scores=True))
    rows = min(len(x) for x in series.values())
    names = {h: [f"m{j}" for j in range(x.shape[1])] for h, x in series.items()}
    scores = {h: np.zeros(rows) for h in series}
    found: dict[str, list[int]] = {h: [] for h in series}
    for i in range(rows):
        t = T0 + timedelta(seconds=i * step_s)
        for h, x in series.items():
            metrics = dict(zip(names[h], x[i].tolist(), strict=True))
            out = engine.process(Observation(h, image, image, t, metrics=metrics))
            scores[h][i] = engine.last_scores.get("metric", 0.0)
            if any(isinstance(o, Finding) and o.kind is FindingKind.METRIC_DEVIATION for o in out):
                found[h].append(i)
        if i % 10 == 0:
            engine.tick(t)
    return scores, {h: v for h, v in found.items()}


def smd_job(args: tuple[str, tuple[str, ...]]) -> list[dict]:
    smd_dir, machines = Path(args[0]), args[1]
    data = {m: np.load(smd_dir / f"machine-{m}.npz") for m in machines}
    if len(machines) == 1:
        m = machines[0]
        train, test = data[m]["train"], data[m]["test"]
        cut = {m: (len(train), len(test))}
    else:  # the cohort: the same number of train and test rows for every machine
        n_train = min(len(data[m]["train"]) for m in machines)
        n_test = min(len(data[m]["test"]) for m in machines)
        cut = {m: (n_train, n_test) for m in machines}
    series = {}
    for m in machines:
        n_train, n_test = cut[m]
        series[f"machine-{m}"] = np.vstack([data[m]["train"][-n_train:], data[m]["test"][:n_test]]).astype(float)
    start = time.time()
    scores, found = replay_hosts(series, "smd-" + ("-".join(machines) if len(machines) == 1 else "2"))
    took = time.time() - start
    out = []
    for m in machines:
        n_train, n_test = cut[m]
        h = f"machine-{m}"
        labels = data[m]["test_label"][:n_test].astype(int)
        s = scores[h][n_train : n_train + n_test]
        flagged = np.zeros(n_test, dtype=bool)
        for i in found[h]:
            if i >= n_train:
                flagged[i - n_train] = True
        train_rows, test_rows = data[m]["train"][-n_train:].astype(float), data[m]["test"][:n_test].astype(float)
        base = robust_z_baseline(train_rows, test_rows)
        base_max = robust_z_max(train_rows, test_rows)
        out.append(
            {
                "machine": m,
                "mode": "own" if len(machines) == 1 else "cohort",
                "scores": s,
                "labels": labels,
                "baseline": base,
                "baseline_max": base_max,
                "findings": int(flagged.sum()),
                "finding_tp": int((flagged & (labels == 1)).sum()),
                "seconds": took,
            }
        )
    return out


# ---- NAB ---------------------------------------------------------------------------------------------
def nab_job(args: tuple[str, str, list[list[str]]]) -> dict:
    path, name, windows = Path(args[0]), args[1], args[2]
    with path.open() as f:
        rows = [
            (datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC), float(r["value"])) for r in csv.DictReader(f)
        ]
    engine = FamilyEngine(config=EngineConfig())
    findings: list[datetime] = []
    judged: dict[datetime, tuple[float | None, float | None, float | None]] = {}
    for k, (t, v) in enumerate(rows):
        metrics = {"value": v}
        judged[t] = engine.own.judged(name, metrics, t.timestamp())  # a host without clones: its own history alone
        out = engine.process(Observation(name, name, name, t, metrics=metrics))
        findings += [o.time for o in out if isinstance(o, Finding) and o.kind is FindingKind.METRIC_DEVIATION]
        if k % 10 == 0:
            engine.tick(t)
    spans = [
        (datetime.fromisoformat(a).replace(tzinfo=UTC), datetime.fromisoformat(b).replace(tzinfo=UTC))
        for a, b in windows
    ]
    detected = sum(1 for a, b in spans if any(a <= t <= b for t in findings))
    outside = sorted(t for t in findings if not any(a <= t <= b for a, b in spans))
    explained = [explain(t, judged, spans) for t in outside]
    steps = sorted((rows[i + 1][0] - rows[i][0]).total_seconds() for i in range(len(rows) - 1))
    gap = EngineConfig().suppress_s + 2 * steps[len(steps) // 2]
    runs = sum(1 for i, t in enumerate(outside) if i == 0 or (t - outside[i - 1]).total_seconds() > gap)
    return {
        "series": name,
        "windows": len(spans),
        "detected": detected,
        "fp": len(outside),
        "fp_runs": runs,
        "findings": len(findings),
        "explained": explained,
    }


JUDGED = ("smoothed", "report", "shift")
"""The host's own history judges three scores per report (detectors/self_history.py)."""


def explain(
    t: datetime,
    judged: dict[datetime, tuple[float | None, float | None, float | None]],
    spans: list[tuple[datetime, datetime]],
) -> str:
    """One false positive: which score flagged it (the one furthest above its calibrated threshold), by how much
    (score / threshold), and where that ratio ranks among all the series' judged reports (1 = the highest),
    beside the best rank inside each labelled window. A false positive that ranks above a window's best is not
    removed by raising that score's thresholds by a common factor (a wider margin, a stricter tail) before that
    window is lost; only judging its report differently removes it first."""
    ratios = judged.get(t, (None, None, None))
    known = [(r, i) for i, r in enumerate(ratios) if r is not None]
    if not known:
        return f"{t:%a %Y-%m-%d %H:%M} (not judged by the host's own history)"
    ratio, i = max(known)
    column = sorted(((r[i], when) for when, r in judged.items() if r[i] is not None), reverse=True)
    rank = {when: k + 1 for k, (_, when) in enumerate(column)}
    best = [min((rank[w] for w in rank if a <= w <= b), default=0) for a, b in spans]
    return (
        f"{t:%a %Y-%m-%d %H:%M} {JUDGED[i]} score {ratio:.2f} x its threshold, rank {rank[t]} of {len(column)} "
        f"judged reports; windows' best ranks {', '.join(str(b) if b else '-' for b in best)}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smd", type=Path, default=ROOT.parent / "shared" / "data" / "smd")
    ap.add_argument("--nab", type=Path, default=Path("/work/nab"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-smd", action="store_true")
    ap.add_argument("--skip-nab", action="store_true")
    a = ap.parse_args()
    print(
        f"defaults: {json.dumps({k: v for k, v in EngineConfig().to_dict().items() if k in SHOWN})}"
    )
    with ProcessPoolExecutor(a.jobs) as pool:
        nab_futures = []
        if not a.skip_nab:
            labels = a.nab / "labels" / "combined_windows.json"
            if not labels.exists():
                print(f"NAB not found at {a.nab} (give --nab PATH to a NAB checkout, or --skip-nab)", file=sys.stderr)
                return 2
            windows = json.loads(labels.read_text())
            for group in NAB_SETS:
                for p in sorted((a.nab / "data" / group).glob("*.csv")):
                    key = f"{group}/{p.name}"
                    nab_futures.append(pool.submit(nab_job, (str(p), key, windows.get(key, []))))
        smd_results: list[dict] = []
        if not a.skip_smd:
            if not a.smd.exists():
                print(f"SMD not found at {a.smd} (give --smd PATH)", file=sys.stderr)
                return 2
            jobs = [(str(a.smd), (m,)) for m in SMD_MACHINES] + [(str(a.smd), COHORT)]
            for res in pool.map(smd_job, jobs):
                smd_results += res
            print("\nSMD, test minutes, no point-adjust; engine = the per-report metric score of EngineConfig()")
            print(
                f"{'machine':10} {'view':7} {'AP':>6} {'bestF1':>7} | {'base AP':>7} {'base F1':>7} | "
                "findings  precision  recall"
            )
            for mode in ("own", "cohort"):
                rs = [r for r in smd_results if r["mode"] == mode]
                for r in rs:
                    e_ap, e_f1 = ap_best_f1(r["scores"], r["labels"])
                    b_ap, b_f1 = ap_best_f1(r["baseline"], r["labels"])
                    prec = r["finding_tp"] / r["findings"] if r["findings"] else float("nan")
                    rec_ = r["finding_tp"] / max(int(r["labels"].sum()), 1)
                    print(
                        f"{r['machine']:10} {mode:7} {e_ap:6.3f} {e_f1:7.3f} | {b_ap:7.3f} {b_f1:7.3f} | "
                        f"{r['findings']:8d}  {prec:9.3f}  {rec_:6.3f}"
                    )
                if rs:
                    s = np.concatenate([r["scores"] for r in rs])
                    y = np.concatenate([r["labels"] for r in rs])
                    b = np.concatenate([r["baseline"] for r in rs])
                    bm = np.concatenate([r["baseline_max"] for r in rs])
                    e_ap, e_f1 = ap_best_f1(s, y)
                    b_ap, b_f1 = ap_best_f1(b, y)
                    m_ap, m_f1 = ap_best_f1(bm, y)
                    print(
                        f"{'pooled':10} {mode:7} {e_ap:6.3f} {e_f1:7.3f} | {b_ap:7.3f} {b_f1:7.3f} | "
                        f"(max-z baseline: AP {m_ap:.3f}, best F1 {m_f1:.3f})"
                    )
        if nab_futures:
            print("\nNAB, each series a host of its own; findings with the defaults")
            print(f"{'series':55} {'windows':>7} {'detected':>8} {'FP':>4} {'FP runs':>7} {'findings':>8}")
            tot_w = tot_d = ok = 0
            rows = [f.result() for f in nab_futures]
            for r in rows:
                print(
                    f"{r['series']:55} {r['windows']:7d} {r['detected']:8d} {r['fp']:4d} {r['fp_runs']:7d} "
                    f"{r['findings']:8d}"
                )
                tot_w += r["windows"]
                tot_d += r["detected"]
                ok += r["fp"] <= 1
            print(
                f"windows detected {tot_d}/{tot_w} ({100 * tot_d / max(tot_w, 1):.0f}%), "
                f"series with at most one FP: {ok}/{len(rows)}"
            )
            print("\nFalse positives: the score that flagged each and its rank in that score over the series")
            for r in rows:
                for line in r["explained"]:
                    print(f"{r['series']:55} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
