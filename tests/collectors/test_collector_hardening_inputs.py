"""The hardening checks' inputs read by the real config probe from fixture roots (good and weakened
variants of one image), and every check family judged on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.probes.hardening_inputs import parse_audit_rules, parse_mounts, parse_pam, parse_sudoers
from detectors.hardening import HostView
from streams.checks_data import hardening_library as load_library
from tests.fixtures.hardening.roots import collected, host_features, make_root

# per family: checks the good image passes and the weakened one fails
FAILS_WHEN_WEAKENED = {
    "ssh": ["ssh-root-login", "ssh-password-auth", "ssh-empty-passwords", "ssh-max-auth-tries", "ssh-weak-ciphers",
            "ssh-x11-forwarding", "ssh-host-keys-mode-debian"],
    "accounts": ["pass-max-days", "pass-min-days", "default-umask", "password-hashing", "pwquality-minlen",
                 "pwquality-enforce-root", "faillock-deny", "faillock-unlock-time", "pam-faillock-debian",
                 "pam-pwquality-debian", "pam-nullok-debian", "pam-password-history", "uid0-only-root",
                 "passwords-shadowed", "no-empty-passwords", "shadow-group-empty"],
    "sudo": ["sudo-use-pty", "sudo-logfile", "sudo-nopasswd", "sudo-authenticate"],
    "network": ["ip-forward", "accept-redirects-all", "source-route-all", "tcp-syncookies"],
    "kernel": ["aslr", "ptrace-scope", "suid-dumpable", "protected-symlinks"],
    "files": ["passwd-perms", "shadow-perms", "crontab-perms", "cron-d-perms", "cron-daily-perms"],
    "services": ["no-xinetd", "no-telnet-server", "no-avahi", "time-sync-installed", "firewall-installed"],
    "mounts": ["tmp-separate", "dev-shm-nodev", "dev-shm-noexec", "var-tmp-separate", "home-nodev"],
    "audit": ["auditd-enabled", "audit-early-boot", "audit-backlog-limit", "audit-identity", "audit-sudoers",
              "audit-rules-immutable", "audit-time-change", "journald-persistent"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, str]]:
    lib = load_library()
    good = lib.evaluate(HostView.from_features(host_features(tmp_path_factory.mktemp("good"))))
    bad = lib.evaluate(HostView.from_features(host_features(tmp_path_factory.mktemp("bad"), bad=True)))
    return {k: r.status for k, r in good.items()}, {k: r.status for k, r in bad.items()}


@pytest.mark.parametrize("family", sorted(FAILS_WHEN_WEAKENED))
def test_each_family_on_real_files(family: str, results: tuple[dict[str, str], dict[str, str]]) -> None:
    good, bad = results
    families = {c.id: c.family for c in load_library().checks}
    for check in FAILS_WHEN_WEAKENED[family]:
        assert families[check] == family
        assert (check, good[check]) == (check, "pass")
        assert (check, bad[check]) == (check, "fail")


def test_the_good_image_passes_nearly_everything(results: tuple[dict[str, str], dict[str, str]]) -> None:
    good, _ = results
    failing = sorted(k for k, v in good.items() if v == "fail")
    assert failing == [], failing  # the rhel-only checks are na on Ubuntu
    assert sum(v == "pass" for v in good.values()) >= 100


def test_effective_sshd_values_and_nothing_but_parsed_values(tmp_path: Path) -> None:
    items, packages = collected(*make_root(tmp_path))
    assert items["sshd.permitrootlogin"] == "no"  # the Include'd file comes first; the Match block is ignored
    assert items["sshd.x11forwarding"] == "no"  # first match wins over the main file's later "yes"
    assert items["sshd.usepam"] == "yes"
    assert items["os.id"] == "ubuntu" and items["os.version_id"] == "24.04" and items["hardening.inputs"] == "1"
    assert items["mount.options:/tmp"] == "nodev,noexec,nosuid" and items["mount.options:/home"] == "nodev,nosuid"
    assert items["file.mode:/etc/cron.d"] == "0700" and items["file.owner:/etc/shadow"] == "0:0"
    assert items["file.mode:/etc/ssh/ssh_host_ed25519_key"] == "0600"
    assert "file.sha256:/etc/ssh/ssh_host_ed25519_key" not in items  # private keys: stat only, never read
    assert items["service.auditd"] == "enabled" and items["boot.audit"] == "1"
    assert items["sudoers.use_pty"] == "yes" and items["sudoers.nopasswd"] == "0"
    assert items["passwd.uid0"] == "root" and items["shadow.empty_passwords"] == "0"
    assert items["pam.remember:/etc/pam.d/common-password"] == "24"
    assert items["audit.watch:/etc/sudoers"] == "wa" and items["audit.syscall:init_module"] == "yes"
    assert packages["openssh-server"] == "1:9.6p1-3ubuntu13.5"
    values = " ".join(items.values())
    assert "Authorized use only" not in values and "sugroup" not in values  # no file contents leave the host


def test_weakened_values(tmp_path: Path) -> None:
    items, _ = collected(*make_root(tmp_path, bad=True))
    assert items["sshd.permitrootlogin"] == "yes" and items["sshd.maxauthtries"] == "10"
    assert items["sudoers.nopasswd"] == "1" and items["sudoers.noauthenticate"] == "1"
    assert items["sudoers.use_pty"] == "no"
    assert items["passwd.uid0"] == "root,toor" and items["shadow.empty_passwords"] == "1"
    assert "mount.options:/tmp" not in items and items["mount.options:/dev/shm"] == "none"
    assert items["service.auditd"] == "disabled"
    assert items["audit.immutable"] == "no" and items["audit.rules"] == "1"


def test_parsers_on_edge_cases() -> None:
    assert parse_mounts("tmpfs /tmp tmpfs rw 0 0\ntmpfs /tmp tmpfs rw,noexec,nosuid 0 0\n") == {
        "mount.options:/tmp": "noexec,nosuid"}  # the last mount of a point is in effect
    pam = parse_pam("/etc/pam.d/x", "# auth required pam_faillock.so\n-auth optional /lib/security/pam_x.so\n")
    assert pam == {"pam.module:/etc/pam.d/x:pam_x": "yes"}
    assert parse_sudoers(["#includedir /etc/sudoers.d\n# u ALL=(ALL) NOPASSWD: ALL\nDefaults use_pty, !use_pty\n"]
                         )["sudoers.use_pty"] == "no"
    rules = parse_audit_rules(["-a always,exit -F path=/usr/bin/sudo -F perm=x -k priv\n-e 2\n"])
    assert rules["audit.watch:/usr/bin/sudo"] == "x" and rules["audit.immutable"] == "yes"
