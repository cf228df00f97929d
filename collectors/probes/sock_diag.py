"""Sockets from the kernel's sock_diag netlink interface (NETLINK_SOCK_DIAG, what `ss` uses).

One dump request per table (tcp, tcp6, udp, udp6) in the agent's own network namespace. The kernel filters
by state, so a TCP dump carries listening and established sockets only (never the thousands of TIME_WAIT
a busy host has), and it sends binary records: no /proc/net text for the kernel to format and for us to
parse. Each record gives the addresses, ports and the socket's inode (the owner is found from the inode,
collectors/probes/network.py).

Established TCP sockets of both address families come from one request in the older inet_diag_req form
(TCPDIAG_GETSOCK, family unspecified): the kernel then walks its established-socket hash once for both,
where a request per family (inet_diag_req_v2) walks it twice (1.4 against 3.2 ms here). Listeners are not
in that dump (the kernel skips them for an unspecified family): they are asked per family, without the walk.

Every byte that comes back is treated as hostile: `parse_dump` never raises; a truncated or garbled
message, a reply to another request or an error reply makes the dump fail with a reason (the probe counts
it and reads /proc/net for that run instead).

Message layout (include/uapi/linux/netlink.h, sock_diag.h, inet_diag.h), native byte order unless noted:
  nlmsghdr         len u32, type u16, flags u16, seq u32, pid u32                             16 bytes
  inet_diag_req_v2 family u8, protocol u8, ext u8, pad u8, states u32, inet_diag_sockid      56 bytes
  inet_diag_req    family u8, src_len u8, dst_len u8, ext u8, inet_diag_sockid, states u32,
                   dbs u32 (the older form: TCP only, both families when family is 0)            60 bytes
  inet_diag_sockid sport be16, dport be16, src 16 bytes, dst 16 bytes, if u32, cookie 2x u32 48 bytes
  inet_diag_msg    family u8, state u8, timer u8, retrans u8, inet_diag_sockid,
                   expires u32, rqueue u32, wqueue u32, uid u32, inode u32                   72 bytes
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY = 18, 20
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE_WAIT, TCP_LISTEN = 1, 2, 3, 8, 10
LISTENING = 1 << TCP_LISTEN
CONNECTED = (1 << TCP_ESTABLISHED) | (1 << TCP_CLOSE_WAIT) | (1 << TCP_SYN_SENT) | (1 << TCP_SYN_RECV)
"""Established connections (CLOSE_WAIT too: the peer has closed, the local process still holds it; together
they are what the kernel's CurrEstab counter counts) and half-open ones (counted, not reported: they become
established later). Asking for LISTENING alone spares the kernel the walk of its established-socket hash."""
ALL_STATES = 0xFFFFFFFF

TCP_BOTH = "tcp+tcp6"
"""The pseudo-table of the one-walk request: established TCP sockets of both families."""
TABLES: dict[str, tuple[int, int]] = {
    TCP_BOTH: (socket.AF_UNSPEC, IPPROTO_TCP),
    "tcp": (socket.AF_INET, IPPROTO_TCP),
    "tcp6": (socket.AF_INET6, IPPROTO_TCP),
    "udp": (socket.AF_INET, IPPROTO_UDP),
    "udp6": (socket.AF_INET6, IPPROTO_UDP),
}
"""table name (as in /proc/net) -> (address family, protocol). UDP dumps ask for every state, as in
/proc/net/udp: unconnected sockets are listeners, connected ones established."""

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48x")
_REQ_OLD = struct.Struct("=BBBB48xII")
_MSG = struct.Struct("=BBBBHH16s16sIQIIIII")
"""inet_diag_msg: family, state, timer, retrans, sport, dport (big-endian, swapped after), src, dst, if,
cookie, expires, rqueue, wqueue, uid, inode."""
_ERRNO = struct.Struct("=i")
RECV_BYTES = 65536
"""Larger than any dump message the kernel builds (it caps them at 32 KiB), so nothing is cut."""
TIMEOUT_S = 1.0
MAX_RECORDS = 1_000_000
"""A dump longer than this is refused (a kernel does not hold that many sockets in one namespace)."""

SockKey = tuple[str, str, str, int, str, int]
"""(state, table, local address, local port, remote address, remote port); listeners have no remote."""


class DumpError(Exception):
    """A dump that could not be read whole; `reason` is a short label for the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Chunk(NamedTuple):
    """What one received buffer held: the sockets in it, how many half-open TCP sockets (SYN_SENT,
    SYN_RECV) it listed, and whether the dump's end was reached."""

    sockets: list[tuple[SockKey, int]]
    half_open: int
    done: bool


class Dump(NamedTuple):
    sockets: list[tuple[SockKey, int]]
    half_open: int


def request(table: str, seq: int, states: int) -> bytes:
    """The dump request for the sockets of one table in `states` (a bit mask of 1 << state)."""
    family, proto = TABLES[table]
    if table == TCP_BOTH:
        body, kind = _REQ_OLD.pack(0, 0, 0, 0, states, 0), TCPDIAG_GETSOCK
    else:
        body, kind = _REQ.pack(family, proto, 0, 0, states), SOCK_DIAG_BY_FAMILY
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


_V4_MAPPED = bytes(10) + b"\xff\xff"


def _address(family: int, raw: bytes, cache: dict[bytes, str]) -> str:
    """Text of an address as /proc/net mode writes it (IPv4-mapped IPv6 as IPv4)."""
    key = raw if family == socket.AF_INET6 else raw[:4]
    text = cache.get(key)
    if text is None:
        if family == socket.AF_INET:
            text = socket.inet_ntop(socket.AF_INET, key)
        elif raw.startswith(_V4_MAPPED):
            text = socket.inet_ntop(socket.AF_INET, raw[12:])
        else:
            text = str(ipaddress.IPv6Address(raw))
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = text
    return text


def parse_dump(data: bytes, table: str, seq: int, port: int, cache: dict[bytes, str] | None = None) -> Chunk:
    """The sockets of one received buffer of a dump of `table` asked with `seq` from our socket's `port`.
    Never raises anything but DumpError: a short or overlong message, a message of another request, a record
    of another family, or an error reply."""
    family, proto = TABLES[table]
    udp = proto == IPPROTO_UDP
    reply = TCPDIAG_GETSOCK if table == TCP_BOTH else SOCK_DIAG_BY_FAMILY
    names = {socket.AF_INET: "tcp", socket.AF_INET6: "tcp6"} if table == TCP_BOTH else {family: table}
    cache = {} if cache is None else cache
    out: list[tuple[SockKey, int]] = []
    half_open = 0
    off, end = 0, len(data)
    if end < _NLMSGHDR.size:
        raise DumpError("truncated", f"{end} bytes")
    while off < end:
        if end - off < _NLMSGHDR.size:
            raise DumpError("truncated", f"{end - off} bytes after the last message")
        length, msg_type, _flags, msg_seq, msg_pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            raise DumpError("garbled", f"message length {length} at offset {off}")
        if length > end - off:
            raise DumpError("truncated", f"message of {length} bytes at offset {off} of {end}")
        if msg_seq != seq or msg_pid != port:
            raise DumpError("foreign", f"seq {msg_seq} port {msg_pid}, expected seq {seq} port {port}")
        body = off + _NLMSGHDR.size
        if msg_type == NLMSG_DONE:
            return Chunk(out, half_open, True)
        if msg_type == NLMSG_ERROR:
            code = -_ERRNO.unpack_from(data, body)[0] if length >= _NLMSGHDR.size + 4 else 0
            raise DumpError("refused", errno.errorcode.get(code, str(code)) if code else "error reply")
        if msg_type == reply:
            if length < _NLMSGHDR.size + _MSG.size:
                raise DumpError("truncated", f"socket record of {length - _NLMSGHDR.size} bytes")
            (fam, state, _timer, _retrans, sport, dport, src, dst, _if, _cookie, _exp, _rq, _wq, _uid,
             inode) = _MSG.unpack_from(data, body)
            name = names.get(fam)
            if name is None:
                raise DumpError("garbled", f"address family {fam} in a {table} dump")
            lport, rport = socket.ntohs(sport), socket.ntohs(dport)
            if udp:
                kind = "listen" if rport == 0 else "established"
            elif state == TCP_LISTEN:
                kind = "listen"
            elif state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
                kind = "established"
            else:
                kind = ""  # half-open (counted) or another state: not reported
                half_open += state in (TCP_SYN_SENT, TCP_SYN_RECV)
            if kind:
                laddr = _address(fam, src, cache)
                if kind == "listen":
                    raddr, rport = "", 0
                else:
                    raddr = _address(fam, dst, cache)
                out.append(((kind, name, laddr, lport, raddr, rport), inode))
        elif msg_type != NLMSG_NOOP:
            raise DumpError("garbled", f"message type {msg_type}")
        off += (length + 3) & ~3
    return Chunk(out, half_open, False)


class SockDiag:
    """A sock_diag netlink socket in the agent's network namespace, kept open between dumps."""

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.seq = 0
        self.port = 0
        self._buf = bytearray(RECV_BYTES)
        self._cache: dict[bytes, str] = {}

    def open(self) -> None:
        """Raises OSError where netlink or sock_diag is refused (a sandbox, seccomp, an LSM)."""
        self.close()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        try:
            sock.settimeout(self.timeout_s)
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[0]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def dump(self, table: str, states: int = ALL_STATES) -> Dump:
        """Every socket of `table` in `states`. Raises DumpError (the socket is closed and opened again at
        the next dump, so what is left of a failed dump never mixes into the next one)."""
        if self.sock is None:
            try:
                self.open()
            except OSError as e:
                raise DumpError("refused", os.strerror(e.errno or 0)) from e
        assert self.sock is not None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        out: list[tuple[SockKey, int]] = []
        half_open = 0
        try:
            self.sock.send(request(table, self.seq, states))
            view = memoryview(self._buf)
            while True:
                n, sender = self.sock.recvfrom_into(self._buf)
                if sender[0] != 0:  # only the kernel answers a dump
                    raise DumpError("foreign", f"a message from port {sender[0]}")
                chunk = parse_dump(bytes(view[:n]), table, self.seq, self.port, self._cache)
                out += chunk.sockets
                half_open += chunk.half_open
                if chunk.done:
                    return Dump(out, half_open)
                if len(out) > MAX_RECORDS:
                    raise DumpError("oversized", f"more than {MAX_RECORDS} sockets")
        except TimeoutError as e:
            self.close()
            raise DumpError("timeout", f"no reply within {self.timeout_s} s") from e
        except OSError as e:
            self.close()
            raise DumpError("refused", os.strerror(e.errno or 0)) from e
        except DumpError:
            self.close()
            raise
