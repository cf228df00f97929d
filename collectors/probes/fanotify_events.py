"""Exec events from fanotify (FAN_OPEN_EXEC): every exec where the process events connector is refused.

The connector works only in the initial PID and network namespaces; in a container or a lab host (its
own PID namespace) the kernel refuses it, and the /proc poll misses a `curl | sh` dropper that lives
200 ms. fanotify needs neither: as root in the initial user namespace, `fanotify_init` works inside a
PID namespace (kernel >= 5.0 for FAN_OPEN_EXEC). `FanotifySource` marks every filesystem this agent's
mounts show (FAN_MARK_FILESYSTEM, or FAN_MARK_MOUNT where a filesystem mark is refused; pseudo
filesystems such as proc, sysfs and cgroup are left out) for FAN_OPEN_EXEC, so the kernel queues one
event each time a file is opened to be executed, by any process on those filesystems, also in other
mount namespaces (a service with its own /tmp, a nested `unshare`).

Each event gives the pid (in this agent's PID namespace: 0 for a process of another PID namespace that
this one cannot see, skipped) and an open descriptor of the executed file, whose path (readlink of
/proc/self/fd/N) is the program even when the process is already gone. Every descriptor is closed.

One execve opens several files: the program, for a script its interpreter (`#!`), and for a dynamically
linked program the ELF loader (ld-linux*.so*). `group_execs` folds them into execs: a loader closes the
exec it belongs to; a program after a script is that script's interpreter (the exec's exe, as
/proc/<pid>/exe has it); any other program is a new exec (`sh -c 'exec x'` is two). The loader run as a
program (`ld.so /bin/x`) is an exec of the loader. On overlayfs (containers) the kernel also reports the
lower layer's file, opened by overlayfs itself through a mount of its own just before the program: its
path does not name that file here (fstat of the descriptor against stat of the path), and such a shadow
followed by the pid's program is that one exec.

The event is queued when the file is opened, early in the execve: the process may still show its old
program and command line for a moment. The reader reads the command line, real uid and parent, parent
exe and cgroup as the connector path does (exec_events.read_execs, with the event's path as the exe),
the command line only once /proc/<pid>/exe shows the event's program (the new memory) and kept only if
it still does after; where the exec is still under way it waits a little (SETTLE_S, 6.3 ms in all) and
reads again; what could still not be read is listed in `missing`, never guessed. A script whose
interpreter's event is not in the same read is held back for the next one (SCRIPT_WAIT_S), so its exec
is reported once, as the interpreter /proc/<pid>/exe shows; so is a lower layer whose program is not.

fanotify reports no exits: the probe notices them by listing /proc each cycle (processes.py).

Every byte read is hostile: `parse_events` frames records by their own lengths and checks each header
(version 3, a metadata length within the record); a bad record is counted (`errors`), its descriptor
is not trusted (a number from a corrupt record could be one of the agent's own files) and framing stops
where lengths make no sense. The kernel writes whole records only, so none of this happens with a
working kernel; a source that keeps reading bad records stops and the probe falls back to polling.

Bounds as the connector's: at most `max_reads_per_s` execs looked up per second and `max_pending`
records between two drains; the rest, and the kernel's queue overflow (FAN_Q_OVERFLOW), are counted in
`shed`.

struct fanotify_event_metadata (include/uapi/linux/fanotify.h), native byte order:
  event_len u32, vers u8, reserved u8, metadata_len u16, mask u64 (aligned), fd s32, pid s32   24 bytes
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

from collectors.probes.exec_events import ExecQueue, ExecSourceUnavailable, read_execs

log = logging.getLogger("herdwatch.collector")

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100

METADATA = struct.Struct("=IBBHQii")
"""event_len, vers, reserved, metadata_len, mask, fd, pid: 24 bytes."""

PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "nsfs", "efivarfs", "selinuxfs",
    "rpc_pipefs", "nfsd", "devtmpfs"})
"""No programs are run from these: not marked."""

READ_BYTES = 256 * METADATA.size
"""At most 256 events per read: each holds a descriptor until it is handled, and the agent's descriptor limit
(often 1,024) must never be reached by them."""
WAIT_S = 0.2
SCRIPT_WAIT_S = 0.002
"""How long a script's exec waits for its interpreter's event (queued microseconds later by the same
execve) before it is reported as it is."""
MAX_HELD = 256
WAITING = ("script", "shadow")
"""group_execs states of an exec whose next file opened is still part of it (the interpreter, the program)."""
SETTLE_S = (0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032)
"""Waits before reading again an exec still under way (6.3 ms in all)."""
MAX_ERRORS_IN_A_ROW = 64
MAX_PATHS = 4096


def parse_events(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """(mask, fd, pid) of every well-formed record in one read, in order, and the number of bad records.

    Never raises. A record is well-formed when its event_len covers the header and stays within the
    buffer, its version is FANOTIFY_METADATA_VERSION and its metadata_len is within [24, event_len]; only
    those records' descriptors are the caller's to use and close. A record with a sane length but a bad
    header is skipped (counted); a length that cannot frame the next record (too short, past the end,
    or a tail shorter than a header) ends the parse (counted once)."""
    out: list[tuple[int, int, int]] = []
    bad = 0
    off = 0
    end = len(data)
    size = METADATA.size
    while off < end:
        if end - off < size:
            return out, bad + 1
        event_len, vers, _reserved, metadata_len, mask, fd, pid = METADATA.unpack_from(data, off)
        if event_len < size or event_len > end - off:
            return out, bad + 1
        if vers != FANOTIFY_METADATA_VERSION or metadata_len < size or metadata_len > event_len:
            bad += 1
        else:
            out.append((mask, fd, pid))
        off += event_len
    return out, bad


def is_loader(path: str) -> bool:
    """The ELF program loader (ld-linux-x86-64.so.2, ld-linux-aarch64.so.1, ld-musl-x86_64.so.1, ...)."""
    name = path.rsplit("/", 1)[-1]
    return name.startswith("ld-") and ".so" in name


def group_execs(opened: list[tuple[int, str, bool, bool]],
                state: dict[int, str] | None = None) -> list[tuple[int, str]]:
    """(pid, exe) of each exec, from (pid, path, is_script, is_shadow) of the files opened for execution,
    in kernel order (see the module doc). A shadow is a file whose path is not where this namespace sees
    it: overlayfs opens a program's lower-layer file itself, through a mount of its own, just before the
    program; a shadow followed by the pid's next program is that exec (the program's path is the one
    kept). `state` (pid -> "open", "script" or "shadow") carries each pid's last exec from one read to the
    next: still open (its loader may follow), a script waiting for its interpreter, or seen through a
    shadow only, waiting for its program; it is updated in place."""
    st = state if state is not None else {}
    execs: list[tuple[int, str]] = []
    index: dict[int, int] = {}
    """pid -> index in `execs` of its exec still open in this read."""
    for pid, path, script, shadow in opened:
        prev = st.get(pid)
        if is_loader(path):
            if prev is None:
                execs.append((pid, path))  # the loader run as a program: it opens the program plainly
            else:
                del st[pid]  # the loader ends the exec it belongs to
            index.pop(pid, None)
            continue
        if prev in WAITING:  # the interpreter of the script just opened, or the program whose lower layer
            # came first (in this read or the one before): the same exec, its real program
            if pid in index:
                execs[index[pid]] = (pid, path)
            else:  # the script came in an earlier read and was reported there
                execs.append((pid, path))
                index[pid] = len(execs) - 1
        else:
            execs.append((pid, path))
            index[pid] = len(execs) - 1
        st[pid] = "script" if script else "shadow" if shadow else "open"
    return execs


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_init.restype = ctypes.c_int
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    libc.fanotify_mark.restype = ctypes.c_int
    return libc


def exec_mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, device) of each mount programs can be run from, one per device
    (a filesystem mark covers every mount of it), from /proc/self/mountinfo text. Unparseable lines are
    skipped."""
    out: list[tuple[str, str, str]] = []
    devices: set[str] = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or sep + 1 >= len(fields):
            continue
        device, point, fstype = fields[2], _unescape(fields[4]), fields[sep + 1]
        if fstype in PSEUDO_FILESYSTEMS or device in devices:
            continue
        devices.add(device)
        out.append((point, fstype, device))
    return out


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and all(c in "01234567" for c in field[i + 1:i + 4]):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class FanotifySource(ExecQueue):
    """fanotify exec events with a reader thread; the same interface as exec_events.ExecSource."""

    mode = "fanotify"

    def __init__(self, proc: Path = Path("/proc"), max_reads_per_s: float = 2000.0,
                 max_pending: int = 20000) -> None:
        super().__init__(proc, max_reads_per_s, max_pending)
        self._fd = -1
        # shed reasons here: rate, pending, kernel_overflow (FAN_Q_OVERFLOW, one per event), no_descriptor (the
        # process is out of descriptors: the kernel drops the event it could not open)
        self.errors: dict[str, int] = {}
        """Bad records read (bad_record) and descriptors that could not be resolved (unreadable_fd)."""
        self.failed: str | None = None
        self.execs_seen = 0
        self.exits_seen = 0
        self.foreign = 0
        """Events of processes in PID namespaces this agent cannot see (pid 0): skipped."""
        self.marked: list[str] = []
        """What is marked, for logs: `<mount point> (<fstype>, filesystem|mount)`."""
        self._execs: dict[int, str] = {}
        self._held: dict[int, str] = {}
        """pid -> script opened for execution whose interpreter has not come yet."""
        """pid -> its last exec's state for group_execs."""
        self._script_paths: dict[str, bool] = {}

    # -- subscription --------------------------------------------------------------------------------
    def open(self) -> None:
        """fanotify_init and a mark on every filesystem of this agent's mounts; raises
        ExecSourceUnavailable with the reason."""
        try:
            libc = _libc()
        except (OSError, AttributeError) as e:
            raise ExecSourceUnavailable(f"no fanotify in this C library: {e}") from e
        fd = libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF,
                                os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise ExecSourceUnavailable(f"fanotify_init refused: {os.strerror(err)} (needs root, "
                                        "CAP_SYS_ADMIN in the initial user namespace)")
        try:
            mountinfo = Path(self.proc, "self/mountinfo").read_bytes().decode("utf-8", "surrogateescape")
        except OSError as e:
            os.close(fd)
            raise ExecSourceUnavailable(f"cannot read {self.proc}/self/mountinfo: {e}") from e
        refused: list[str] = []
        for point, fstype, _dev in exec_mounts(mountinfo):
            for how, flag in (("filesystem", FAN_MARK_FILESYSTEM), ("mount", FAN_MARK_MOUNT)):
                if libc.fanotify_mark(fd, FAN_MARK_ADD | flag, FAN_OPEN_EXEC, AT_FDCWD, os.fsencode(point)) == 0:
                    self.marked.append(f"{point} ({fstype}, {how})")
                    break
            else:
                refused.append(f"{point}: {os.strerror(ctypes.get_errno())}")
        if not self.marked:
            os.close(fd)
            hint = "; ".join(refused[:3]) or "no mounts"
            raise ExecSourceUnavailable(f"fanotify could mark no filesystem for FAN_OPEN_EXEC (kernel >= 5.0 "
                                        f"needed): {hint}")
        if refused:
            log.info("fanotify exec events: not marked (execs there are not seen): %s", "; ".join(refused))
        self._fd = fd
        self._thread = threading.Thread(target=self._run, name="exec-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the reader thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        fd = self._fd
        waiter = select.poll()
        waiter.register(fd, select.POLLIN)
        stop = self._stop
        bad_in_a_row = 0
        while not stop.is_set():
            if not waiter.poll(SCRIPT_WAIT_S * 1000 if self._held else WAIT_S * 1000):
                if self._held:  # no interpreter came: the scripts are reported as they are
                    self._flush_held()
                continue
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):  # no descriptor for an event: it is lost, counted
                    self._count("no_descriptor")
                    time.sleep(WAIT_S)
                    continue
                if not stop.is_set():
                    self.failed = f"reading fanotify events failed: {e}"
                    log.warning("fanotify exec events: %s; falling back to /proc polling", self.failed)
                return
            bad = self.handle(data)
            bad_in_a_row = bad_in_a_row + 1 if bad else 0
            if bad_in_a_row >= MAX_ERRORS_IN_A_ROW:
                self.failed = f"fanotify: {MAX_ERRORS_IN_A_ROW} reads in a row held malformed records"
                log.warning("fanotify exec events: %s; falling back to /proc polling", self.failed)
                return

    def handle(self, data: bytes) -> int:
        """One read's records: resolve and close every descriptor, group the execs, read their details
        (rate-limited) and queue them. Returns the number of bad records (counted in `errors`)."""
        events, bad = parse_events(data)
        if bad:
            self._error("bad_record", bad)
        opened: list[tuple[int, str, bool, bool]] = []
        overflow = 0
        fd_path = "/proc/self/fd/{}".format
        for mask, fd, pid in events:
            if fd < 0:
                if mask & FAN_Q_OVERFLOW:
                    overflow += 1
                continue
            try:
                if pid <= 0:
                    self.foreign += 1
                    continue
                try:
                    path = os.readlink(fd_path(fd))
                except OSError:
                    self._error("unreadable_fd")
                    continue
                if is_loader(path):
                    opened.append((pid, path, False, False))
                    continue
                script = self._script_paths.get(path)
                if script is None:
                    script = _starts_with_shebang(fd)
                    if len(self._script_paths) >= MAX_PATHS:
                        self._script_paths.clear()
                    self._script_paths[path] = script
                opened.append((pid, path, script, _is_shadow(fd, path)))
            finally:
                os.close(fd)
        if overflow:
            self._count("kernel_overflow", overflow)
            self._exes.clear()
            self._execs.clear()
        if len(self._execs) > MAX_PATHS:
            self._execs.clear()
        execs = group_execs(opened, self._execs)
        held = self._held
        for pid, _path in execs:
            held.pop(pid, None)  # its interpreter or program came: this exec replaces the one held back
        # held back and since closed by its loader: nothing will replace it
        execs.extend((pid, held.pop(pid)) for pid in [p for p in held if self._execs.get(p) not in WAITING])
        # a script whose interpreter is not read yet, or a lower layer whose program is not (the next read
        # has it): held back, so the exec is reported once, with the program /proc/<pid>/exe shows
        waiting = {pid: i for i, (pid, _path) in enumerate(execs) if self._execs.get(pid) in WAITING}
        if waiting:
            for pid, i in waiting.items():
                held[pid] = execs[i][1]
            execs = [e for i, e in enumerate(execs) if waiting.get(e[0]) != i]
            if len(held) > MAX_HELD:
                self._flush_held()
        if execs:
            self._read_and_queue(execs)
        return bad

    def _flush_held(self) -> None:
        held, self._held = self._held, {}
        self._read_and_queue(list(held.items()))

    def _read_and_queue(self, execs: list[tuple[int, str]]) -> None:
        exes = self._exes
        for pid, _path in execs:
            exes.pop(pid, None)
        if len(exes) > 8192:
            exes.clear()
        self.execs_seen += len(execs)
        allowed = self._take_tokens(len(execs))
        if allowed < len(execs):
            self._count("rate", len(execs) - allowed)
            execs = execs[:allowed]
        if not execs:
            return
        pids = [pid for pid, _ in execs]
        known = [path for _, path in execs]
        records = read_execs(pids, self.proc, exes=exes, known=known, info=self._info)
        last = {pid: i for i, pid in enumerate(pids)}
        for wait in SETTLE_S:  # the exec is still under way: /proc shows the old program
            unsettled = [i for i, rec in enumerate(records)
                         if rec.argv is None and last[rec.pid] == i and self._alive(rec.pid)]
            if not unsettled:
                break
            time.sleep(wait)
            again = read_execs([pids[i] for i in unsettled], self.proc, records[0].time, exes=exes,
                               known=[known[i] for i in unsettled], info=self._info)
            for i, rec in zip(unsettled, again, strict=True):
                records[i] = rec
        for i, rec in enumerate(records):
            if rec.argv is None and rec.exe is not None and is_loader(rec.exe):
                # A loader's event without its program's (the agent subscribed mid-exec, a queue overflow):
                # unless /proc shows the loader as the program (`ld.so /bin/x`), the exec's program is not
                # known, and never the loader. Found in the lab: a host's agent starting during a job's exec
                # reported `dash` starting the loader, new to the image.
                records[i] = replace(rec, exe=None, missing=["exe", *rec.missing])
            elif rec.exe is not None:
                exes[rec.pid] = rec.exe
        self._push_all(records)

    def _alive(self, pid: int) -> bool:
        """Still running (a zombie or a gone process has no exe link to read)."""
        try:
            os.readlink(f"{self.proc}/{pid}/exe")
        except OSError:
            return False
        return True

    def _error(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.errors[reason] = self.errors.get(reason, 0) + n

    # -- the probe's side ------------------------------------------------------------------------------
    def forget(self, pids: set[int] | list[int]) -> None:
        """Processes gone (the probe's listing): their exes leave the parent cache, their execs under way too."""
        super().forget(pids)
        for pid in pids:
            self._execs.pop(pid, None)


def _is_shadow(fd: int, path: str) -> bool:
    """True when `path` (the descriptor's) is not this namespace's name of the descriptor's file: a mount
    of its own (overlayfs's lower layer), a file deleted since, or a mount namespace whose files this one
    does not see."""
    try:
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        return True
    return (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino)


def _starts_with_shebang(fd: int) -> bool:
    try:
        return os.pread(fd, 2, 0) == b"#!"
    except OSError:
        return False

