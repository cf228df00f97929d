"""Exec events from the kernel: the process events connector (netlink, CN_IDX_PROC).

The /proc poll sees a process only if it is alive at a poll; a `curl | sh` dropper or a reverse shell
that lives 200 ms slips between two polls. The connector tells us about every exec as it happens.
`ExecSource` subscribes (root, initial network namespace), and a reader thread reads each new process's
details from /proc right after its exec event: the resolved exe (/proc/<pid>/exe), the raw command line,
real uid and parent pid, the parent's exe and the cgroup. A process that is already
gone leaves only the event: what could not be read is listed in `missing`, never guessed. The reader
hands `ExecRecord`s to the probe, which drains them each cycle without ever waiting, and takes exits from
its own /proc listing each cycle, as in fanotify mode (collectors/probes/processes.py).

Cost per exec (it runs for every exec on the host): only exec events of whole processes reach Python.
Kernels >= 6.6 filter by event kind (the LISTEN request carries a mask); a classic BPF socket filter
(SO_ATTACH_FILTER) also drops, in the kernel, every other kind (fork, exit, comm, ...: older kernels send
them all) and the execs of threads other than a process's main thread. Exits are not subscribed to: the
probe's listing reports them, and reading them here cost a read per process (and, on one socket, a
wakeup). A thread wakeup is the largest single cost: the reader waits in a blocking read, reads the exe of
the exec that woke it at once, and, when nothing else is queued (poll(0), no exception per wakeup), reads
the rest of that one process (`read_one`); otherwise it reads every queued datagram, up to MAX_BATCH, and
the batch in stages (`read_execs`). (A negative nice for the reader was tried: under load it took 12-19 %
more CPU per exec, as it no longer batched the execs queued while it waited; SCHED_BATCH, the other way,
did not measurably cut it.) A datagram holding one event (what the kernel sends) is decoded with one
precompiled struct. Each exec costs two readlinks and a file read (open, read, close: no fstat, these are
procfs files): exe, cmdline, exe again (exec'd since?); then a pidfd (open, one PIDFD_GET_INFO ioctl,
close) gives the real uid, the ppid and the cgroup's id, whose /proc/<pid>/cgroup line is read once per
cgroup (collectors/probes/pidfd_info.py). That ioctl replaced reading status and cgroup (open, read, close
each): the kernel formats all of status for two numbers, and they were the dearest reads of an exec. Where
the kernel lacks it (Linux < 6.13) or refuses it for a process, status and cgroup are read as before. The
cgroup is read for every process, never taken from its parent: a process that moves itself and then
execs (cgexec, systemd-run --scope, a container runtime's init) would be reported in its parent's. The
parent's exe comes from a cache of the exe of every process whose exec we read or whose exe we looked up:
an exec of a pid drops its entry, the probe's listing drops those of processes gone (`forget`,
`forget_gone`), and a kernel overflow (events lost) clears it. Where the kernel refuses socket filters,
every event reaches Python, which skips what is not an exec.

Two readers do this, with the same reads in the same order. Where it is built (`pip install` compiles it
with any C compiler; optional), the C reader (collectors/probes/_execread.c, `ExecSource._run_native`) waits
and reads with the GIL released and hands Python a batch of records when execs pause or a quarter second
after the batch's first: the thread is still woken per exec, but the wakeup and the reads cost no Python.
It keeps the parent exes it read for a second (an exec of the pid replaces its entry). Elsewhere, or with
`ExecSource(native=False)`, the Python reader below runs; the agent logs which one.

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
    EXIT        pid, tgid, exit_code, exit_signal[, parent_pid, parent_tgid]   (decoded, not subscribed to)
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from collectors.probes.pidfd_info import PidInfo, cgroup_line

try:
    from collectors.probes import _execread
except ImportError:  # not built (no C compiler at install, not Linux): the Python reader runs
    _execread = None  # type: ignore[assignment]
if TYPE_CHECKING:
    from collectors.probes._execread import NativeRow

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
WANTED = PROC_EVENT_EXEC
"""The event filter asked of kernels >= 6.6 (older ones send everything; the socket filter drops the rest).
Exits are not asked for: the probe's /proc listing reports them each cycle, as in fanotify mode."""

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")
_U32X2 = struct.Struct("=II")
_U32X4 = struct.Struct("=IIII")
_U32 = struct.Struct("=I")
_ONE_EVENT = struct.Struct("=IHHIIIIIIHHIIQII")
"""nlmsghdr, cn_msg, the event head and its first two u32 (pid, tgid of an exec or exit): 60 bytes."""
_WHAT_AT = _NLMSGHDR.size + _CN_MSG.size  # offsets in a datagram of one event (the socket filter's view)
_PID_AT = _WHAT_AT + _EVENT_HEAD.size
SO_ATTACH_FILTER = 26
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PARENT_CACHE = 8192

RCVBUF_BYTES = 8 * 1024 * 1024
ACK_TIMEOUT_S = 1.0
RECV_TIMEOUT_S = 1.0
MAX_BATCH = 256
MAX_CMDLINE_BYTES = 16384
NATIVE_GAP_MS = 50
NATIVE_HOLD_MS = 250
"""The C reader hands a batch to Python when execs pause for NATIVE_GAP_MS, or at most NATIVE_HOLD_MS after
its first exec (the probe drains once a cycle, so a batch would wait there anyway): one Python wakeup per
batch instead of one per exec."""


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


def socket_filter(kinds: int = PROC_EVENT_EXEC | PROC_EVENT_EXIT) -> bytes:
    """The classic BPF program (struct sock_filter[]) that keeps, of the datagrams of one event, only
    acknowledgements and the events of `kinds` (exec, exit or both) of a process's main thread (pid ==
    tgid). Anything shorter than one event is kept for the Python parser to judge. Absolute loads read
    big-endian, so the event kinds are compared in that byte order (pid == tgid compares two values loaded
    alike)."""
    def be(v: int) -> int:
        return int.from_bytes(_U32.pack(v), "big")
    ld_len, ld_abs, tax, jge_k, jeq_k, jeq_x, ret_k = 0x80, 0x20, 0x07, 0x35, 0x15, 0x1d, 0x06
    keep, drop = 10, 11
    exec_ok = kinds & PROC_EVENT_EXEC
    exit_ok = kinds & PROC_EVENT_EXIT
    prog = [
        (ld_len, 0, 0, 0),
        (jge_k, 0, keep - 2, _ONE_EVENT.size),
        (ld_abs, 0, 0, _WHAT_AT),
        (jeq_k, 6 - 4 if exec_ok else drop - 4, 0, be(PROC_EVENT_EXEC)),
        (jeq_k, 6 - 5 if exit_ok else drop - 5, 0, be(PROC_EVENT_EXIT)),
        (jeq_k, keep - 6, drop - 6, be(PROC_EVENT_NONE)),
        (ld_abs, 0, 0, _PID_AT + 4),  # tgid
        (tax, 0, 0, 0),
        (ld_abs, 0, 0, _PID_AT),  # pid
        (jeq_x, keep - 10, drop - 10, 0),
        (ret_k, 0, 0, 0x40000),
        (ret_k, 0, 0, 0),
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def attach_socket_filter(sock: socket.socket, kinds: int = PROC_EVENT_EXEC | PROC_EVENT_EXIT) -> bool:
    """Attach `socket_filter(kinds)`; False where the kernel refuses it (then Python skips the same events)."""
    prog = socket_filter(kinds)
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("HP", len(prog) // 8, ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.info("process events: no socket filter (%s); unwanted events are skipped in Python", e)
        return False
    return True


def leader_events(data: bytes) -> list[tuple[int, int, int]]:
    """(timestamp_ns, what, pid) of the exec and exit events of one datagram, in order; only a process's
    main thread (pid == tgid > 0). One event per datagram, what the kernel sends, is decoded at once;
    anything else goes through `parse_messages`. Never raises."""
    if len(data) >= _ONE_EVENT.size:
        (length, msg_type, _f, _s, _p, idx, val, _cs, _ca, cn_len, _cf, what, _cpu, ts, pid,
         tgid) = _ONE_EVENT.unpack_from(data)
        if (msg_type == NLMSG_DONE and idx == CN_IDX_PROC and val == CN_VAL_PROC and _ONE_EVENT.size <= length
                and 0 <= len(data) - length < 4 and cn_len >= _ONE_EVENT.size - _WHAT_AT):
            if what in (PROC_EVENT_EXEC, PROC_EVENT_EXIT) and pid == tgid and pid > 0:
                return [(ts, what, pid)]
            return []
    return [(ev.timestamp_ns, ev.what, ev.pid) for ev in parse_messages(data)
            if ev.what in (PROC_EVENT_EXEC, PROC_EVENT_EXIT) and ev.pid == ev.tgid and ev.pid > 0]


@dataclass(slots=True)
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


class ExitRecord(NamedTuple):
    pid: int
    time: float


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read(path: str, limit: int) -> bytes | None:
    """At most `limit` + 1 bytes of a /proc file in one read (these files give everything up to the size
    asked in one read), so more than `limit` means cut. None if absent or unreadable. Never blocks, never
    follows a final symlink; the connector runs on the real /proc only, whose entries are kernel files."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _status_fields(raw: bytes) -> tuple[int | None, int | None]:
    """(real uid, ppid) from /proc/<pid>/status."""
    uid = ppid = None
    at = raw.find(b"\nPPid:")
    if at >= 0:
        end = raw.find(b"\n", at + 6)
        ppid = int(raw[at + 6:end if end >= 0 else len(raw)])
    at = raw.find(b"\nUid:")
    if at >= 0:
        end = raw.find(b"\n", at + 5)
        fields = raw[at + 5:end if end >= 0 else len(raw)].split()
        uid = int(fields[0]) if fields else None
    return uid, ppid


def read_execs(pids: list[int], proc: Path = Path("/proc"), when: float | None = None,
               exes: dict[int, str] | None = None, read: dict[int, str | None] | None = None,
               known: list[str] | None = None, info: PidInfo | None = None) -> list[ExecRecord]:
    """The details of processes that have just exec'd, read in stages over the whole batch (every exe
    first, then every command line, then the rest): the exe is the identity, and the newest processes of
    a batch may be gone a moment later. What could not be read is listed in `missing`.

    `exes` (pid -> exe) answers the parent's exe where it knows it, and learns what is read here; the
    caller keeps it exact (ExecSource drops a pid's entry at its exec and exit events, and the probe the
    entries of processes gone). `read` holds exes the caller read already (pid -> exe, used for that pid's
    first record here); `known`, the exe of each record (the file a fanotify event opened, early in the
    execve), read nowhere else: the command line is read only once /proc/<pid>/exe shows that program
    (the new memory, whose command line is the new one or still empty) and kept only if it still does.

    `info` reads the real uid, ppid and cgroup through a pidfd where it can (the real /proc only; see
    collectors/probes/pidfd_info.py), else they come from status and cgroup.

    The per-exec path: one syscall per step (a readlink, or open + read + close of a procfs file), paths
    built once per pid."""
    now = time.time() if when is None else when
    base = f"{proc}/"
    dirs = [f"{base}{pid}/" for pid in pids]
    early = dict(read) if read else None
    exe_list: list[str | None] = []
    for i, (pid, d) in enumerate(zip(pids, dirs, strict=True)):
        if known is not None:
            exe_list.append(known[i])
        elif early is not None and pid in early:
            exe_list.append(early.pop(pid))
        else:
            exe_list.append(_readlink(d + "exe"))
    argvs: list[bytes | None] = []
    for i, d in enumerate(dirs):
        # an exec still under way (fanotify) shows its old program and command line: not read
        under_way = known is not None and _readlink(d + "exe") != exe_list[i]
        argvs.append(None if under_way else _read(d + "cmdline", MAX_CMDLINE_BYTES) or None)
    for i, d in enumerate(dirs):  # exec'd again since (env, a wrapper): that command line belongs to the next program
        if argvs[i] is not None and _readlink(d + "exe") != exe_list[i]:
            argvs[i] = None
    cache = exes if exes is not None else {}
    return [_finish(pid, d, exe_list[i], argvs[i], now, base, cache, exes is not None, info)
            for i, (pid, d) in enumerate(zip(pids, dirs, strict=True))]


def read_one(pid: int, exe: str | None, base: str, when: float, exes: dict[int, str],
             info: PidInfo | None = None) -> ExecRecord:
    """`read_execs([pid], read={pid: exe}, exes=exes)` for the one exec of a wakeup, whose exe was read on
    waking: the same reads in the same order, without the batch's lists (this runs for nearly every exec).
    `base` is the proc directory with a trailing slash."""
    d = f"{base}{pid}/"
    argv = _read(d + "cmdline", MAX_CMDLINE_BYTES) or None
    if argv is not None and _readlink(d + "exe") != exe:  # exec'd again since: the next program's command line
        argv = None
    return _finish(pid, d, exe, argv, when, base, exes, True, info)


def _finish(pid: int, d: str, exe: str | None, argv: bytes | None, now: float, base: str,
            cache: dict[int, str], learn: bool, info: PidInfo | None = None) -> ExecRecord:
    """The rest of one exec's record once its exe and command line are read: real uid and ppid, the
    cgroup (from `info`, a pidfd, where it answers; else from status, which a zombie still has, and
    cgroup), the parent's exe (from `cache`, else read, and learnt when `learn`), and what is missing."""
    got = info.read(pid) if info is not None else None
    if got is not None:
        uid, ppid, cgroup = got
    else:
        uid = ppid = None
        status = _read(d + "status", 8191)
        if status:
            try:
                uid, ppid = _status_fields(status)
            except ValueError:
                uid = ppid = None
        cg = _read(d + "cgroup", 4095)
        cgroup = cgroup_line(cg) if cg else None
    parent = None
    if ppid:
        parent = cache.get(ppid)
        if parent is None:
            parent = _readlink(f"{base}{ppid}/exe")
            if parent is not None and learn:
                cache[ppid] = parent
    return _record(pid, now, exe, argv, uid, ppid, parent, cgroup)


def _record(pid: int, when: float, exe: str | None, argv: bytes | None, uid: int | None, ppid: int | None,
            parent: str | None, cgroup: str | None) -> ExecRecord:
    """One exec's record from what was read: the command line cut to MAX_CMDLINE_BYTES (and marked so),
    and every detail not read listed in `missing`."""
    over = argv is not None and len(argv) > MAX_CMDLINE_BYTES
    if over:
        argv = argv[:MAX_CMDLINE_BYTES]  # type: ignore[index]
    missing = []
    if exe is None:
        missing.append("exe")
    if argv is None:
        missing.append("cmdline")
    if uid is None:
        missing.append("user")
    if ppid is None:
        missing.append("ppid")
    if parent is None:
        missing.append("parent_exe")
    if cgroup is None:
        missing.append("cgroup")
    return ExecRecord(pid, when, exe, argv, over, uid, ppid, parent, cgroup, missing)


def finish_native(rows: list[NativeRow], exes: dict[int, str]) -> list[ExecRecord]:
    """The records of a batch the C reader read, in kernel order, with what `_finish` adds: the parent's
    exe as read at the exec (else from `exes`, the parent cache, which learns each record's exe), the
    command line's cut, the cgroup line, and what is missing."""
    out = []
    for pid, when, exe, argv, uid, ppid, parent, raw_cgroup in rows:
        exes.pop(pid, None)  # exec'd: its exe is new
        if parent is None and ppid:
            parent = exes.get(ppid)
        if exe is not None:
            exes[pid] = exe
        out.append(_record(pid, when, exe, argv, uid, ppid, parent, cgroup_line(raw_cgroup) if raw_cgroup else None))
    if len(exes) > MAX_PARENT_CACHE:
        exes.clear()
    return out


def read_exec(pid: int, proc: Path = Path("/proc"), when: float | None = None) -> ExecRecord:
    """The details of one process that has just exec'd (see read_execs)."""
    return read_execs([pid], proc, when)[0]


INIT_PID_NAMESPACE = "pid:[4026531836]"
"""/proc/self/ns/pid of the initial PID namespace (PROC_PID_INIT_INO, a constant of the kernel)."""


def in_initial_pid_namespace(proc: Path = Path("/proc")) -> bool:
    try:
        return os.readlink(f"{proc}/self/ns/pid") == INIT_PID_NAMESPACE
    except OSError:
        return True  # no namespaces in this kernel: there is only the one


class ExecSourceUnavailable(Exception):
    """The connector cannot be used here; the message says why (shown in logs and agent.hello)."""


def _unknown_if_parent_moved_on(rec: ExecRecord, later: dict[int, str]) -> None:
    """A parent read from /proc after it exec'd again shows its next program: a subshell running
    `$(date)` becomes `cat` once date is done, and a reader a little late reads cat as date's parent. When
    the parent's own exec comes after the child's and shows the program read as the parent, that parent is
    unknown (missing), never the later program."""
    if rec.ppid is not None and rec.parent_exe is not None and later.get(rec.ppid) == rec.parent_exe:
        rec.parent_exe = None
        if "parent_exe" not in rec.missing:
            rec.missing.append("parent_exe")


class ExecQueue:
    """What every exec source shares: a reader thread's queue of records for the probe (bounded by
    `max_pending`), the token bucket of `max_reads_per_s` lookups, and the counts of what was shed."""

    reader = "python"
    """Which reader runs: "python", or "native" (the connector's C reader, ExecSource)."""

    def __init__(self, proc: Path, max_reads_per_s: float, max_pending: int) -> None:
        self.proc = proc
        self.max_reads_per_s = float(max_reads_per_s)
        self.max_pending = max_pending
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[ExecRecord | ExitRecord] = deque()
        self._children: dict[int, list[ExecRecord]] = {}
        """ppid -> queued records whose parent exe was read, until that parent's next exec (_parent_check)."""
        self._tokens = self.max_reads_per_s
        self._refilled = time.monotonic()
        self.shed: dict[str, int] = {}
        """reason -> execs or events not delivered: rate (over max_reads_per_s), pending (over
        max_pending), kernel_overflow (the kernel dropped events), and the source's own reasons."""
        self._exes: dict[int, str] = {}
        """pid -> exe of the processes seen exec'ing (the parent cache)."""
        self._info = PidInfo(str(proc)) if str(proc) == "/proc" else None
        """Real uid, ppid and cgroup through pidfds (the reader thread's; the real /proc only: a test's fake
        /proc is read from its files)."""

    def _take_tokens(self, n: int) -> int:
        """How many of `n` execs may be looked up now (the token bucket of max_reads_per_s)."""
        if n == 0:
            return 0
        now = time.monotonic()
        self._tokens = min(self.max_reads_per_s, self._tokens + (now - self._refilled) * self.max_reads_per_s)
        self._refilled = now
        allowed = min(n, int(self._tokens))
        self._tokens -= allowed
        return allowed

    def _push_all(self, items: Sequence[ExecRecord | ExitRecord]) -> None:
        with self._lock:
            room = self.max_pending - len(self._pending)
            if room < len(items):
                self.shed["pending"] = self.shed.get("pending", 0) + len(items) - max(0, room)
                items = items[:max(0, room)]
            for item in items:
                if isinstance(item, ExecRecord):
                    self._parent_check(item)
            self._pending.extend(items)

    def _push_one(self, rec: ExecRecord) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.shed["pending"] = self.shed.get("pending", 0) + 1
                return
            self._parent_check(rec)
            self._pending.append(rec)

    def _parent_check(self, rec: ExecRecord) -> None:
        """Queue order is kernel order. `rec` is its pid's next exec after the records waiting for it (their
        parent) with its exe read: a parent exe they read that is this program was read after this exec, so
        it is unknown (_unknown_if_parent_moved_on); a different one was read before it and is kept. Then
        `rec` waits for its own parent's next exec. Under the lock; O(1) per record (a scan of the queue
        per push cost more than the rest of a busy host's exec path)."""
        if rec.exe is not None and rec.pid in self._children:  # an exe not read decides nothing
            later = {rec.pid: rec.exe}
            for child in self._children.pop(rec.pid):
                _unknown_if_parent_moved_on(child, later)
        if rec.ppid and rec.parent_exe is not None:
            self._children.setdefault(rec.ppid, []).append(rec)

    def _count(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.shed[reason] = self.shed.get(reason, 0) + n

    # -- the probe's side ------------------------------------------------------------------------------
    def drain(self) -> list[ExecRecord | ExitRecord]:
        """Everything read since the last drain, in kernel order; never waits."""
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._children.clear()
        return items

    def take_shed(self) -> dict[str, int]:
        with self._lock:
            shed, self.shed = self.shed, {}
        return shed

    def forget(self, pids: set[int] | list[int]) -> None:
        """Processes gone (the probe's listing): their exes leave the parent cache."""
        exes = self._exes
        for pid in pids:
            exes.pop(pid, None)

    def complete(self, rec: ExecRecord) -> None:
        """Read again what the reader could not: the command line (an exec read mid-way shows it empty, and
        under load it can stay empty through every re-read) and the real uid, of a process still running the
        program `rec` reported. The probe asks once, a cycle later, before it reports the exec; what still
        cannot be read stays missing. The same check as at exec time: a command line read while the exe is
        another program (exec'd again since) is not this exec's."""
        if rec.exe is None or rec.pid <= 0:
            return
        d = f"{self.proc}/{rec.pid}/"
        if _readlink(d + "exe") != rec.exe:
            return  # gone, or exec'd again: that is another record's
        if "cmdline" in rec.missing:
            argv = _read(d + "cmdline", MAX_CMDLINE_BYTES) or None
            if argv is not None and _readlink(d + "exe") == rec.exe:
                rec.argv_over = len(argv) > MAX_CMDLINE_BYTES
                rec.argv = argv[:MAX_CMDLINE_BYTES]
                rec.missing.remove("cmdline")
        if "user" in rec.missing:
            status = _read(d + "status", 8191)
            try:
                uid = _status_fields(status)[0] if status else None
            except ValueError:
                uid = None
            if uid is not None:
                rec.uid = uid
                rec.missing.remove("user")

    def forget_gone(self, alive: set[int]) -> None:
        """The probe's /proc listing of this cycle: the cached exes of processes no longer alive leave the
        parent cache (no exit events say so; a pid may be reused within seconds where pid_max is small)."""
        exes = self._exes
        for pid in exes.keys() - alive:  # one set difference: under a storm the cache holds a cycle's execs
            exes.pop(pid, None)


class ExecSource(ExecQueue):
    """A subscription to the kernel's exec events with a reader thread (see the module doc)."""

    mode = "connector"

    def __init__(self, proc: Path = Path("/proc"), max_reads_per_s: float = 2000.0,
                 max_pending: int = 20000, native: bool | None = None) -> None:
        super().__init__(proc, max_reads_per_s, max_pending)
        if native and _execread is None:
            raise ExecSourceUnavailable("the C exec reader (collectors/probes/_execread.c) is not built: "
                                        "reinstall herdwatch with a C compiler present (pip install -e .)")
        use_native = (_execread is not None and str(proc) == "/proc") if native is None else native
        self.reader = "native" if use_native else "python"  # the C reader where it is built, real /proc only
        self._sock: socket.socket | None = None
        self.failed: str | None = None
        """Set when the reader stopped on a socket error: the probe falls back to polling."""
        self.execs_seen = 0
        self.exits_seen = 0
        """Always 0 now: exits come from the probe's /proc listing (kept for the queue's other users)."""
        self.kernel_filter = False
        """True when the socket filter is attached: only execs of main threads (and acknowledgements) reach
        Python; otherwise every event does and Python skips what is not an exec."""

    # -- subscription --------------------------------------------------------------------------------
    def open(self) -> None:
        """Subscribe to exec events and wait for the kernel's acknowledgement; raises ExecSourceUnavailable."""
        if not in_initial_pid_namespace(self.proc):
            raise ExecSourceUnavailable("in a PID namespace of its own: the connector reports the initial "
                                        "namespace's pids (the kernel refuses the subscription there; another "
                                        "listener's events would still arrive, with pids /proc does not show)")
        self._sock = self._subscribe()
        self._thread = threading.Thread(target=self._run, name="exec-events", daemon=True)
        self._thread.start()

    def _subscribe(self) -> socket.socket:
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
            self.kernel_filter = attach_socket_filter(sock, PROC_EVENT_EXEC)
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
        # blocking reads that give up after RECV_TIMEOUT_S (close() also wakes the reader, with a datagram
        # sent to this socket): one syscall per wakeup instead of a poll and a read
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(RECV_TIMEOUT_S), 0))
        return sock

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
        """Stop the reader (a short datagram sent to our own socket wakes it: the kernel's filter drops
        acknowledgements of a masked subscription), unsubscribe (one IGNORE per LISTEN sent), close."""
        self._stop.set()
        sock, self._sock = self._sock, None
        port = None
        if sock is not None:
            try:
                port = sock.getsockname()[0]
                sock.sendto(b"stop", (port, 0))  # shorter than an event: the socket filter keeps it
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=RECV_TIMEOUT_S + 1.0)
        if sock is not None:
            if port is not None:
                try:
                    for _ in range(2):
                        sock.send(control_message(PROC_CN_MCAST_IGNORE, port))
                except OSError:
                    pass
            sock.close()

    # -- the reader thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        if self.reader == "native":
            self._run_native()
        else:
            self._run_python()

    def _run_native(self) -> None:
        """The same reads in C (collectors/probes/_execread.c): one call waits, with the GIL released, and
        reads every exec's details as it comes, and hands back a batch when execs pause (NATIVE_GAP_MS, the
        socket's receive timeout) or NATIVE_HOLD_MS after its first exec; the records of a batch are then
        finished here (parent cache, missing, queue)."""
        sock = self._sock
        assert sock is not None and _execread is not None
        read_batch = _execread.read_batch
        fd = sock.fileno()
        exes = self._exes
        stop = self._stop
        wait_ms = int(RECV_TIMEOUT_S * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, NATIVE_GAP_MS * 1000))
        while not stop.is_set():
            budget = self._take_tokens(MAX_BATCH)
            rows, execs, over, overflows, err = read_batch(fd, wait_ms, NATIVE_HOLD_MS, budget, MAX_BATCH)
            self._tokens += budget - len(rows)  # tokens not used go back
            self.execs_seen += execs
            if over:
                self._count("rate", over)
            if overflows:
                self._count("kernel_overflow", overflows)
                exes.clear()  # events were lost: what the cache knows may be stale
            if rows:
                self._push_all(finish_native(rows, exes))
            if err and not self._error(OSError(err, os.strerror(err))):
                return

    def _run_python(self) -> None:
        """One wakeup per exec the kernel reports while the reader waits (execs queued meanwhile are read in
        the same wakeup). The common case, one exec and nothing else queued, takes a short path: the exe at
        once, then `read_one`; anything else goes through `_handle`."""
        sock = self._sock
        assert sock is not None
        recv = sock.recv
        queued = select.poll()  # what is queued, asked without waiting (no exception per wakeup)
        queued.register(sock.fileno(), select.POLLIN)
        more = queued.poll
        readlink = os.readlink
        base = f"{self.proc}/"
        exes = self._exes
        info = self._info
        stop = self._stop
        while not stop.is_set():
            try:
                got = leader_events(recv(65536))  # waits for an exec, up to RECV_TIMEOUT_S
            except BlockingIOError:
                continue
            except OSError as e:
                if not self._error(e):
                    return
                continue
            if not got:
                continue  # an acknowledgement, or what Python skips where the kernel took no filter
            pid = got[0][2] if got[0][1] == PROC_EVENT_EXEC else 0
            took = pid > 0 and self._take_tokens(1) > 0
            exe = None
            if took:
                try:
                    exe = readlink(f"{base}{pid}/exe")  # the identity, before anything else
                except OSError:
                    exe = None
            if len(got) == 1 and pid and not more(0):  # one exec, nothing else queued
                self.execs_seen += 1
                exes.pop(pid, None)  # exec'd: its exe is new
                if len(exes) > MAX_PARENT_CACHE:
                    exes.clear()
                if took:
                    rec = read_one(pid, exe, base, time.time(), exes, info)
                    if exe is not None:
                        exes[pid] = exe
                    self._push_one(rec)
                else:
                    self._count("rate")
                continue
            events = [ev for ev in got if ev[1] == PROC_EVENT_EXEC]
            for _ in range(MAX_BATCH):  # everything queued, in kernel order
                if not more(0):
                    break
                try:
                    data = recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as e:
                    if not self._error(e):
                        return
                    continue
                events += [ev for ev in leader_events(data) if ev[1] == PROC_EVENT_EXEC]
            if events:
                self._handle(events, {pid: exe} if took else None)

    def _error(self, e: OSError) -> bool:
        """A read error: True to go on (ENOBUFS: the kernel dropped events, counted), False when the socket
        failed (the reader stops and the probe falls back to polling)."""
        if e.errno == errno.ENOBUFS:
            self._count("kernel_overflow")
            self._exes.clear()  # events were lost: what the cache knows may be stale
            return True
        if not self._stop.is_set():
            self.failed = f"reading process events failed: {e}"
            log.warning("process events connector: %s; falling back to /proc polling", self.failed)
        return False

    def _handle(self, events: list[tuple[int, int, int]], early: dict[int, str | None] | None = None) -> None:
        """Read the batch's execs (rate-limited), then queue execs and exits in kernel order. `events` are
        (timestamp, what, pid) of main threads (leader_events); `early` the exes already read on waking (a
        token taken for each)."""
        exes = self._exes
        execs = [pid for _ts, what, pid in events if what == PROC_EVENT_EXEC]
        exits = [pid for _ts, what, pid in events if what == PROC_EVENT_EXIT]
        for pid in execs:
            exes.pop(pid, None)  # exec'd: its exe is new
        for pid in exits:
            exes.pop(pid, None)
        if len(exes) > MAX_PARENT_CACHE:
            exes.clear()
        self.execs_seen += len(execs)
        self.exits_seen += len(exits)
        early = early or {}
        allowed = min(len(execs), len(early) + self._take_tokens(len(execs) - len(early)))
        if allowed < len(execs):
            self._count("rate", len(execs) - allowed)
        wanted = execs[:allowed]  # the batch's first execs get the tokens
        records = read_execs(wanted, self.proc, exes=exes, read=early, info=self._info) if wanted else []
        for rec in records:  # learnt: this pid's exe, until its next exec or exit event
            if rec.exe is not None:
                exes[rec.pid] = rec.exe
        for pid in exits:  # exited within the batch: nothing to remember
            exes.pop(pid, None)
        now = records[0].time if records else time.time()
        out: list[ExecRecord | ExitRecord] = []
        taken = 0
        for _ts, what, pid in events:
            if what == PROC_EVENT_EXEC:
                if taken < allowed:
                    out.append(records[taken])
                    taken += 1
            elif what == PROC_EVENT_EXIT:
                out.append(ExitRecord(pid, now))
        if out:
            self._push_all(out)

