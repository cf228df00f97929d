import pickle
from pathlib import Path

from det_helpers import BASE, advance, at, findings, join, obs, rollouts

from detectors import EngineConfig, FamilyEngine, FindingKind, RolloutStatus, Severity
from streams.checks_data import policy_rules

RULES = str(Path(__file__).parents[1] / "fixtures" / "policy" / "rules.yaml")
"""The policy path's rules (none are shipped: the hardening checks hold them)."""

MINER = "proc:/tmp/.x/xmrig|/tmp/.x/xmrig -o pool:#|www-data"


def test_rare_process_is_reported_with_host_named_after_confirmation() -> None:
    e = FamilyEngine()
    join(e, "ami-web", 20)
    assert e.process(obs("ami-web-h03", "ami-web", 100, [MINER])) == []
    out = advance(e, 110, 140)
    fs = findings(out)
    assert [f.host_id for f in fs] == ["ami-web-h03"]
    f = fs[0]
    assert f.kind == FindingKind.RARE_FEATURE and f.severity == Severity.CRITICAL and f.subject == MINER
    assert "seen on 1 of 20 hosts of image ami-web" in f.explanation and "/tmp/.x/xmrig" in f.explanation
    assert f.details["hosts_with"] == 1


def test_feature_pushed_to_the_whole_cohort_moves_the_baseline_not_the_alerts() -> None:
    e = FamilyEngine()
    join(e, "ami-app", 20)
    out = []
    for i in range(20):  # a config push and a new sidecar, rolled over 40 seconds
        h = f"ami-app-h{i:02d}"
        out += e.process(
            obs(
                h,
                "ami-app",
                100 + 2 * i,
                ["cfg:file.sha256:/etc/app.conf=cc33", "proc:/usr/bin/sidecar|sidecar|root"],
                removed=("cfg:file.sha256:/etc/app.conf=aa11",),
            )
        )
    out += advance(e, 100, 600)
    assert findings(out) == []


def test_cohort_wide_traffic_spike_does_not_alert_but_one_host_does() -> None:
    e = FamilyEngine(config=EngineConfig(mv_enabled=False))
    join(e, "ami-web", 12)
    out = []
    for k in range(30):
        t = 10 + 10 * k
        factor = 3.0 if 100 <= t < 200 else 1.0
        for i in range(12):
            cpu = 30.0 * factor + i * 0.3 + (60.0 if i == 5 and t >= 220 else 0.0)
            out += e.process(
                obs(
                    f"ami-web-h{i:02d}",
                    "ami-web",
                    t + i * 0.01,
                    metrics={"cpu_pct": cpu, "net_bytes_out": 1e6 * factor + i * 1e3},
                )
            )
    fs = findings(out)
    assert {(f.host_id, f.subject) for f in fs} == {("ami-web-h05", "metric:cpu_pct")}
    assert "median" in fs[0].explanation and fs[0].details["streak"] >= 3


def test_config_drift_and_policy_violation_on_one_host() -> None:
    e = FamilyEngine(config=EngineConfig(policies=RULES), rules=policy_rules(RULES))
    join(e, "ami-app", 10)
    e.process(
        obs(
            "ami-app-h02",
            "ami-app",
            50,
            ["cfg:sshd.permitrootlogin=yes"],
            removed=("cfg:sshd.permitrootlogin=no",),
        )
    )
    assert findings(advance(e, 60, 160)) == []  # grace period
    fs = findings(advance(e, 170, 200))
    kinds = {f.kind for f in fs}
    assert kinds == {FindingKind.CONFIG_DRIFT, FindingKind.POLICY_VIOLATION}
    assert all(f.host_id == "ami-app-h02" for f in fs)
    drift = next(f for f in fs if f.kind == FindingKind.CONFIG_DRIFT)
    assert "9 of 10 hosts of image ami-app have 'no'" in drift.explanation


def test_missing_majority_value_is_drift() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-app", 10)
    e.process(obs("ami-app-h04", "ami-app", 50, removed=("mod:ext4",)))
    fs = findings(advance(e, 60, 300))
    assert [(f.host_id, f.subject) for f in fs] == [("ami-app-h04", "-mod:ext4")]
    assert "missing on host ami-app-h04" in fs[0].explanation


def test_image_wide_policy_violation_is_reported_once_per_image() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6, policies=RULES), rules=policy_rules(RULES))
    join(e, "ami-old", 8, features=(*BASE, "cfg:sshd.passwordauthentication=yes"))
    fs = findings(advance(e, 0, 400))
    assert len(fs) == 1
    f = fs[0]
    assert f.kind == FindingKind.POLICY_VIOLATION and f.details["scope"] == "image"
    assert "8 of 8 hosts of image ami-old" in f.explanation


def test_new_host_inherits_the_baseline_at_its_first_event() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-web", 10)
    advance(e, 0, 600)
    e.process(obs("newcomer", "ami-web", 700, (*BASE, MINER), first=True))
    fs = findings(advance(e, 710, 760))
    assert [(f.host_id, f.subject) for f in fs] == [("newcomer", MINER)]


def test_small_cohort_falls_back_to_its_family_and_says_so() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-web", 10, family="web")
    join(e, "ami-web-tiny", 2, family="web", s=1.0)
    advance(e, 0, 2000)  # any rollout hold has expired
    e.process(obs("ami-web-tiny-h01", "ami-web-tiny", 2100, [MINER], family="web"))
    fs = findings(advance(e, 2110, 2200))
    assert [f.host_id for f in fs] == ["ami-web-tiny-h01"]
    assert "image family web" in fs[0].explanation and fs[0].details["scope"] == "family"


def test_rollout_reports_the_diff_once_and_no_host_anomalies() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    out = join(e, "ami-v1", 10, family="api")
    new = (*BASE[:-2], "pkg:nginx=1.26.0", "proc:/opt/api/v43/node|node server.js|api", "mod:ext4")
    for i in range(10):  # replace one host per minute
        t = 100 + 60 * i
        out += e.process(obs(f"ami-v1-h{i:02d}", "ami-v1", t, family="api", gone=True))
        out += e.process(obs(f"v2-{i}", "ami-v2", t + 1, new, family="api", first=True))
        if i == 6:  # one new-image host gains something its siblings don't have
            out += e.process(obs("v2-3", "ami-v2", t + 2, ["listen:tcp/31337@any|/usr/bin/ncat"], family="api"))
        out += advance(e, t, t + 59)
    out += advance(e, 700, 1500)
    fs = findings(out)
    assert [(f.host_id, f.subject) for f in fs] == [("v2-3", "listen:tcp/31337@any|/usr/bin/ncat")]
    ev = rollouts(out)
    statuses = [r.status for r in ev]
    assert statuses[0] == RolloutStatus.STARTED and statuses[-1] == RolloutStatus.COMPLETED
    with_diff = [r for r in ev if r.diff]
    assert len(with_diff) == 1
    assert "pkg:nginx=1.26.0" in with_diff[0].diff["added"] and "pkg:nginx=1.24.0" in with_diff[0].diff["removed"]


def test_stale_image_after_completed_rollout_and_rollback() -> None:
    e = FamilyEngine(config=EngineConfig(rollout_complete_after_s=100, host_timeout_s=1e6))
    out = join(e, "ami-v1", 10, family="api")
    for i in range(9):
        out += e.process(obs(f"ami-v1-h{i:02d}", "ami-v1", 10 + i, family="api", gone=True))
        out += e.process(obs(f"v2-{i}", "ami-v2", 10 + i, BASE, family="api", first=True))
    out += advance(e, 20, 400)
    assert RolloutStatus.COMPLETED in [r.status for r in rollouts(out)]
    stale = [f for f in findings(out) if f.kind == FindingKind.STALE_IMAGE]
    assert [f.host_id for f in stale] == ["ami-v1-h09"]
    # A later image that disappears again is a rollback.
    out = e.process(obs("v3-0", "ami-v3", 500, BASE, family="api", first=True))
    out += e.process(obs("v3-0", "ami-v3", 520, family="api", gone=True))
    assert [r.status for r in rollouts(out)] == [RolloutStatus.STARTED, RolloutStatus.ROLLED_BACK]


def test_duplicates_are_suppressed_for_the_window() -> None:
    e = FamilyEngine(config=EngineConfig(suppress_s=1000, confirm_s=0, settle_s=0))
    join(e, "ami-web", 10)
    f1 = e.process(obs("ami-web-h01", "ami-web", 10, [MINER])) + advance(e, 10, 20)
    e.process(obs("ami-web-h01", "ami-web", 30, removed=(MINER,)))
    f2 = e.process(obs("ami-web-h01", "ami-web", 40, [MINER])) + advance(e, 40, 60)
    e.process(obs("ami-web-h01", "ami-web", 70, removed=(MINER,)))
    f3 = e.process(obs("ami-web-h01", "ami-web", 1100, [MINER])) + advance(e, 1100, 1110)
    assert (len(findings(f1)), len(findings(f2)), len(findings(f3))) == (1, 0, 1)


def test_silent_hosts_leave_the_cohort() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=120))
    join(e, "ami-web", 5)
    for s in range(10, 300, 10):
        for i in range(3):
            e.process(obs(f"ami-web-h{i:02d}", "ami-web", s, metrics={"cpu_pct": 1.0}))
    advance(e, 0, 300)
    assert e.baseline.n("ami-web") == 3
    assert e.baseline.count("ami-web", BASE[0]) == 3


def test_engine_rebuilt_from_its_store_continues_identically() -> None:
    def run(split: bool) -> list[str]:
        e = FamilyEngine()
        join(e, "ami-web", 10)
        e.process(obs("ami-web-h03", "ami-web", 100, [MINER]))
        if split:
            e = FamilyEngine(store=e.store)  # e.g. a worker restart with its table restored
        e.process(obs("ami-web-h04", "ami-web", 105, ["login:mallory"]))
        return sorted(f.subject for f in findings(advance(e, 110, 400)))

    assert run(split=True) == run(split=False) == sorted([MINER, "login:mallory"])


def test_store_values_are_small_and_json_able() -> None:
    import json

    e = FamilyEngine()
    join(e, "ami-web", 10)
    advance(e, 0, 200)
    json.dumps(dict(e.store))
    biggest = max(len(json.dumps(v)) for k, v in e.store.items() if not k.startswith("x|"))
    assert biggest < 500
    e2 = pickle.loads(pickle.dumps(e))
    assert e2.baseline.n("ami-web") == 10


def test_engines_of_several_families_can_share_one_store() -> None:
    store: dict = {}
    web, app = FamilyEngine(store, family="web"), FamilyEngine(store, family="app")
    join(web, "web-1", 10, family="web")
    join(app, "app-1", 6, family="app")
    app.process(obs("app-1-h02", "app-1", 50, [MINER], family="app"))
    web2, app2 = FamilyEngine(store, family="web"), FamilyEngine(store, family="app")
    web2.load()
    app2.load()
    assert (web2.baseline.n("web-1"), web2.baseline.n("app-1")) == (10, 0)
    assert set(app2.baseline.hosts) == {f"app-1-h{i:02d}" for i in range(6)}
    assert [f.host_id for f in findings(advance(app2, 60, 200))] == ["app-1-h02"]
    assert findings(advance(web2, 60, 200)) == []


def test_small_family_rollout_completes_and_flags_the_host_left_behind() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    out = join(e, "ami-c1", 6, family="cache")
    for i in range(5):
        out += e.process(obs(f"ami-c1-h{i:02d}", "ami-c1", 10 + i, family="cache", gone=True))
        out += e.process(obs(f"c2-{i}", "ami-c2", 10.5 + i, BASE, family="cache", first=True))
    out += advance(e, 20, 700)
    assert [r.status for r in rollouts(out)][-1] == RolloutStatus.COMPLETED
    assert [f.host_id for f in findings(out)] == ["ami-c1-h05"]
    assert findings(out)[0].kind == FindingKind.STALE_IMAGE


def test_multivariate_outlier_when_no_single_metric_is_far_enough() -> None:
    import random

    rng = random.Random(5)
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-app", 30)
    out = []
    for k in range(40):  # the model is refitted and the cohort scored every mv_refit_s (120 s)
        t = 10 + 10 * k
        for i in range(30):
            odd = i == 7 and k >= 4
            m = {
                "cpu_pct": rng.gauss(30, 2) + (20 if odd else 0),
                "mem_pct": rng.gauss(50, 2) + (15 if odd else 0),
                "conns": rng.gauss(100, 5) + (80 if odd else 0),
                "load1": rng.gauss(1.0, 0.1),
            }
            out += e.process(obs(f"ami-app-h{i:02d}", "ami-app", t + i * 0.01, metrics=m))
        out += e.tick(at(t + 5))
    fs = findings(out)
    assert {f.kind for f in fs} == {FindingKind.MULTIVARIATE_OUTLIER}
    assert [f.host_id for f in fs] == ["ami-app-h07"]
    assert "cpu_pct" in fs[0].explanation or "conns" in fs[0].explanation


def test_image_level_violation_is_not_repeated_as_hosts_come_and_go() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6, suppress_s=100, policies=RULES), rules=policy_rules(RULES))
    bad = (*BASE, "cfg:sshd.passwordauthentication=yes")
    out = join(e, "ami-old", 8, features=bad)
    out += advance(e, 0, 400)
    for k in range(5):  # batch-style churn long after the first assessment
        t = 500 + 300 * k
        out += e.process(obs(f"late-{k}", "ami-old", t, bad, first=True))
        out += advance(e, t, t + 290)
    assert len([f for f in findings(out) if f.kind == FindingKind.POLICY_VIOLATION]) == 1


def test_a_host_that_stops_running_what_all_its_clones_run() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-web", 12)
    sshd = BASE[0]
    e.process(obs("ami-web-h05", "ami-web", 50, removed=(sshd,)))
    fs = findings(advance(e, 60, 400))
    assert [(f.host_id, f.subject) for f in fs] == [("ami-web-h05", f"-{sshd}")]
    assert "is missing on host ami-web-h05" in fs[0].explanation and "11 of 12" in fs[0].explanation
    # The same process going away everywhere (a fleet-wide change) alerts nobody.
    out = []
    for i in range(12):
        out += e.process(obs(f"ami-web-h{i:02d}", "ami-web", 500 + i, removed=(BASE[1],)))
    assert findings(out + advance(e, 500, 900)) == []


def test_engine_store_stays_bounded_while_hosts_churn() -> None:
    import random

    rng = random.Random(9)
    # the store, not the model, is under test
    e = FamilyEngine(config=EngineConfig(host_timeout_s=120, mv_enabled=False))
    sizes, live, serial, t = [], [], 0, 0.0
    for step in range(12_000):
        t += 1.0
        if rng.random() < 0.03 or len(live) < 10:
            serial += 1
            live.append(f"h{serial}")
            e.process(obs(live[-1], "ami-w", t, [*BASE, f"proc:/opt/{serial}|x|u"], first=True))
        elif rng.random() < 0.03 and len(live) > 30:
            e.process(obs(live.pop(rng.randrange(len(live))), "ami-w", t, gone=True))
        else:
            h = rng.choice(live)
            e.process(obs(h, "ami-w", t, [f"dest:tcp/{rng.randint(1, 10**6)}@x"], metrics={"cpu_pct": rng.random()}))
        if step % 50 == 0:
            e.tick(at(t))
        if step % 3000 == 2999:
            sizes.append(len(e.store))
    assert max(sizes[1:]) < 2 * sizes[0], sizes
