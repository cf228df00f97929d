"""Listening sockets and established connections, from /proc/net/{tcp,tcp6,udp,udp6}.

The tables are the agent's own network namespace (a sidecar sharing the workload's namespace sees the
workload's sockets). Parsing them is cheap; finding the owning pid means scanning /proc/*/fd, so that scan
runs only when a socket appears whose inode is not yet known, reads likely owners first (new processes,
recent socket holders) and keeps what it found between cycles (inode -> pid, exe, user). Each new
connection is reported with its owner: pid, exe, user, and the exact remote address and port.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import time
from pathlib import Path
from typing import Any

from collectors import signals
from collectors.probes.base import Emit, Probe
from collectors.safe import absent, clean, read_text
from contract.events import Kind

TCP_LISTEN, TCP_ESTABLISHED, UDP_UNCONNECTED = "0A", "01", "07"
TABLES = ("tcp", "tcp6", "udp", "udp6")

SockKey = tuple[str, str, str, int, str, int]


def decode_addr(text: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080). /proc/net stores addresses as host-order 32-bit words."""
    hex_addr, hex_port = text.split(":")
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.IPv4Address(words) if len(words) == 4 else ipaddress.IPv6Address(words)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return str(addr), int(hex_port, 16)


def parse_table(text: str, proto: str) -> list[tuple[SockKey, int]]:
    """(key, inode) for listening and established sockets in one /proc/net table; bad lines skipped."""
    out: list[tuple[SockKey, int]] = []
    udp = proto.startswith("udp")
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or (not udp and fields[3] not in (TCP_LISTEN, TCP_ESTABLISHED)):
            continue  # e.g. TIME_WAIT: skipped before any decoding (busy hosts have thousands)
        try:
            laddr, lport = decode_addr(fields[1])
            raddr, rport = decode_addr(fields[2])
            st, inode = fields[3], int(fields[9])
        except (ValueError, IndexError):
            continue
        if udp:
            state = "listen" if rport == 0 else "established"
        elif st == TCP_LISTEN:
            state = "listen"
        elif st == TCP_ESTABLISHED:
            state = "established"
        else:
            continue
        if state == "listen":
            raddr, rport = "", 0
        out.append(((state, proto, laddr, lport, raddr, rport), inode))
    return out


def _socket_inode(link_path: str) -> int:
    """The socket inode an fd link points to, or 0 for anything else (or a vanished fd)."""
    try:
        link = os.readlink(link_path)
    except OSError:
        return 0
    return int(link[8:-1]) if link.startswith("socket:[") else 0


class NetworkProbe(Probe):
    name = "network"

    def __init__(self, interval: float = 10.0, inventory_interval: float | None = 600.0,
                 proc: Path = Path("/proc"), max_sockets: int = 5000, full_scan_s: float = 30.0) -> None:
        super().__init__(interval, inventory_interval)
        self.proc = proc
        self.max_sockets = max_sockets
        self.open: dict[SockKey, dict[str, Any]] = {}
        self._owners: dict[int, tuple[int, str, str]] = {}
        self._users: dict[int, str] = {}
        self._seen_pids: set[str] = set()
        self._socket_pids: set[str] = set()
        self._last_owner: dict[str, float] = {}
        self._full_scan_at = -1e9
        self.full_scan_s = full_scan_s
        self._waiting: dict[SockKey, int] = {}
        self._started = False
        self.truncated = False

    def sockets(self) -> dict[SockKey, int]:
        found: dict[SockKey, int] = {}
        for table in TABLES:
            text = read_text(self.proc / "net" / table)
            if text is None:
                continue
            for key, inode in parse_table(text, table):
                found.setdefault(key, inode)
        self.truncated = len(found) > self.max_sockets
        if self.truncated:
            signals.input_truncated.emit(what="sockets")
            found = dict(sorted(found.items())[: self.max_sockets])
        return found

    def scan_owners(self, wanted: set[int]) -> bool:
        """Map socket inodes to (pid, exe) from /proc/<pid>/fd links.

        First only the likely owners are read: processes started since the last scan and processes that
        held sockets then. If an inode is still unowned, every process is read, at most once per
        `full_scan_s`; until then such a socket waits (at most full_scan_s). Returns True when every
        process was read, so an owner still missing will not be found (its process already exited:
        the socket is reported with pid 0).
        """
        proc = str(self.proc)
        pids = [n for n in absent(lambda: os.listdir(proc)) or [] if n.isdigit()]
        fresh = [n for n in pids if n not in self._seen_pids]  # new processes first: the usual owners
        holders = [n for n in pids if n in self._socket_pids and n in self._seen_pids]
        holders.sort(key=lambda n: -self._last_owner.get(n, 0))  # recent owners of new sockets first
        likely = fresh + holders
        found = self._read_fds(likely, wanted)
        missing = wanted - found.keys()
        complete = len(likely) == len(pids)
        if missing and not complete and time.monotonic() - self._full_scan_at >= self.full_scan_s:
            self._full_scan_at = time.monotonic()
            checked = set(likely)
            found.update(self._read_fds([n for n in pids if n not in checked], missing))
            complete = True
        self._seen_pids = set(pids)
        self._socket_pids &= self._seen_pids
        self._last_owner = {n: t for n, t in self._last_owner.items() if n in self._seen_pids}
        now = time.monotonic()
        for inode, name in found.items():
            self._last_owner[name] = now
            exe = absent(lambda n=name: os.readlink(f"{proc}/{n}/exe")) or ""  # type: ignore[misc]
            self._owners[inode] = (int(name), clean(exe, 4096)[0], self._user(name))
        return complete

    def _user(self, pid: str) -> str:
        """The owner's user name (its real uid's, looked up once per uid); "" if unknown."""
        for line in (read_text(f"{self.proc}/{pid}/status") or "").splitlines():
            if line.startswith("Uid:"):
                words = line.split()
                if len(words) < 2 or not words[1].isdigit():
                    return ""
                uid = int(words[1])
                if uid not in self._users:
                    try:
                        self._users[uid] = pwd.getpwuid(uid).pw_name
                    except KeyError:  # a uid without a passwd entry (e.g. a container's): the number
                        self._users[uid] = str(uid)
                return self._users[uid]
        return ""

    def _read_fds(self, names: list[str], wanted: set[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for name in names:
            fd_dir = f"{self.proc}/{name}/fd"
            fds = absent(lambda d=fd_dir: os.listdir(d)) or []  # type: ignore[misc]
            for fd in fds:
                inode = _socket_inode(f"{fd_dir}/{fd}")
                if inode:
                    self._socket_pids.add(name)
                    if inode in wanted:
                        found[inode] = name
            if len(found) == len(wanted):
                break
        return found

    def collect(self, full: bool) -> list[Emit]:
        now = self.sockets()
        new_keys = [k for k in now if k not in self.open]
        unknown = {now[k] for k in new_keys if now[k] and now[k] not in self._owners}
        final = self.scan_owners(unknown) if unknown else True
        final = final or not self._started
        out: list[Emit] = []
        for key in sorted(self.open.keys() - now.keys()):
            out.append((Kind.NET_CLOSE, self.open.pop(key)))
        for key in sorted(self._waiting.keys() - now.keys()):  # gone before its owner was found
            sock = self._sock(key, self._waiting.pop(key))
            out += [(Kind.NET_OPEN, sock), (Kind.NET_CLOSE, sock)]
        live_inodes = set(now.values())
        self._owners = {i: o for i, o in self._owners.items() if i in live_inodes}
        for key in sorted(new_keys):
            inode = now[key]
            if not final and inode and inode not in self._owners:
                self._waiting[key] = inode  # reported once a full scan has looked for its owner
                continue
            self._waiting.pop(key, None)
            sock = self.open[key] = self._sock(key, inode)
            if self._started:
                out.append((Kind.NET_OPEN, sock))
        self._started = True
        if full:
            items = [self.open[k] for k in sorted(self.open)]
            out.append((Kind.NET_INVENTORY, {"items": items, "truncated": self.truncated}))
        return out

    def _sock(self, key: SockKey, inode: int) -> dict[str, Any]:
        state, proto, laddr, lport, raddr, rport = key
        pid, exe, user = self._owners.get(inode, (0, "", ""))
        return {"state": state, "proto": proto, "laddr": laddr, "lport": lport, "raddr": raddr,
                "rport": rport, "pid": pid, "exe": exe, "user": user}

    @property
    def count(self) -> int:
        return len(self.open)
