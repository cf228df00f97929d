"""Focused checks of the detector classes on their own (standalone baselines)."""

from det_helpers import BASE, obs

from detectors import CohortRarity, ConfigDrift, PeerDeviation, RolloutStatus, RolloutTracker
from detectors.base import Detector


def cohort(d: Detector, n: int = 10, image: str = "ami-c", family: str = "c", extra: dict | None = None) -> None:
    for i in range(n):
        host = f"{image}-h{i:02d}"
        d.learn_one(
            obs(
                host,
                image,
                i * 0.1,
                [*BASE, *(extra or {}).get(host, ())],
                family=family,
                first=True,
                metrics={"cpu_pct": 30.0 + i * 0.5, "temp_c": 40.0 + (i % 3)},
            )
        )


def test_rarity_threshold_and_family_scope() -> None:
    r = CohortRarity(rare_fraction=0.1)
    assert [r.rare_max(n) for n in (1, 9, 10, 48, 1000)] == [1, 1, 1, 4, 100]
    cohort(r, 10, extra={"ami-c-h03": ["proc:/x|x|root"]})
    assert r.counts("ami-c", "c", "proc:/x|x|root") == (1, 10, "cohort")
    assert r.feature_score("ami-c", "c", "proc:/x|x|root") == 0.9
    assert r.feature_score("ami-c", "c", BASE[0]) == 0.0
    r.learn_one(obs("tiny-h0", "ami-tiny", 5, BASE, family="c", first=True))
    assert r.counts("ami-tiny", "c", "proc:/x|x|root") == (1, 11, "family")


def test_peer_deviation_is_robust_and_needs_a_material_difference() -> None:
    p = PeerDeviation(min_z=5, min_rel=0.5, min_abs={"cpu_pct": 30})
    cohort(p, 20)
    now = 3.0
    z, med, _, peers = p.deviation("ami-c", "cpu_pct", 95.0, now)
    assert peers == 20 and 34 < med < 36 and z > 5
    assert p.deviation("ami-c", "cpu_pct", 60.0, now)[0] == 0.0  # +25: below the absolute minimum
    assert p.deviation("ami-c", "cpu_pct", 5.0, now)[0] == 0.0  # lower than peers: one-sided by default
    assert p.deviation("ami-c", "temp_c", 70.0, now)[0] > 5  # any metric name works
    both = PeerDeviation(two_sided=True, min_abs={}, baseline=p.baseline)
    assert both.deviation("ami-c", "cpu_pct", 5.0, now)[0] < -5
    assert [p.update_streak("h", "cpu_pct", d) for d in (True, True, False, True)] == [1, 2, 0, 1]


def test_config_drift_names_the_majority_value() -> None:
    d = ConfigDrift()
    cohort(d, 10, extra={"ami-c-h04": ["cfg:sshd.permitrootlogin=yes"]})
    assert d.majority_value("ami-c", "cfg", "sshd.permitrootlogin") == ("no", 10)
    text, details = d.explain("cfg:sshd.permitrootlogin=yes", "ami-c-h04", "ami-c")
    assert "10 of 10 hosts of image ami-c have 'no'" in text and details["majority"] == "no"


def test_rollout_tracker_standalone_lifecycle() -> None:
    r = RolloutTracker(complete_after_s=50)
    cohort(r, 5, image="ami-a")
    for i in range(5):
        r.learn_one(obs(f"ami-a-h{i:02d}", "ami-a", 10 + i, family="c", gone=True))
        r.learn_one(obs(f"b{i}", "ami-b", 10.5 + i, BASE, family="c", first=True))
    st = r.state("c")
    assert st is not None and (st.status, st.old, st.new) == (RolloutStatus.COMPLETED, "ami-a", "ami-b")
    assert r.stale("ami-a", "c") == "ami-b" and r.stale("ami-b", "c") is None
