"""Exec and exit events from the kernel: the process events connector (netlink, CN_IDX_PROC).

The /proc poll sees a process only if it is alive at a poll; a `curl | sh` dropper or a reverse shell
that lives 200 ms slips between two polls. The connector tells us about every exec and exit as it
happens. `ExecSource` subscribes (root, initial network namespace), and a reader thread reads each new
process's details from /proc right after its exec event: the resolved exe (/proc/<pid>/exe), the raw
command line, real uid and parent pid (/proc/<pid>/status), the parent's exe and the cgroup. A process
that is already gone leaves only the event: what could not be read is listed in `missing`, never
guessed. The reader hands `ExecRecord`s and exits to the probe, which drains them each cycle without
ever waiting (collectors/probes/processes.py).

Bounds: the reader looks up at most `max_reads_per_s` execs per second (a token bucket) and keeps at
most `max_pending` records between two drains; execs beyond either, and events the kernel dropped
because our socket buffer was full (ENOBUFS), are counted (`shed`), never silently lost.

Raw command lines stay in memory only: the probe redacts them (collectors/redact.py) before any event
is built.

Message layout (include/uapi/linux/netlink.h, connector.h, cn_proc.h), native byte order:
  nlmsghdr  len u32, type u16, flags u16, seq u32, pid u32                       16 bytes
  cn_msg    idx u32, val u32, seq u32, ack u32, len u16, flags u16                20 bytes
  proc_event what u32, cpu u32, timestamp_ns u64, then per `what`:
    NONE (ack)  err u32
    FORK        parent_pid, parent_tgid, child_pid, child_tgid
    EXEC        pid, tgid
    UID         pid, tgid, ruid, euid
    EXIT        pid, tgid, exit_code, exit_signal[, parent_pid, parent_tgid]
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from collectors.safe import absent, read_bounded

log = logging.getLogger("herdwatch.collector")

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2

PROC_EVENT_NONE = 0x0
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_UID = 0x4
PROC_EVENT_EXIT = 0x80000000
WANTED = PROC_EVENT_EXEC | PROC_EVENT_UID | PROC_EVENT_EXIT
"""The event filter asked of kernels >= 6.6 (older ones send everything; we skip the rest)."""

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")
_U32X2 = struct.Struct("=II")
_U32X4 = struct.Struct("=IIII")
_U32 = struct.Struct("=I")

RCVBUF_BYTES = 8 * 1024 * 1024
ACK_TIMEOUT_S = 1.0
RECV_TIMEOUT_S = 0.2
MAX_BATCH = 256
MAX_CMDLINE_BYTES = 16384
MAX_CGROUP_CHARS = 256


@dataclass(frozen=True)
class ProcEvent:
    """One decoded process event. Fields not carried by `what` are 0."""

    what: int
    pid: int = 0
    tgid: int = 0
    parent_pid: int = 0
    parent_tgid: int = 0
    ruid: int = 0
    euid: int = 0
    err: int = 0
    timestamp_ns: int = 0


def _event(what: int, ts: int, body: bytes) -> ProcEvent | None:
    if what == PROC_EVENT_NONE and len(body) >= 4:
        return ProcEvent(what, err=_U32.unpack_from(body)[0], timestamp_ns=ts)
    if what == PROC_EVENT_FORK and len(body) >= 16:
        ppid, ptgid, pid, tgid = _U32X4.unpack_from(body)
        return ProcEvent(what, pid, tgid, ppid, ptgid, timestamp_ns=ts)
    if what == PROC_EVENT_EXEC and len(body) >= 8:
        pid, tgid = _U32X2.unpack_from(body)
        return ProcEvent(what, pid, tgid, timestamp_ns=ts)
    if what == PROC_EVENT_UID and len(body) >= 16:
        pid, tgid, ruid, euid = _U32X4.unpack_from(body)
        return ProcEvent(what, pid, tgid, ruid=ruid, euid=euid, timestamp_ns=ts)
    if what == PROC_EVENT_EXIT and len(body) >= 8:
        pid, tgid = _U32X2.unpack_from(body)
        ppid, ptgid = _U32X2.unpack_from(body, 16) if len(body) >= 24 else (0, 0)
        return ProcEvent(what, pid, tgid, ppid, ptgid, timestamp_ns=ts)
    return None


def parse_messages(data: bytes) -> list[ProcEvent]:
    """The process events in one netlink datagram. Never raises: anything malformed, truncated or from
    another connector is skipped."""
    out: list[ProcEvent] = []
    off = 0
    end = len(data)
    while end - off >= _NLMSGHDR.size:
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or length > end - off:
            break
        body_end = off + length
        off_next = off + ((length + 3) & ~3)
        if msg_type == NLMSG_DONE and length >= _NLMSGHDR.size + _CN_MSG.size + _EVENT_HEAD.size:
            pos = off + _NLMSGHDR.size
            idx, val, _s, _a, cn_len, _f = _CN_MSG.unpack_from(data, pos)
            pos += _CN_MSG.size
            if idx == CN_IDX_PROC and val == CN_VAL_PROC:
                payload_end = min(body_end, pos + cn_len)
                if payload_end - pos >= _EVENT_HEAD.size:
                    what, _cpu, ts = _EVENT_HEAD.unpack_from(data, pos)
                    ev = _event(what, ts, data[pos + _EVENT_HEAD.size:payload_end])
                    if ev is not None:
                        out.append(ev)
        off = off_next
    return out


def control_message(op: int, port: int, events: int | None = None) -> bytes:
    """The LISTEN/IGNORE request; with `events`, the filtered form of kernels >= 6.6 (older kernels ignore
    a request of that size)."""
    data = _U32.pack(op) if events is None else _U32X2.pack(op, events)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(data), 0) + data
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, port) + cn


@dataclass
class ExecRecord:
    """What /proc told us about one exec, read right after the event. Raw: redacted by the probe."""

    pid: int
    time: float
    exe: str | None = None
    argv: bytes | None = None
    argv_over: bool = False
    uid: int | None = None
    ppid: int | None = None
    parent_exe: str | None = None
    cgroup: str | None = None
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExitRecord:
    pid: int
    time: float


def _readlink(path: str) -> str | None:
    return absent(lambda: os.readlink(path))


def _status_fields(raw: bytes) -> tuple[int | None, int | None]:
    """(real uid, ppid) from /proc/<pid>/status."""
    uid = ppid = None
    for line in raw.split(b"\n"):
        if line.startswith(b"PPid:"):
            ppid = int(line.split()[1]) if len(line.split()) > 1 else None
        elif line.startswith(b"Uid:"):
            parts = line.split()
            uid = int(parts[1]) if len(parts) > 1 else None
            break  # Uid comes after PPid
    return uid, ppid


def read_execs(pids: list[int], proc: Path = Path("/proc"), when: float | None = None) -> list[ExecRecord]:
    """The details of processes that have just exec'd, read in stages over the whole batch (every exe
    first, then every command line, then the rest): the exe is the identity, and the newest processes of
    a batch may be gone a moment later. What could not be read is listed in `missing`."""
    now = time.time() if when is None else when
    recs = [ExecRecord(pid, now) for pid in pids]
    for rec in recs:
        rec.exe = _readlink(f"{proc}/{rec.pid}/exe")
    for rec in recs:
        got = read_bounded(f"{proc}/{rec.pid}/cmdline", MAX_CMDLINE_BYTES)
        if got is not None and got[0]:
            rec.argv, rec.argv_over = got
    for rec in recs:  # exec'd again since (env, a wrapper): that command line belongs to the next program
        if rec.argv is not None and _readlink(f"{proc}/{rec.pid}/exe") != rec.exe:
            rec.argv, rec.argv_over = None, False
    for rec in recs:
        status = read_bounded(f"{proc}/{rec.pid}/status", 8192)  # a zombie still has it
        if status is not None:
            try:
                rec.uid, rec.ppid = _status_fields(status[0])
            except ValueError:
                rec.uid = rec.ppid = None
    for rec in recs:
        if rec.ppid:
            rec.parent_exe = _readlink(f"{proc}/{rec.ppid}/exe")
        cg = read_bounded(f"{proc}/{rec.pid}/cgroup", 4096)
        if cg is not None and cg[0]:
            rec.cgroup = cg[0].decode("utf-8", "replace").strip().split("\n")[-1][:MAX_CGROUP_CHARS]
        rec.missing = [name for name, value in (("exe", rec.exe), ("cmdline", rec.argv), ("user", rec.uid),
                                                ("ppid", rec.ppid), ("parent_exe", rec.parent_exe),
                                                ("cgroup", rec.cgroup)) if value is None]
    return recs


def read_exec(pid: int, proc: Path = Path("/proc"), when: float | None = None) -> ExecRecord:
    """The details of one process that has just exec'd (see read_execs)."""
    return read_execs([pid], proc, when)[0]


class ExecSourceUnavailable(Exception):
    """The connector cannot be used here; the message says why (shown in logs and agent.hello)."""


class ExecSource:
    """A subscription to the kernel's process events with a reader thread (see the module doc)."""

    def __init__(self, proc: Path = Path("/proc"), max_reads_per_s: float = 2000.0,
                 max_pending: int = 20000) -> None:
        self.proc = proc
        self.max_reads_per_s = float(max_reads_per_s)
        self.max_pending = max_pending
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[ExecRecord | ExitRecord] = deque()
        self._tokens = self.max_reads_per_s
        self._refilled = time.monotonic()
        self.shed: dict[str, int] = {}
        """reason -> execs or events not delivered: rate (over max_reads_per_s), pending (over
        max_pending), kernel_overflow (ENOBUFS: the kernel dropped events; one per occurrence)."""
        self.failed: str | None = None
        """Set when the reader stopped on a socket error: the probe falls back to polling."""
        self.execs_seen = 0
        self.exits_seen = 0

    # -- subscription --------------------------------------------------------------------------------
    def open(self) -> None:
        """Subscribe and wait for the kernel's acknowledgement; raises ExecSourceUnavailable."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except (OSError, AttributeError) as e:
            raise ExecSourceUnavailable(f"no netlink connector socket: {e}") from e
        try:
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF_BYTES)
                    break
                except OSError:
                    continue
            sock.bind((0, CN_IDX_PROC))
            port = sock.getsockname()[0]
            sock.settimeout(ACK_TIMEOUT_S)
            sock.send(control_message(PROC_CN_MCAST_LISTEN, port))
            self._await_ack(sock)
            sock.send(control_message(PROC_CN_MCAST_LISTEN, port, WANTED))  # a filter, where the kernel has one
        except ExecSourceUnavailable:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            raise ExecSourceUnavailable(f"process events connector refused: {e}") from e
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="exec-events", daemon=True)
        self._thread.start()

    @staticmethod
    def _await_ack(sock: socket.socket) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    continue
                raise
            for ev in parse_messages(data):
                if ev.what != PROC_EVENT_NONE:
                    return  # events flow: the subscription works (the ack may come after them)
                if ev.err:
                    raise ExecSourceUnavailable(f"the kernel refused the subscription: {os.strerror(ev.err)}")
                return
        raise ExecSourceUnavailable("no answer from the process events connector (not the initial network "
                                    "namespace, or the kernel lacks CONFIG_PROC_EVENTS)")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            try:
                port = self._sock.getsockname()[0]
                for _ in range(2):  # one per LISTEN sent
                    self._sock.send(control_message(PROC_CN_MCAST_IGNORE, port))
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    # -- the reader thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(RECV_TIMEOUT_S * 1000):
                continue
            events: list[ProcEvent] = []
            for _ in range(MAX_BATCH):  # everything queued, so the batch's exes are read first
                try:
                    events += parse_messages(sock.recv(65536))
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self._count("kernel_overflow")
                        continue
                    if not self._stop.is_set():
                        self.failed = f"reading process events failed: {e}"
                        log.warning("process events connector: %s; falling back to /proc polling", self.failed)
                    return
            self._handle(events)

    def _handle(self, events: list[ProcEvent]) -> None:
        """Read the batch's execs (rate-limited), then queue execs and exits in kernel order."""
        wanted: list[int] = []
        for ev in events:
            if ev.what == PROC_EVENT_EXEC and ev.pid == ev.tgid and ev.pid > 0:
                self.execs_seen += 1
                if self._take_token():
                    wanted.append(ev.pid)
                else:
                    self._count("rate")
        records = iter(read_execs(wanted, self.proc)) if wanted else iter(())
        now = time.time()
        taken = 0
        for ev in events:
            if ev.what == PROC_EVENT_EXEC and ev.pid == ev.tgid and ev.pid > 0:
                if taken < len(wanted) and wanted[taken] == ev.pid:
                    taken += 1
                    self._push(next(records))
            elif ev.what == PROC_EVENT_EXIT and ev.pid == ev.tgid and ev.pid > 0:
                self.exits_seen += 1
                self._push(ExitRecord(ev.pid, now))

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.max_reads_per_s, self._tokens + (now - self._refilled) * self.max_reads_per_s)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _push(self, item: ExecRecord | ExitRecord) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.shed["pending"] = self.shed.get("pending", 0) + 1
                return
            self._pending.append(item)

    def _count(self, reason: str) -> None:
        with self._lock:
            self.shed[reason] = self.shed.get(reason, 0) + 1

    # -- the probe's side ------------------------------------------------------------------------------
    def drain(self) -> list[ExecRecord | ExitRecord]:
        """Everything read since the last drain, in kernel order; never waits."""
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        return items

    def take_shed(self) -> dict[str, int]:
        with self._lock:
            shed, self.shed = self.shed, {}
        return shed
