from pathlib import Path

import pytest

from detectors.policy import PolicyCheck, PolicyError, version_key
from streams.checks_data import policy_rules


def test_version_comparison_follows_epoch_and_pieces() -> None:
    assert version_key("1:9.6p1-3ubuntu13.3") < version_key("1:9.6p1-3ubuntu13.5")
    assert version_key("1:8.9p1-3ubuntu0.1") < version_key("1:9.6p1-3ubuntu13.3")
    assert version_key("9.9p1") < version_key("1:8.0")  # the epoch wins
    assert version_key("1.0~rc1") < version_key("1.0")


RULES = str(Path(__file__).parents[1] / "fixtures" / "policy" / "rules.yaml")


def test_rules_catch_the_classic_mistakes() -> None:
    p = PolicyCheck(policy_rules(RULES))
    ids = lambda f: {r.id for r in p.violations(f)}  # noqa: E731
    assert ids("cfg:sshd.permitrootlogin=yes") == {"sshd-root-login"}
    assert ids("cfg:sshd.permitrootlogin=no") == set()
    assert ids("cfg:sshd.passwordauthentication=yes") == {"sshd-password-auth"}
    assert ids("cfg:file.mode:/etc/shadow=0666") == {"world-writable-sensitive-file"}
    assert ids("cfg:file.mode:/etc/shadow=0640") == set()
    assert ids("cfg:file.mode:/home/u/notes=0666") == set()
    assert ids("pkg:openssh-server=1:9.6p1-3ubuntu13") == {"openssh-vulnerable"}
    assert ids("pkg:openssh-server=1:9.6p1-3ubuntu13.5") == set()
    assert ids("proc:/usr/sbin/sshd|sshd|root") == set()


def test_no_rule_is_shipped_the_hardening_checks_hold_them() -> None:
    """One condition, one finding: the seven rules policies.yaml held are hardening checks now."""
    assert policy_rules() == ()
    assert PolicyCheck().violations("cfg:sshd.permitrootlogin=yes") == []


def test_bad_rule_files_say_how_to_fix_them(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - id: x\n    key: a.b\n")
    with pytest.raises(PolicyError, match="bad, allowed, world_writable or min_version"):
        policy_rules(f)
    f.write_text("rules:\n  - id: x\n    key: a.b\n    bad: ['1']\n    severity: scary\n")
    with pytest.raises(PolicyError, match="severity must be one of"):
        policy_rules(f)
    f.write_text("rules:\n  - id: own\n    key: app.debug\n    bad: ['true']\n")
    assert [r.id for r in PolicyCheck(policy_rules(f)).violations("cfg:app.debug=true")] == ["own"]
