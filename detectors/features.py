"""Features from telemetry: the stable, comparable strings that describe what a host is doing.

A set feature is `<kind>:<value>`. Kinds and what they hold:

    proc:<exe>|<normalised cmdline>|<user>     process identity
    pc:<parent exe>><child exe>                 parent -> child pair
    listen:<proto>/<port>@<scope>|<exe>          listening socket (scope any/local/addr; ephemeral -> eph)
    dest:<proto>/<remote port>@<network>         outbound destination (port + /24 private, /16 public)
    login:<user>                                 a logged-in user
    mod:<name>                                   a loaded kernel module
    cfg:<key>=<value>                            a configuration value or file hash/mode
    pkg:<name>=<version>                         an installed package version

Volatile parts are normalised away so clones produce identical strings: pids and ephemeral ports are
dropped, numbers and hex/uuid runs in command lines become `#`, temp-file names become `*`, and the user
name in per-connection sshd process titles ("sshd: oracle [priv]") becomes `*`.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

IMMEDIATE_KINDS = frozenset({"proc", "pc", "listen", "dest", "login"})
"""Behaviour features: judged a few seconds after they appear (a short confirmation window)."""
STATE_KINDS = frozenset({"cfg", "pkg", "mod"})
"""Configuration state: judged after a grace period against the cohort majority (drift)."""

EPHEMERAL_PORT = 32768
MAX_CMDLINE = 160
MAX_VALUE = 80
PUBLIC_WEB_PORTS = frozenset({80, 443})
"""Outbound web traffic to public addresses aggregates to `public` (CDN addresses change constantly)."""

_HEX = re.compile(r"\b[0-9a-fA-F]{8,}\b|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TEMP = re.compile(r"(/(?:tmp|var/tmp|dev/shm)/)(?:(?=[^/\s]*\d)|(?=tmp\w{6}))[^/\s]+")
_NUM = re.compile(r"\d+")
_SSHD_SESSION = re.compile(r"^sshd(?:-session)?: \S+ \[(priv|net|preauth|accepted)\]|^sshd(?:-session)?: \S+@\S+")
_SPACE = re.compile(r"\s+")


def kind_of(feature: str) -> str:
    """The kind prefix of a feature string ("proc", "cfg", ...)."""
    i = feature.find(":")
    return feature[:i] if i > 0 else ""


@lru_cache(maxsize=65536)
def normalise_cmdline(cmdline: str) -> str:
    """Command line without its volatile parts (numbers, hashes, temp names), collapsed and truncated."""
    m = _SSHD_SESSION.match(cmdline)
    if m:  # per-connection sshd titles carry the (attacker-chosen) user name
        return f"sshd: * [{m.group(1)}]" if m.group(1) else "sshd: *@session"
    s = _TEMP.sub(r"\1*", cmdline)
    s = _HEX.sub("#", s)
    s = _NUM.sub("#", s)
    s = _SPACE.sub(" ", s).strip()
    return s[:MAX_CMDLINE]


def proc_feature(exe: str, cmdline: str, user: str) -> str:
    return f"proc:{exe}|{normalise_cmdline(cmdline)}|{user}"


def parent_feature(parent_exe: str, exe: str) -> str:
    return f"pc:{parent_exe}>{exe}"


def _scope(addr: str) -> str:
    if addr in ("", "0.0.0.0", "::", "*"):
        return "any"
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    return "local" if ip.is_loopback else str(ip)


def listen_feature(proto: str, lport: int, laddr: str, exe: str) -> str:
    port = "eph" if lport >= EPHEMERAL_PORT else str(lport)
    return f"listen:{proto}/{port}@{_scope(laddr)}|{exe}"


@lru_cache(maxsize=65536)
def network_of(addr: str, port: int = 0) -> str:
    """A stable network name for a remote address: local, public (web ports), or a /24 or /16 prefix."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr or "?"
    if ip.is_loopback:
        return "local"
    if ip.version == 6:
        mapped = ip.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return network_of(str(mapped), port)
        return str(ipaddress.ip_network(f"{ip}/48", strict=False))
    if ip.is_private or ip.is_link_local:
        return str(ipaddress.ip_network(f"{ip}/24", strict=False))
    if port in PUBLIC_WEB_PORTS:
        return "public"
    return str(ipaddress.ip_network(f"{ip}/16", strict=False))


def dest_feature(proto: str, raddr: str, rport: int) -> str:
    port = "eph" if rport >= EPHEMERAL_PORT else str(rport)
    return f"dest:{proto.rstrip('6')}/{port}@{network_of(raddr, rport)}"


def login_feature(user: str) -> str:
    return f"login:{user}"


def module_feature(name: str) -> str:
    return f"mod:{name}"


def _value(v: object) -> str:
    s = str(v)
    return s[:MAX_VALUE]


def config_feature(key: str, value: object) -> str:
    return f"cfg:{key}={_value(value)}"


def package_feature(name: str, version: object) -> str:
    return f"pkg:{name}={_value(version)}"


def split_state(feature: str) -> tuple[str, str, str]:
    """("cfg", key, value) for a cfg:/pkg: feature; value "" for mod: and other kinds."""
    kind = kind_of(feature)
    rest = feature[len(kind) + 1 :]
    if kind in ("cfg", "pkg"):
        key, _, value = rest.partition("=")
        return kind, key, value
    return kind, rest, ""


def describe(feature: str) -> str:
    """A phrase for explanations: "process /tmp/x (cmdline 'x', user root)"."""
    kind = kind_of(feature)
    rest = feature[len(kind) + 1 :]
    if kind == "proc":
        exe, cmd, user = [*rest.split("|"), "", ""][:3]
        return f"process {exe} run as {user} (command line '{cmd}')"
    if kind == "pc":
        parent, _, child = rest.partition(">")
        return f"process {child} started by {parent}"
    if kind == "listen":
        sock, _, exe = rest.partition("|")
        return f"listening socket {sock}" + (f" owned by {exe}" if exe else "")
    if kind == "dest":
        return f"outbound connection to {rest}"
    if kind == "login":
        return f"logged-in user {rest}"
    if kind == "mod":
        return f"kernel module {rest}"
    if kind == "cfg":
        key, _, value = rest.partition("=")
        return f"configuration {key} = {value}"
    if kind == "pkg":
        name, _, version = rest.partition("=")
        return f"package {name} {version}"
    return feature
