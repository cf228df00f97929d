"""Probe logic on controlled input: /proc/net parsing, auth lines, log rotation, config change
detection with before/after, package databases, kernel modules, metric deltas."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from collectors.probes import ConfigProbe, MetricsProbe, ModuleProbe, NetworkProbe, PackageProbe
from collectors.probes.logins import LogFollower, LoginProbe, parse_auth_line
from collectors.probes.network import RECHECK_S, decode_addr, parse_table
from collectors.probes.packages import parse_apk_installed, parse_dpkg_status
from contract.events import Kind


def changes(out: list, kind: Kind) -> list[dict]:
    return [p for k, p in out if k is kind]


def before_after(out: list) -> dict[str, tuple]:
    return {c["key"]: (c["before"], c["after"]) for c in changes(out, Kind.CONFIG_CHANGE)}


def test_decode_proc_net_addresses() -> None:
    assert decode_addr("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_addr("00000000000000000000000001000000:0016") == ("::1", 22)
    assert decode_addr("0000000000000000FFFF00000100007F:0050") == ("127.0.0.1", 80)  # v4-mapped


def test_parse_table_keeps_listen_and_established_only() -> None:
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout\n"
            "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 101 1\n"
            "   1: 0100007F:A000 0100007F:0016 01 00000000:00000000 00:00000000 00000000 0 0 102 1\n"
            "   2: 0100007F:A001 0100007F:0016 06 00000000:00000000 00:00000000 00000000 0 0 0 1\n")
    got = parse_table(text, "tcp")
    assert got == [(("listen", "tcp", "0.0.0.0", 22, "", 0), 101),
                   (("established", "tcp", "127.0.0.1", 40960, "127.0.0.1", 22), 102)]


def _until(probe: NetworkProbe, kind: Kind, port: int) -> list[dict[str, Any]]:
    """The probe's `kind` changes for `port`, from runs until one reports it, for at most RECHECK_S and a
    run: a socket replaced by another of its kind within one run (other tests beside this one) moves no
    count, and is seen at the next recheck (collectors/probes/network.py)."""
    deadline = time.monotonic() + RECHECK_S + 2.0
    while True:
        got = [p for p in changes(probe.collect(full=False), kind) if p["lport"] == port]
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_network_probe_sees_a_socket_open_and_close_with_its_owner() -> None:
    probe = NetworkProbe()
    probe.collect(full=True)
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    s.listen()
    port = s.getsockname()[1]
    assert _until(probe, Kind.NET_OPEN, port) == [
        {"state": "listen", "proto": "tcp6", "laddr": "::1", "lport": port, "raddr": "", "rport": 0,
         "pid": os.getpid(), "exe": os.path.realpath(f"/proc/{os.getpid()}/exe"),
         "user": pwd.getpwuid(os.getuid()).pw_name}]
    s.close()
    assert [p["lport"] for p in _until(probe, Kind.NET_CLOSE, port)] == [port]


def test_auth_lines() -> None:
    assert parse_auth_line("Mar 1 vm sshd[9]: Failed password for root from 192.0.2.1 port 22 ssh2") == {
        "user": "root", "outcome": "failure", "source": "192.0.2.1", "method": "password", "service": "sshd"}
    assert parse_auth_line("Mar 1 vm sshd[9]: Accepted publickey for bob from 2001:db8::1 port 2 ssh2") == {
        "user": "bob", "outcome": "success", "source": "2001:db8::1", "method": "publickey",
        "service": "sshd"}
    sudo_fail = ("Mar 1 vm sudo: pam_unix(sudo:auth): authentication failure; logname=bob uid=1000 euid=0 "
                 "tty=/dev/pts/0 ruser=bob rhost=  user=bob")
    assert parse_auth_line(sudo_fail) == {"user": "bob", "outcome": "failure", "source": "",
                                          "method": "password", "service": "sudo"}
    sudo_ok = parse_auth_line("Mar 1 vm sudo:    bob : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id")
    assert sudo_ok is not None and sudo_ok["outcome"] == "success"
    assert parse_auth_line("Mar 1 vm sshd[9]: pam_unix(sshd:auth): authentication failure; user=root") is None
    assert parse_auth_line("Mar 1 vm CRON[5]: pam_unix(cron:session): session opened for user root") is None
    assert parse_auth_line("no service here") is None
    journal = parse_auth_line("Failed password for eve from 192.0.2.9 port 1 ssh2", service="sshd")
    assert journal is not None and journal["user"] == "eve"


def test_log_follower_survives_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("old line before the agent\n")
    follower = LogFollower(log, 1_000_000, from_start_if_newer_than=None)
    assert follower.read_lines() == []  # history before the agent started is not replayed
    with open(log, "a") as f:
        f.write("one\ntw")
    assert follower.read_lines() == ["one"]
    with open(log, "a") as f:
        f.write("o\n")
    assert follower.read_lines() == ["two"]
    log.rename(tmp_path / "auth.log.1")
    log.write_text("after rotation\n")
    assert follower.read_lines() == ["after rotation"]
    log.write_text("")
    log.write_text("x\n")  # truncated and rewritten (copytruncate)
    assert follower.read_lines() == ["x"]


def test_log_written_this_boot_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("vm sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2\n")
    probe = LoginProbe(auth_logs=[log], boot_time=0.0)
    out = probe.collect(full=True)
    assert changes(out, Kind.AUTH_ATTEMPT)[0]["user"] == "root" and probe.failed_total == 1
    assert changes(out, Kind.LOGIN_INVENTORY)[0]["items"] == []  # nobody logged in here
    assert probe.collect(full=False) == []  # unchanged users are not re-sent


def test_config_changes_with_before_and_after(fake_root: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys/net/ipv4").mkdir(parents=True)
    (proc / "sys/net/ipv4/ip_forward").write_text("0\n")
    probe = ConfigProbe(root=fake_root, proc=proc)
    inventory = changes(probe.collect(full=True), Kind.CONFIG_INVENTORY)[0]["items"]
    assert inventory["sshd.permitrootlogin"] == "no"  # first value wins, as in sshd
    assert inventory["sshd.x11forwarding"] == "yes"  # from the Include'd file
    assert inventory["sysctl.net.ipv4.ip_forward"] == "0"
    assert inventory["group.sudo"] == "27:alice" and inventory["file.mode:/etc/passwd"] == "0644"
    assert probe.collect(full=False) == []  # nothing changed: nothing re-read, nothing sent

    (proc / "sys/net/ipv4/ip_forward").write_text("1\n")
    (fake_root / "etc/ssh/sshd_config.d/10-x.conf").write_text("X11Forwarding no\n")
    (fake_root / "etc/passwd").chmod(0o666)
    keys = fake_root / "home/alice/.ssh/authorized_keys"
    old_keys = inventory["authorized_keys:alice"]
    keys.write_text(keys.read_text() + "ssh-rsa AAAB intruder\n")
    (fake_root / "etc/cron.d").mkdir()
    (fake_root / "etc/cron.d/miner").write_text("* * * * * root /tmp/.x/run\n")
    got = before_after(probe.collect(full=False))
    assert got["sysctl.net.ipv4.ip_forward"] == ("0", "1")
    assert got["sshd.x11forwarding"] == ("yes", "no")
    assert got["file.mode:/etc/passwd"] == ("0644", "0666")
    assert got["authorized_keys:alice"][0] == old_keys and got["authorized_keys:alice"][1] != old_keys
    assert got["file.sha256:/etc/cron.d/miner"][0] is None
    (fake_root / "etc/cron.d/miner").unlink()
    got = before_after(probe.collect(full=False))
    assert got["file.sha256:/etc/cron.d/miner"][1] is None and got["file.mode:/etc/cron.d/miner"][1] is None


def test_unreadable_config_file_is_flagged_not_fatal(fake_root: Path) -> None:
    (fake_root / "etc/sudoers").unlink()
    (fake_root / "etc/sudoers").mkdir()  # something that cannot be read as a file
    items = changes(ConfigProbe(root=fake_root).collect(full=True), Kind.CONFIG_INVENTORY)[0]["items"]
    assert items["file.sha256:/etc/sudoers"] == "unreadable"


def test_package_databases(fake_root: Path) -> None:
    status = fake_root / "var/lib/dpkg/status"
    assert parse_dpkg_status(status.read_text()) == {"openssh-server": "1:9.2p1-2", "bash": "5.2.15-2"}
    assert parse_apk_installed("P:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36.1-r5\n") == {"musl": "1.2.4-r2",
                                                                                      "busybox": "1.36.1-r5"}
    probe = PackageProbe(root=fake_root)
    inventory = changes(probe.collect(full=True), Kind.PACKAGE_INVENTORY)[0]
    assert inventory["manager"] == "dpkg" and inventory["items"]["bash"] == "5.2.15-2"
    status.write_text(status.read_text().replace("5.2.15-2", "5.2.15-2+deb12u1"))
    assert changes(probe.collect(full=False), Kind.PACKAGE_CHANGE) == [
        {"key": "bash", "before": "5.2.15-2", "after": "5.2.15-2+deb12u1"}]


def test_modules_and_their_absence(fake_proc: Path, tmp_path: Path) -> None:
    probe = ModuleProbe(proc=fake_proc)
    assert changes(probe.collect(full=True), Kind.MODULE_INVENTORY)[0]["items"] == {"ext4": "loaded",
                                                                                    "nf_tables": "loaded"}
    (fake_proc / "modules").write_text("ext4 1 0 - Live 0x0\n")
    assert changes(probe.collect(full=False), Kind.MODULE_CHANGE) == [
        {"key": "nf_tables", "before": "loaded", "after": None}]
    empty = ModuleProbe(proc=tmp_path / "nothing").collect(full=True)
    assert empty == [(Kind.MODULE_INVENTORY, {"items": {}, "available": False})]


def test_metric_deltas_never_go_negative() -> None:
    t = [0.0]
    failed = [0]
    probe = MetricsProbe(procs=lambda: 3, conns=lambda: 2, failed_logins=lambda: failed[0],
                         clock=lambda: t[0])
    first_payload = probe.collect(full=False)[0][1]
    first = first_payload["values"]
    assert "net_bytes_out" not in first and first["procs"] == 3.0 and first["conns"] == 2.0
    assert first_payload["every_s"] == 30.0  # the configured interval, beside the measured interval_s
    t[0] += 30
    failed[0] = 4
    second = probe.collect(full=False)[0][1]["values"]
    assert second["failed_logins"] == 4.0 and second["interval_s"] == 30.0 and second["net_bytes_in"] >= 0
    t[0] += 30
    failed[0] = 1  # a counter that went backwards (reset)
    assert probe.collect(full=False)[0][1]["values"]["failed_logins"] == 1.0


def test_socket_of_an_old_process_waits_for_a_full_owner_scan(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = ("import socket, sys, time, pathlib\n"
            "p = pathlib.Path(sys.argv[1])\n"
            "while not p.exists(): time.sleep(0.01)\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True)\n"
            "time.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(ready)], stdout=subprocess.PIPE, text=True)
    try:
        probe = NetworkProbe(full_scan_s=3600)
        probe.collect(full=False)  # the child is known now, and holds no socket
        probe._full_scan_at = time.monotonic()  # a full scan just ran: the next one is far away
        ready.touch()
        port = int(child.stdout.readline())  # type: ignore[union-attr]
        assert not [p for p in changes(probe.collect(full=False), Kind.NET_OPEN) if p["lport"] == port]
        probe._full_scan_at = -1e9  # time for a full scan
        opened = [p for p in changes(probe.collect(full=False), Kind.NET_OPEN) if p["lport"] == port]
        assert [p["pid"] for p in opened] == [child.pid]
    finally:
        child.kill()
        child.wait()


def test_auth_log_lines_written_while_the_agent_was_down_are_read_after_restart(tmp_path: Path) -> None:
    log, state = tmp_path / "auth.log", tmp_path / "authlog.json"
    log.write_text("before the agent\n")
    first = LogFollower(log, 1_000_000, state_file=state)
    assert first.read_lines() == []
    with open(log, "a") as f:
        f.write("seen by the first run\n")
    assert first.read_lines() == ["seen by the first run"]
    with open(log, "a") as f:
        f.write("written during the restart\n")
    assert LogFollower(log, 1_000_000, state_file=state).read_lines() == ["written during the restart"]
