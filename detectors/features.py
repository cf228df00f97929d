"""Features from telemetry: the stable, comparable strings that describe what a host is doing.

A set feature is `<kind>:<value>`. Kinds and what they hold:

    proc:<exe>|<normalised cmdline>|<user>     process identity
    pc:<parent exe>><child exe>                 parent -> child pair
    listen:<proto>/<port>@<scope>|<exe>          listening socket (scope any/local/addr; ephemeral -> eph)
    dest:<proto>/<remote port>@<network>         outbound destination (port + /24 private, /16 public)
    login:<user>                                 a logged-in user
    auth:<network>                               a successful login from a remote source (its /24 private or
                                                 /16 public network; user, source and method in the details)
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

IMMEDIATE_KINDS = frozenset({"proc", "pc", "listen", "dest", "login", "auth"})
"""Behaviour features: judged a few seconds after they appear (a short confirmation window)."""
STATE_KINDS = frozenset({"cfg", "pkg", "mod"})
"""Configuration state: judged after a grace period against the cohort majority (drift)."""

DETAIL_ONLY = ("cfg:authorized_keys.key:",)
"""Features that name the parts of another one and are never judged on their own: a single authorized key
(contract/ssh_keys.py) is named in the finding about its user's `authorized_keys:<user>`."""

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


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_LOCAL_SOURCES = frozenset({"", "unknown", "localhost", "local", "?"})


def auth_source(payload: dict[str, object]) -> tuple[str, dict[str, object]] | None:
    """A successful login from a remote source, from an auth.attempt payload (hostile input): the feature
    `auth:<network>` (the network of an address as for destinations; a host name as given, lower case; any
    other text `auth:unknown`) and its exact instance (user, source, method, service; printable, bounded).
    None for failures, local successes (sudo, no source) and malformed payloads."""
    if payload.get("outcome") != "success":
        return None
    source = payload.get("source")
    if not isinstance(source, str) or source.strip().lower() in _LOCAL_SOURCES:
        return None
    source = source.strip()
    try:
        ipaddress.ip_address(source)
        network = network_of(source)
    except ValueError:
        network = source.lower().rstrip(".") if _HOSTNAME.fullmatch(source) else "unknown"
    details: dict[str, object] = {"source": printable(" ".join(source.split()), 64)}
    for name, limit in (("user", 64), ("method", 32), ("service", 32)):
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            details[name] = printable(" ".join(value.split()), limit)
    return f"auth:{network[:MAX_VALUE]}", details


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
    """A phrase for explanations: "process /tmp/x run as root (command line 'x')". Parts a feature does not
    have are left out, never shown as empty slots."""
    kind = kind_of(feature)
    rest = feature[len(kind) + 1 :]
    if kind == "proc":
        exe, cmd, user = [*rest.split("|"), "", ""][:3]
        return (f"process {exe or 'of unknown path'}" + (f" run as {user}" if user else "")
                + (f" (command line '{cmd}')" if cmd else ""))
    if kind == "pc":
        parent, _, child = rest.partition(">")
        return f"process {child or 'of unknown path'}" + (f" started by {parent}" if parent else "")
    if kind == "listen":
        sock, _, exe = rest.partition("|")
        return f"listening socket {sock}" + (f" owned by {exe}" if exe else "")
    if kind == "dest":
        return f"outbound connection to {rest}"
    if kind == "login":
        return f"logged-in user {rest}"
    if kind == "auth":
        return f"successful login from {'an unparsable source' if rest == 'unknown' else rest}"
    if kind == "mod":
        return f"kernel module {rest}"
    if kind == "cfg":
        key, _, value = rest.partition("=")
        return f"configuration {key} = {value}"
    if kind == "pkg":
        name, _, version = rest.partition("=")
        return f"package {name} {version}"
    return feature


# ---- the exact instance behind a feature (explanations name it; cohorts compare the feature alone) --------
MAX_DETAIL_CHARS = 256
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Text safe to show in a terminal or a log line: control and bidirectional characters escaped
    (\\x1b, \\u202e), at most `limit` characters (an ellipsis marks the cut)."""
    out = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def quoted(text: str) -> str:
    """Free text (a key's comment) quoted for an explanation, unambiguously: in single quotes, or double
    quotes when it holds a single quote, or with its single quotes escaped (\\x27) when it holds both."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "\\x27") + "'"


def socket_details(sock: dict[str, object]) -> dict[str, object]:
    """The exact instance of a socket feature, from a net.open / net.inventory item (hostile input): proto,
    laddr, lport, raddr, rport and the owner's pid, exe, user. Only well-typed, non-empty values are kept
    (pid 0 and "" mean the owner was not found), strings made printable, single-spaced and bounded."""
    out: dict[str, object] = {}
    for name, limit in (("proto", 16), ("laddr", 64), ("raddr", 64), ("exe", 1024), ("user", 64)):
        value = sock.get(name)
        if isinstance(value, str) and value.strip():
            out[name] = printable(" ".join(value.split()), limit)
    for name, top in (("lport", 65535), ("rport", 65535), ("pid", 2**31 - 1)):
        value = sock.get(name)
        if type(value) is int and 0 < value <= top:
            out[name] = value
    return out


def _endpoint(addr: object, port: object) -> str:
    if not addr:
        return f"port {port}" if port else ""
    shown = f"[{addr}]" if ":" in str(addr) else str(addr)
    return f"{shown}:{port}" if port else shown


def describe_owner(details: dict[str, object]) -> str:
    """"/usr/bin/nc (pid 812, user www-data)", only with the parts known; "" when none is."""
    exe, pid, user = details.get("exe"), details.get("pid"), details.get("user")
    extra = ", ".join(x for x in (f"pid {pid}" if pid else "", f"user {user}" if user else "") if x)
    if exe:
        return f"{exe} ({extra})" if extra else str(exe)
    return f"a process ({extra})" if extra else ""


def describe_instance(feature: str, details: dict[str, object]) -> str:
    """The exact instance behind a feature, for an explanation: "connection to 10.77.0.5:4444 (tcp) held by
    /usr/bin/nc (pid 812, user www-data)"; "" when there is nothing more exact than the feature."""
    kind = kind_of(feature)
    if details and kind == "auth":
        user, source = details.get("user"), details.get("source")
        how = ", ".join(str(x) for x in (details.get("method"), details.get("service")) if x)
        return (f"login as {user or 'an unnamed user'}" + (f" from {source}" if source else "")
                + (f" ({how})" if how else ""))
    if not details or kind not in ("dest", "listen"):
        return ""
    proto = f" ({details['proto']})" if details.get("proto") else ""
    owner = describe_owner(details)
    if kind == "dest":
        where = _endpoint(details.get("raddr"), details.get("rport"))
        if not where:
            return ""
        local = _endpoint(details.get("laddr"), details.get("lport"))
        return (f"connection to {where}{proto}" + (f" from {local}" if local else "")
                + (f" held by {owner}" if owner else ""))
    where = _endpoint(details.get("laddr"), details.get("lport"))
    if not where:
        return ""
    return f"listening on {where}{proto}" + (f" by {owner}" if owner else "")
