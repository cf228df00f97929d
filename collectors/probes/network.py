"""Listening sockets and established connections (TCP and UDP, IPv4 and IPv6) of the agent's own network
namespace (a sidecar sharing the workload's namespace sees the workload's sockets).

Where they come from (`source_info()`, also in agent.hello): the kernel's sock_diag netlink interface
(collectors/probes/sock_diag.py, what `ss` uses; mode "netlink"), or /proc/net/{tcp,tcp6,udp,udp6} where
netlink is refused (mode "proc", with the reason). A dump that fails is counted
(collector_netlink_errors) and that run reads /proc/net instead; three failures in a row switch to /proc/net.

Cost: listing established TCP sockets makes the kernel walk its whole established-socket hash (262,144
buckets on an 8 GB VM: ~1.2 ms per walk, whatever few sockets there are; /proc/net/tcp and tcp6 walk it
once each, netlink once for both families, collectors/probes/sock_diag.py). In netlink mode that walk runs
only when the kernel's own TCP counters of the namespace (/proc/self/net/snmp: ActiveOpens, PassiveOpens,
CurrEstab) say the set may have changed: every new connection counts an open, and every connection leaving
ESTABLISHED or CLOSE_WAIT lowers CurrEstab, so with the counters unchanged and no half-open socket at the
last walk the set is the same. The walk also runs in the run after any change (a socket is hashed just
after its open is counted) and every RECHECK_S whatever the counters say.

Listeners and UDP sockets cost too: each of their four dumps walks a hash of its own (the listening hash,
the UDP table: 16,384 slots each on this 8 GB VM, together a quarter of the established hash). They are dumped
when the namespace's in-use counts of TCP, TCP6, UDP and UDP6 sockets (/proc/self/net/sockstat and
sockstat6; the kernel counts a socket when it enters those hashes and uncounts it when it leaves) or the
TCP counters above moved, and every RECHECK_S. A new listener or UDP socket always moves a count; what a
count cannot tell is one socket replaced by another within one run with no TCP open or close meanwhile
(a listener closed as another opens, or a UDP socket bound earlier that connects): that is seen within
RECHECK_S. When nothing was dumped again the socket set is the last one, and a run reports nothing without
diffing it.

The counter files are read with one read each (open, read, close: procfs gives the whole file in one read),
not through collectors/safe.py's general reader, whose megabyte buffer costs more than the file.

Finding the owning pid means scanning /proc/*/fd, so that scan runs only when a socket appears whose inode
is not yet known, reads likely owners first (new processes, recent socket holders) and keeps what it found
between cycles (inode -> pid, exe, user). Each new connection is reported with its owner: pid, exe, user,
and the exact remote address and port.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collectors import signals
from collectors.probes.base import Emit, Probe
from collectors.probes.sock_diag import ALL_STATES as ALL
from collectors.probes.sock_diag import CONNECTED, LISTENING, TCP_BOTH, Dump, DumpError, SockDiag, SockKey
from collectors.safe import absent, clean, read_text
from contract.events import Kind

TCP_LISTEN, TCP_ESTABLISHED, TCP_CLOSE_WAIT, UDP_UNCONNECTED = "0A", "01", "08", "07"
TABLES = ("tcp", "tcp6", "udp", "udp6")
RECHECK_S = 30.0
"""In netlink mode, established TCP sockets are listed at least this often whatever the counters say."""
MAX_FAILURES = 3
"""Netlink dumps failing this many runs in a row: the probe reads /proc/net from then on."""
SNMP = "/proc/self/net/snmp"
"""The TCP counters of the agent's network namespace (the one its netlink socket dumps)."""
SOCKSTAT = ("/proc/self/net/sockstat", "/proc/self/net/sockstat6")
"""The in-use socket counts of that namespace (IPv4, IPv6)."""
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

log = logging.getLogger("herdwatch.collector")

__all__ = ["NetworkProbe", "SockKey", "decode_addr", "parse_table", "tcp_counters"]


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
        if len(fields) < 10 or (not udp and fields[3] not in (TCP_LISTEN, TCP_ESTABLISHED, TCP_CLOSE_WAIT)):
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
        elif st in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):  # CLOSE_WAIT: the peer closed, the process holds it
            state = "established"
        else:
            continue
        if state == "listen":
            raddr, rport = "", 0
        out.append(((state, proto, laddr, lport, raddr, rport), inode))
    return out


def tcp_counters(text: str) -> tuple[int, int, int] | None:
    """(ActiveOpens, PassiveOpens, CurrEstab) from the text of /proc/net/snmp; None if it does not hold them."""
    rows = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) != 2 or len(rows[0]) != len(rows[1]):
        return None
    values = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    try:
        return int(values["ActiveOpens"]), int(values["PassiveOpens"]), int(values["CurrEstab"])
    except (KeyError, ValueError):
        return None


def socket_counts(text: str) -> tuple[int, ...] | None:
    """The in-use counts of the TCP, UDP, TCP6 and UDP6 lines of /proc/net/sockstat + sockstat6 text (the
    IPv6 ones where the file has them); None without the TCP and UDP lines."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in ("TCP:", "UDP:", "TCP6:", "UDP6:") and words[1] == "inuse":
            try:
                found[words[0]] = int(words[2])
            except ValueError:
                return None
    if "TCP:" not in found or "UDP:" not in found:
        return None
    return tuple(found.get(name, -1) for name in ("TCP:", "UDP:", "TCP6:", "UDP6:"))


def read_small(path: str, limit: int = 65536) -> str:
    """A small procfs file's text in one read ("" if absent or unreadable)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return ""
    try:
        return os.read(fd, limit).decode("ascii", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _socket_inode(link_path: str) -> int:
    """The socket inode an fd link points to, or 0 for anything else (or a vanished fd)."""
    try:
        link = os.readlink(link_path)
    except OSError:
        return 0
    return int(link[8:-1]) if link.startswith("socket:[") else 0


class NetworkProbe(Probe):
    name = "network"

    def __init__(self, interval: float = 1.0, inventory_interval: float | None = 600.0,
                 proc: Path = Path("/proc"), max_sockets: int = 5000, full_scan_s: float = 30.0,
                 source: str = "auto", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(interval, inventory_interval)
        self.proc = proc
        self.clock = clock
        self.diag: SockDiag | None = None
        self.reason = ""
        """Why /proc/net is read ("" in netlink mode)."""
        self.failures = 0
        self.walks = 0
        """Times the established TCP sockets were listed (netlink mode; the kernel walks its hash each time)."""
        self._connected: dict[SockKey, int] | None = None
        self._counters: tuple[int, int, int] | None = None
        self._changed_before = True
        self._half_open = False
        self._walked_at = -1e18
        self._bound: dict[SockKey, int] | None = None
        """Listeners and UDP sockets at the last time they were dumped (netlink mode)."""
        self._inuse: tuple[int, ...] | None = None
        self._listed_at = -1e18
        self.listings = 0
        """Times listeners and UDP sockets were dumped (netlink mode)."""
        self.unchanged = False
        """The last `sockets()` dumped nothing again: the set is the one before."""
        self._one_walk = True
        """Both families in one walk (the older request form) until the kernel refuses it."""
        self._open_source(source)
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

    def _open_source(self, source: str) -> None:
        if source == "proc":
            self.reason = "configured: network_source=proc"
            return
        diag = SockDiag()
        try:
            diag.open()
            diag.dump("udp")  # refused here rather than at the first run
        except (OSError, DumpError) as e:
            diag.close()
            self.reason = f"sock_diag netlink refused ({e})"
            if source == "netlink":
                log.warning("network_source=netlink but %s; reading /proc/net instead", self.reason)
            return
        self.diag = diag

    def source_info(self) -> dict[str, str]:
        """Where sockets come from: {"mode": "netlink"} or {"mode": "proc", "reason": why}."""
        return {"mode": "netlink"} if self.diag is not None else {"mode": "proc", "reason": self.reason}

    def close(self) -> None:
        if self.diag is not None:
            self.diag.close()

    def _proc_sockets(self) -> dict[SockKey, int]:
        found: dict[SockKey, int] = {}
        for table in TABLES:
            text = read_text(self.proc / "net" / table)
            if text is None:
                continue
            for key, inode in parse_table(text, table):
                found.setdefault(key, inode)
        return found

    def _netlink_sockets(self, diag: SockDiag) -> dict[SockKey, int] | None:
        """The namespace's sockets from sock_diag (None when a dump failed: counted, and the run reads
        /proc/net). Each kind is listed again only when it may have changed (module doc)."""
        counters = tcp_counters(read_small(SNMP))
        inuse = socket_counts(read_small(SOCKSTAT[0]) + read_small(SOCKSTAT[1]))
        changed = counters is None or counters != self._counters
        now = self.clock()
        walk = (changed or self._changed_before or self._half_open or self._connected is None
                or now - self._walked_at >= RECHECK_S)
        relist = (changed or inuse is None or inuse != self._inuse or self._bound is None
                  or now - self._listed_at >= RECHECK_S)
        try:
            if relist:
                bound: dict[SockKey, int] = {}
                for table, states in (("tcp", LISTENING), ("tcp6", LISTENING), ("udp", ALL), ("udp6", ALL)):
                    for key, inode in diag.dump(table, states).sockets:
                        bound.setdefault(key, inode)
                self._bound, self._listed_at = bound, now
                self.listings += 1
            if walk:
                connected: dict[SockKey, int] = {}
                half_open = 0
                for dump in self._connected_dumps(diag):
                    half_open += dump.half_open
                    for key, inode in dump.sockets:
                        connected.setdefault(key, inode)
                self._connected, self._half_open, self._walked_at = connected, half_open > 0, now
                self.walks += 1
        except DumpError as e:
            signals.netlink_errors.emit(reason=e.reason)
            self._connected = self._bound = None  # listed again at the next netlink run
            self.failures += 1
            if self.failures >= MAX_FAILURES:
                self.reason = f"sock_diag netlink failed {self.failures} runs in a row (last: {e})"
                log.warning("%s; reading /proc/net from now on", self.reason)
                diag.close()
                self.diag = None
            return None
        self.failures = 0
        self._counters, self._changed_before, self._inuse = counters, changed, inuse
        self.unchanged = not walk and not relist
        assert self._connected is not None and self._bound is not None
        found = dict(self._bound)
        for key, inode in self._connected.items():
            found.setdefault(key, inode)
        return found

    def _connected_dumps(self, diag: SockDiag) -> list[Dump]:
        """Established and half-open TCP sockets: one walk for both families, or one per family where the
        kernel refuses the older request form (then for good)."""
        if self._one_walk:
            try:
                return [diag.dump(TCP_BOTH, CONNECTED)]
            except DumpError as e:
                if e.reason != "refused":
                    raise
                self._one_walk = False
                log.info("sock_diag: one dump for both address families refused (%s); one per family", e)
        return [diag.dump("tcp", CONNECTED), diag.dump("tcp6", CONNECTED)]

    def sockets(self) -> dict[SockKey, int]:
        self.unchanged = False
        found = self._netlink_sockets(self.diag) if self.diag is not None else None
        if found is None:
            found = self._proc_sockets()
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
        if self.unchanged and not full and not self._waiting and self._started:
            return []  # nothing listed again: the same sockets as the last run, nothing to report
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
