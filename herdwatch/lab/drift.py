"""Hosts drifting from their image as people fix things by hand: one hardening-relevant change made on one
lab host (its own copy of /etc/ssh, its own network namespace), never on its image. Each is ground truth of
kind `drift` (an expected host finding, neither an attack nor a false alarm), and the report's hardening
decay shows the share of the image's hosts still matching it by host age."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from herdwatch.lab import netns


@dataclass(frozen=True)
class Drift:
    name: str
    description: str
    changes: dict[str, str]
    """The configuration keys the agent reports after the change, with their new values (turning forwarding
    on also turns accept_redirects off: the kernel does)."""
    evidence: tuple[str, ...]
    """What a finding about the change names (any one, any case; see attacks.Attack.evidence): the keys it
    moves, also the file hash an sshd_config edit changes."""


DRIFTS: dict[str, Drift] = {d.name: d for d in [
    Drift("sshd-x11", "X11Forwarding turned on in sshd_config (someone running a graphical tool over ssh)",
          {"sshd.x11forwarding": "yes"}, ("x11forwarding", "x11-forwarding", "file.sha256:/etc/ssh/sshd_config")),
    Drift("sshd-config-mode", "sshd_config left readable by everyone (chmod 644 after editing it)",
          {"file.mode:/etc/ssh/sshd_config": "0644"}, ("/etc/ssh/sshd_config", "ssh-config-mode")),
    Drift("ip-forward", "IPv4 forwarding turned on (sysctl net.ipv4.ip_forward=1 while chasing an outage)",
          {"sysctl.net.ipv4.ip_forward": "1", "sysctl.net.ipv4.conf.all.accept_redirects": "0"},
          ("ip_forward", "ip-forward", "accept_redirects")),
]}


def set_sshd_option(text: str, keyword: str, value: str) -> str:
    """sshd_config text with `keyword` set to `value`: its first line changed (sshd takes the first value),
    or the keyword added at the top."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        words = line.split()
        if words and words[0].lower() == keyword.lower():
            lines[i] = f"{keyword} {value}"
            return "\n".join(lines) + "\n"
    return f"{keyword} {value}\n" + text


def apply_drift(name: str, fs: Path, ns: str) -> Drift:
    """Make drift `name` on the host whose per-host files are under `fs` and whose network namespace is `ns`."""
    drift = DRIFTS[name]
    sshd_config = fs / "etc_ssh" / "sshd_config"
    if name == "sshd-x11":
        mode = sshd_config.stat().st_mode & 0o7777
        sshd_config.write_text(set_sshd_option(sshd_config.read_text(), "X11Forwarding", "yes"))
        os.chmod(sshd_config, mode)
    elif name == "sshd-config-mode":
        os.chmod(sshd_config, 0o644)
    elif name == "ip-forward":
        netns.sh("ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    return drift
