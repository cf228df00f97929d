"""The Linux commands the lab runs: a bridge with a pinned MAC, veth pairs, network namespaces, hosts
started in new PID, mount and UTS namespaces. Every command's failure names the command and its output."""

from __future__ import annotations

import subprocess


class LabCommandError(RuntimeError):
    pass


def sh(*args: str, check: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabCommandError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def netns_list() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def link_list() -> list[str]:
    names = []
    for line in sh("ip", "-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def routes() -> str:
    return sh("ip", "-4", "route", "show")


def make_bridge(name: str, mac: str, address: str) -> None:
    sh("ip", "link", "add", name, "type", "bridge")
    sh("ip", "link", "set", name, "address", mac)  # pinned: adding a veth must not change it
    sh("ip", "addr", "add", address, "dev", name)
    sh("ip", "link", "set", name, "up")


def make_netns(ns: str, bridge: str, veth: str, peer: str, address: str) -> None:
    """A network namespace with loopback and eth0 (`address`, CIDR) on `bridge`. No default route: the
    namespace reaches its own subnet only."""
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
    sh("ip", "link", "set", peer, "netns", ns)
    sh("ip", "link", "set", veth, "master", bridge)
    sh("ip", "link", "set", veth, "up")
    sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "name", "eth0")
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", address, "dev", "eth0")
    sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
    sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def delete_netns(ns: str) -> None:
    sh("ip", "netns", "delete", ns, check=False)


def delete_link(name: str) -> None:
    sh("ip", "link", "delete", name, check=False)


def host_command(ns: str, argv: list[str]) -> list[str]:
    """`argv` as PID 1 of new PID, mount and UTS namespaces inside network namespace `ns` (its own /proc)."""
    return ["ip", "netns", "exec", ns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount",
            "--uts", "--propagation", "private", *argv]


def enter_command(pid: int, argv: list[str]) -> list[str]:
    """`argv` inside every namespace of the host whose PID 1 has `pid` (as seen from here)."""
    return ["nsenter", "--target", str(pid), "--net", "--pid", "--mount", "--uts", "--", *argv]
