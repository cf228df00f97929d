"""Hardening in the FamilyEngine: an image is assessed once (image-level findings), hosts only where they
are weaker than their image (drift with before/after), a rollout's new image against the one it replaces
(one finding at its first host, a clean rollout silent), vulnerable packages from OSV data."""

from __future__ import annotations

from pathlib import Path

import pytest
from det_helpers import advance, findings, obs

from contract.findings import Finding
from detectors import EngineConfig, FamilyEngine
from streams.checks_data import hardening_library as load_library
from streams.osv_data import load_index
from tests.fixtures.hardening.roots import host_features

OSV = load_index(Path(__file__).parents[1] / "fixtures" / "osv")
DOC = Path(__file__).parents[2] / "docs" / "detection.md"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    return host_features(tmp_path_factory.mktemp("good"))


def engine() -> FamilyEngine:
    return FamilyEngine(config=EngineConfig(min_hosts=3, mv_enabled=False, host_timeout_s=1e6), osv=OSV,
                        checks=load_library())


def hardening(out: list) -> list[Finding]:
    return [f for f in findings(out) if f.subject.startswith(("hardening:", "vuln:"))]


def swap(features: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    assert old in features, old
    return tuple(new if f == old else f for f in features)


def test_a_clean_image_is_quiet_and_a_weak_image_is_reported_once(good: tuple[str, ...]) -> None:
    eng = engine()
    out = []
    for i in range(4):
        out += eng.process(obs(f"web-h{i}", "web-1", i, good, first=True))
    out += advance(eng, 10, 200)
    assert hardening(out) == []
    weak = swap(good, "cfg:sshd.permitrootlogin=no", "cfg:sshd.permitrootlogin=yes")
    out = []
    for i in range(5):
        out += eng.process(obs(f"api-h{i}", "api-1", 300 + i, weak, first=True, family="api"))
    out += advance(eng, 300, 600)
    got = hardening(out)
    assert [(f.subject, f.host_id, f.details["scope"]) for f in got] == [
        ("hardening:ssh-root-login", "api-h0", "image")]
    assert "bake pipeline" in got[0].explanation and "api-1" in got[0].explanation
    assert got[0].details["cis"] == "5.2.7" and got[0].details["observed"] == {"sshd.permitrootlogin": "yes"}
    eng.process(obs("api-h9", "api-1", 700, weak, first=True, family="api"))
    assert hardening(advance(eng, 700, 900)) == []  # once per image and check


def test_a_host_is_reported_only_where_it_is_weaker_than_its_image(good: tuple[str, ...]) -> None:
    eng = engine()
    for i in range(4):
        eng.process(obs(f"web-h{i}", "web-1", i, good, first=True))
    assert hardening(advance(eng, 10, 200)) == []
    out = eng.process(obs("web-h2", "web-1", 300, ("cfg:sshd.maxauthtries=10", "cfg:sudoers.nopasswd=2"),
                          ("cfg:sshd.maxauthtries=4", "cfg:sudoers.nopasswd=0")))
    out += advance(eng, 300, 500)
    got = {f.subject: f for f in hardening(out)}
    assert set(got) == {"hardening:ssh-max-auth-tries", "hardening:sudo-nopasswd"}
    f = got["hardening:ssh-max-auth-tries"]
    assert (f.host_id, f.details["scope"]) == ("web-h2", "host")
    assert f.details["before"] == {"sshd.maxauthtries": "4"} and f.details["after"] == {"sshd.maxauthtries": "10"}
    assert "unlike its image web-1" in f.explanation


def test_rollouts_weakening_sshd_or_bringing_vulnerable_openssh_are_flagged_at_the_first_host(
    good: tuple[str, ...],
) -> None:
    eng = engine()
    for i in range(4):
        eng.process(obs(f"web-a{i}", "web-1", i, good, first=True))
    advance(eng, 10, 200)
    # a clean rollout: only the application changes
    clean = (*good, "pkg:webapp=2.0")
    out = eng.process(obs("web-b0", "web-2", 300, clean, first=True))
    out += advance(eng, 300, 400)
    assert hardening(out) == []
    # a weakening one: root login and a vulnerable OpenSSH, judged before the rollout reaches critical mass
    weak = swap(swap(good, "cfg:sshd.permitrootlogin=no", "cfg:sshd.permitrootlogin=yes"),
                "pkg:openssh-server=1:9.6p1-3ubuntu13.5", "pkg:openssh-server=1:9.6p1-3ubuntu13")
    out = eng.process(obs("web-c0", "web-3", 1000, weak, first=True))
    out += advance(eng, 1000, 1100)
    [f] = hardening(out)
    assert (f.host_id, f.image_id, f.subject, f.details["scope"]) == ("web-c0", "web-3", "hardening:rollout", "image")
    assert f.details["rollout"] == {"old": "web-1", "new": "web-3"}  # compared with the established image
    assert [c["check"] for c in f.details["checks"]] == ["ssh-root-login"]
    [v] = f.details["vulnerable"]
    assert (v["package"], v["installed"], v["fixed"], v["advisories"]) == (
        "openssh-server", "1:9.6p1-3ubuntu13", "1:9.6p1-3ubuntu13.3", ["TEST-U-0001", "CVE-2024-6387"])
    assert "ssh-root-login" in f.explanation and "CVE-2024-6387" in f.explanation
    more = []
    for i in range(1, 4):  # the rest of the rollout stays quiet
        more += eng.process(obs(f"web-c{i}", "web-3", 1200 + i, weak, first=True))
    more += advance(eng, 1200, 1500)
    assert hardening(more) == []


def test_vulnerable_package_on_an_image_without_a_rollout(good: tuple[str, ...]) -> None:
    eng = engine()
    old = swap(good, "pkg:openssh-server=1:9.6p1-3ubuntu13.5", "pkg:openssh-server=1:9.6p1-3ubuntu13.2")
    for i in range(3):
        eng.process(obs(f"db-h{i}", "db-1", i, old, first=True, family="db"))
    [f] = hardening(advance(eng, 10, 200))
    assert f.subject == "vuln:openssh-server=1:9.6p1-3ubuntu13.2" and f.details["scope"] == "image"
    assert f.details["hosts"] == ["db-h0", "db-h1", "db-h2"] and f.details["fixed"] == "1:9.6p1-3ubuntu13.3"


def test_hosts_of_an_older_agent_are_not_judged() -> None:
    eng = engine()
    for i in range(3):
        eng.process(obs(f"x-h{i}", "x-1", i, ("cfg:sshd.permitrootlogin=yes", "pkg:telnetd=1.0"), first=True))
    assert hardening(advance(eng, 10, 200)) == []


def test_the_docs_list_every_check() -> None:
    text = DOC.read_text()
    missing = [c.id for c in load_library().checks if f"`{c.id}`" not in text]
    assert missing == [], f"docs/detection.md lacks {missing}: run python -m streams.checks_data and paste its table"


def test_the_openssh_version_floor_gives_way_to_osv_data(good: tuple[str, ...]) -> None:
    old = swap(good, "pkg:openssh-server=1:9.6p1-3ubuntu13.5", "pkg:openssh-server=1:9.6p1-3ubuntu13.2")
    subjects = []
    plain = FamilyEngine(config=EngineConfig(min_hosts=3, mv_enabled=False, host_timeout_s=1e6), checks=load_library())
    for eng in (plain, engine()):
        for i in range(3):
            eng.process(obs(f"db-h{i}", "db-1", i, old, first=True, family="db"))
        subjects.append([f.subject for f in hardening(advance(eng, 10, 200))])
    assert subjects == [["hardening:ssh-regresshion"], ["vuln:openssh-server=1:9.6p1-3ubuntu13.2"]]
