"""Process starts, exits and inventory.

Cheap by design: each cycle lists /proc (one readdir) and reads details only for new pids, so a host
with hundreds of idle processes costs almost nothing. With the default 1 s interval every process that
lives 1 s or more is seen. A pid reused within one interval is not told apart (documented limit).
A new process that still looks exactly like its parent (same exe and command line: forked, not yet
exec'd) is looked at again one cycle later, so the program it execs is what process.start reports; if it
is gone by then, it is reported as it was (start and exit). So is, once, a new process caught inside its
exec (its new program in place, its command line not yet: it reads empty).

Command lines pass the redaction (collectors/redact.py) argument by argument before they are cut to
max_cmdline_chars, so a secret is masked even when the line is long.

Three sources of starts (`mode`, reported in agent.hello and heartbeats, a log line and the gauge
herdwatch_collector_process_source), tried in this order:
- "connector": the kernel's process events (collectors/probes/exec_events.py) report every exec, also of
  processes living a millisecond (root, the initial PID and network namespaces).
- "fanotify": FAN_OPEN_EXEC events (collectors/probes/fanotify_events.py) report every exec where the
  connector is refused: in a PID namespace (a container, a lab host), as root.
- "poll": the /proc listing each cycle, as described above (not root, another /proc, an old kernel).
In both event modes each cycle drains the reader's records without waiting; identical execs are
aggregated (collectors/probes/exec_storms.py) and at most `max_events_per_cycle` new kinds are reported
one by one per cycle (the rest go into counted reports). Exits come from one /proc listing per cycle
(names only: no process is read), in both event modes, so a process started and gone within a cycle is
reported started and exited in that cycle; in the initial PID namespace the listing is skipped when the
machine created and ended no task since the last one (/proc/loadavg); the full snapshot (every process
read again) runs only for the periodic inventory. A reader failure falls back to polling. An exec whose
program was read but not its command line or user (read mid-exec, under load) is held for one cycle and read
again while it runs, so a process that lives on is reported with its whole identity; one gone by then is
reported as it was.

A detail that could not be read (the process was gone, or /proc refused) is listed in the payload's
`missing` and left empty; it is never replaced by something else (a process name is never an exe).
Kernel threads have no exe: they are marked `kernel_thread`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil

from collectors import signals
from collectors.probes.base import Emit, Probe
from collectors.probes.exec_events import ExecRecord, ExecSource, ExitRecord, in_initial_pid_namespace
from collectors.probes.exec_storms import ExecAggregator, Verdict, normalise
from collectors.probes.fanotify_events import FanotifySource
from collectors.redact import Redactor
from collectors.safe import absent, clean, read_bounded, read_proc_file, to_text
from contract.events import Kind

log = logging.getLogger("herdwatch.collector")

MAX_PARENTS = 8
MAX_QUIET = 65536
"""Aggregated (not individually reported) processes still alive, remembered until the next inventory."""
KTHREADD = 2
MAX_INCOMPLETE = 1024
"""New execs with a missing command line or user held for one cycle at most (beyond: reported at once)."""
MAX_KIND_CACHE = 1024
"""Raw exec details -> aggregation kind, remembered for command lines up to MAX_KIND_ARGV bytes (cleared
when full, so at most ~1 MB)."""
MAX_KIND_ARGV = 1024


class ProcessProbe(Probe):
    name = "processes"

    def __init__(self, interval: float = 1.0, inventory_interval: float | None = 600.0,
                 proc: Path = Path("/proc"), max_cmdline_chars: int = 4096,
                 redactor: Redactor | None = None, exec_source: ExecSource | FanotifySource | None = None,
                 source_reason: str = "", exec_window_s: float = 10.0, max_events_per_cycle: int = 500) -> None:
        super().__init__(interval, inventory_interval)
        self.redactor = redactor or Redactor()
        self.proc = proc
        self.max_cmdline = max_cmdline_chars
        self.known: dict[int, dict[str, Any]] = {}
        self._users: dict[int, str] = {}
        self._deferred: dict[int, dict[str, Any]] = {}
        self._rechecked: set[int] = set()
        """New processes deferred once because they were caught inside their exec (empty command line)."""
        self._started = False
        self.exec_source = exec_source
        self.source_reason = source_reason
        """Why the probe polls (empty in an event mode)."""
        self.max_events_per_cycle = max_events_per_cycle
        self.storms: ExecAggregator[ExecRecord] = ExecAggregator(exec_window_s)
        self._quiet: dict[int, ExecRecord] = {}
        self._incomplete: dict[int, ExecRecord] = {}
        """New execs held for one cycle to read again what was missing (`_hold`)."""
        self._kinds: dict[tuple[str | None, str | None, int | None, bytes | None], tuple[str, ...]] = {}
        self._shed: dict[str, int] = {}
        self.execs_reported = 0
        self._pending_emits: list[Emit] = []
        """Execs accounted for in process.start events: one each, or `count` of a counted report."""
        self.tasks_file: str | None = (
            "/proc/loadavg" if str(proc) == "/proc" and in_initial_pid_namespace(proc) else None
        )
        """Where the machine's count of tasks and its last pid are read (`_tasks_mark`); None: list every cycle."""
        self._listed_at_mark: bytes | None = None
        signals.set_process_source(self.mode)

    # -- which source ----------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """connector, fanotify or poll."""
        source = self.exec_source
        return source.mode if source is not None and source.failed is None else "poll"

    def source_info(self) -> dict[str, str]:
        """For agent.hello and heartbeats: {"mode": ..., "reason": why it polls}; in connector mode also
        "reader": "native" (the C reader) or "python"."""
        info = {"mode": self.mode}
        if self.mode == "poll":
            info["reason"] = self.source_reason or "configured"
        elif self.exec_source is not None and self.exec_source.mode == "connector":
            info["reader"] = self.exec_source.reader
        return info

    def take_shed(self) -> dict[str, int]:
        """Events shed since the last call, by reason (exec_events_<reason>), for the heartbeat's `shed`."""
        shed, self._shed = self._shed, {}
        if self.exec_source is not None:
            for reason, n in self.exec_source.take_shed().items():
                shed[f"exec_events_{reason}"] = shed.get(f"exec_events_{reason}", 0) + n
                signals.exec_events_shed.emit(n, reason=reason)
        return shed

    def close(self) -> None:
        if self.exec_source is not None:
            self.exec_source.close()

    def pids(self) -> set[int]:
        """The pids in /proc: one listing, converted in C (map and filter), as it runs every cycle."""
        try:
            return set(map(int, filter(str.isdigit, os.listdir(self.proc))))
        except OSError:
            return set(self.known)

    def read(self, pid: int) -> dict[str, Any] | None:
        """One process's details, or None if it vanished. Unreadable fields are left empty."""
        p = absent(lambda: psutil.Process(pid))
        if p is None:
            return None
        with p.oneshot():
            ppid = absent(p.ppid)
            start = absent(p.create_time)
            name = absent(p.name) or ""
            exe = absent(p.exe) or ""
            uids = absent(p.uids)
        if start is None:
            return None
        got = read_bounded(self.proc / str(pid) / "cmdline", self.max_cmdline * 4)
        raw, over = got if got is not None else (b"", False)
        cmdline, truncated, invalid = self.cmdline(raw)
        truncated = truncated or over
        if truncated:
            signals.input_truncated.emit(what="cmdline")
        exe_text, exe_invalid, _ = clean(exe, 4096)
        item: dict[str, Any] = {
            "pid": pid, "ppid": ppid or 0, "exe": exe_text, "cmdline": cmdline,
            "cmdline_truncated": truncated, "user": self._user(uids.real if uids else None),
            "start_time": round(start, 3), "name": clean(name, 256)[0],
        }
        if pid == KTHREADD or ppid == KTHREADD:
            item["kernel_thread"] = True  # no exe, no command line: its name is all it has
        else:
            missing = [f for f, v in (("exe", exe_text), ("cmdline", cmdline), ("user", uids)) if not v]
            if missing:
                item["missing"] = missing
        if invalid or exe_invalid:
            item["invalid_utf8"] = True
        return item

    def cmdline(self, raw: bytes) -> tuple[str, bool, bool]:
        """/proc/<pid>/cmdline bytes (NUL-separated argv) as (redacted text, truncated, invalid_utf8)."""
        args = raw.split(b"\0")
        if args and args[-1] == b"":
            args.pop()
        decoded = [to_text(a) for a in args]
        text = " ".join(self.redactor.argv([t for t, _ in decoded]))
        cmdline, truncated, _ = clean(text, self.max_cmdline)
        return cmdline, truncated, any(bad for _, bad in decoded)

    def _user(self, uid: int | None) -> str:
        if uid is None:
            return ""
        if uid not in self._users:
            import pwd
            try:
                self._users[uid] = clean(pwd.getpwuid(uid).pw_name, 64)[0]
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]

    def parents(self, ppid: int) -> list[str]:
        chain: list[str] = []
        seen: set[int] = set()
        while ppid and ppid not in seen and len(chain) < MAX_PARENTS:
            seen.add(ppid)
            parent = self.known.get(ppid)
            if parent is None:
                break
            if not parent["exe"]:  # unknown (or a kernel thread): the chain ends, never a name instead
                break
            chain.append(parent["exe"])
            ppid = parent["ppid"]
        return chain

    @staticmethod
    def _mid_exec(item: dict[str, Any]) -> bool:
        """Its new program is in place but not yet its command line (the kernel sets the arguments up a
        moment after the program): an empty command line of a process with an exe."""
        return not item["cmdline"] and bool(item["exe"]) and not item.get("kernel_thread")

    def _unexeced_fork(self, item: dict[str, Any]) -> bool:
        parent = self.known.get(item["ppid"])
        return parent is not None and parent["exe"] == item["exe"] and parent["cmdline"] == item["cmdline"]

    def collect(self, full: bool) -> list[Emit]:
        if self.exec_source is not None:
            if self.exec_source.failed is None:
                return self._collect_events(full)
            self._fall_back(self.exec_source.failed)
        return self._poll(full)

    def _fall_back(self, reason: str) -> None:
        assert self.exec_source is not None
        out = self._drain_events(hold=False)  # what the reader got before it failed is still reported
        self._pending_emits = out
        self.exec_source.close()
        self.exec_source = None
        self.source_reason = reason
        signals.set_process_source("poll")
        log.warning("process events: falling back to /proc polling every %.1f s (%s)", self.interval, reason)

    def _poll(self, full: bool) -> list[Emit]:
        pending, self._pending_emits = self._pending_emits, []
        return pending + self._poll_diff(full)

    def _poll_diff(self, full: bool) -> list[Emit]:
        now = self.pids()
        out: list[Emit] = []
        for pid in sorted(self.known.keys() - now):
            out.append((Kind.PROCESS_EXIT, self.known.pop(pid)))
        deferred, self._deferred = self._deferred, {}
        for pid in sorted(deferred.keys() - now):  # a fork that ended without exec'ing
            self._rechecked.discard(pid)
            gone = deferred[pid]
            out += [(Kind.PROCESS_START, {**gone, "parents": self.parents(gone["ppid"])}), (Kind.PROCESS_EXIT, gone)]
        for pid in sorted(now - self.known.keys()):
            item = self.read(pid)
            if item is None:
                continue
            if self._started and pid not in deferred and self._unexeced_fork(item):
                self._deferred[pid] = item  # look again next cycle, once it has exec'd
                continue
            if self._started and self._mid_exec(item) and pid not in self._rechecked:
                self._rechecked.add(pid)  # caught inside its exec: look once more next cycle
                self._deferred[pid] = item
                continue
            self._rechecked.discard(pid)
            self.known[pid] = item
            if self._started:
                out.append((Kind.PROCESS_START, {**item, "parents": self.parents(item["ppid"])}))
        self._started = True
        if full:
            out.append((Kind.PROCESS_INVENTORY, {"items": [self.known[p] for p in sorted(self.known)]}))
        return out

    # -- connector mode ----------------------------------------------------------------------------------
    def _collect_events(self, full: bool) -> list[Emit]:
        out = self._drain_events()
        if self._started:  # also before an inventory: what ended this cycle is reported, not just left out
            out += self._exits()
        if full or not self._started:
            self._resync()
            self._started = True
        if full:
            out.append((Kind.PROCESS_INVENTORY, {"items": [self.known[p] for p in sorted(self.known)]}))
        return out

    def _resync(self) -> None:
        """The full snapshot: every process in /proc, read again (what the events missed is caught here)."""
        now = self.pids()
        for pid in self.known.keys() - now:
            del self.known[pid]
        for pid in sorted(now - self.known.keys()):
            item = self.read(pid)
            if item is not None:
                self.known[pid] = item
        self._quiet = {}

    def _tasks_mark(self) -> bytes | None:
        """The machine's count of tasks (processes and threads) and the last pid it allocated, from
        /proc/loadavg ("0.20 0.18 0.12 1/80 11206": 80 and 11206), or None where it cannot be used. Both
        unchanged means no task was created (the last pid would move) and none ended (the count would
        fall without a creation) in between. In the initial PID namespace only: in another, the last pid is
        that namespace's while the count is the machine's, so a creation outside and an exit inside would
        cancel out."""
        raw = read_proc_file(self.tasks_file, 256) if self.tasks_file is not None else None
        fields = raw.split() if raw else []
        if len(fields) < 5 or b"/" not in fields[3]:
            return None
        return fields[3].split(b"/")[1] + b" " + fields[4]

    def _exits(self) -> list[Emit]:
        """Processes gone since the last cycle, from one listing of /proc: an exit for each reported one,
        the rest forgotten (also by the reader's parent cache). The listing (a getdents of every pid, most of
        an idle cycle) is skipped when no task was created or ended since the last one (`_tasks_mark`, read
        before the listing, so a change during it shows at the next cycle)."""
        mark = self._tasks_mark()
        if mark is not None and mark == self._listed_at_mark:
            return []
        self._listed_at_mark = mark
        alive = self.pids()
        gone = sorted(self.known.keys() - alive)  # set differences: no Python loop over what is alive
        out: list[Emit] = [(Kind.PROCESS_EXIT, self.known.pop(pid)) for pid in gone]
        quiet_gone = list(self._quiet.keys() - alive) if self._quiet else []
        for pid in quiet_gone:
            del self._quiet[pid]
        if self.exec_source is not None:
            if gone or quiet_gone:
                self.exec_source.forget(gone + quiet_gone)
            self.exec_source.forget_gone(alive)
        return out

    def _drain_events(self, hold: bool = True) -> list[Emit]:
        assert self.exec_source is not None
        out: list[Emit] = []
        reported = 0
        held, self._incomplete = self._incomplete, {}
        new = self.exec_source.drain()
        if held:
            newer = {item.pid for item in new}
            for rec in held.values():
                if rec.pid not in newer:  # else /proc may show the newer exec's command line
                    self.exec_source.complete(rec)
        items = [*held.values(), *new]  # the held ones are older
        for item in self._held_back(items, held) if hold else items:
            if isinstance(item, ExitRecord):
                gone = self.known.pop(item.pid, None)
                if gone is not None:
                    out.append((Kind.PROCESS_EXIT, gone))
                else:
                    self._quiet.pop(item.pid, None)
                continue
            verdict = self.storms.add(self._kind(item), item, item.time, reported < self.max_events_per_cycle)
            if verdict is Verdict.REPORT:
                payload = self.exec_item(item)
                self.known[item.pid] = payload
                out.append((Kind.PROCESS_START, payload))
                self.execs_reported += 1
                reported += 1
            elif verdict is Verdict.COUNTED:
                self.known.pop(item.pid, None)  # a reused pid: the old process is gone
                if len(self._quiet) < MAX_QUIET:
                    self._quiet[item.pid] = item
            else:
                self._shed["exec_events_kinds"] = self._shed.get("exec_events_kinds", 0) + 1
                signals.exec_events_shed.emit(reason="kinds")
        for rec, count in self.storms.due(time.time(), max(0, self.max_events_per_cycle - reported)):
            payload = {**self.exec_item(rec), "count": count}
            out.append((Kind.PROCESS_START, payload))
            self.execs_reported += count
            if self._quiet.pop(rec.pid, None) is not None:
                self.known[rec.pid] = payload  # still running: its exit is reported when it comes
            else:
                out.append((Kind.PROCESS_EXIT, payload))  # already gone: keeps the host's state balanced
        return out

    def _held_back(self, items: list[ExecRecord | ExitRecord],
                   held: dict[int, ExecRecord]) -> list[ExecRecord | ExitRecord]:
        """`items` less the new execs whose program was read but not their command line or user (read
        mid-exec, or under load), kept in `_incomplete` for one cycle so that `complete` can read them again
        while the process still runs: otherwise it has no identity until the next inventory, and a miner
        that runs for two minutes can pass unseen. A record is held once (those in `held` come back now), and
        one whose pid has a newer record in `items` is released before it, as it is."""
        out: list[ExecRecord | ExitRecord] = []
        for item in items:
            earlier = self._incomplete.pop(item.pid, None)
            if earlier is not None:
                out.append(earlier)
            if (isinstance(item, ExecRecord) and item.exe is not None and held.get(item.pid) is not item
                    and ("cmdline" in item.missing or "user" in item.missing)
                    and len(self._incomplete) < MAX_INCOMPLETE):
                self._incomplete[item.pid] = item
                continue
            out.append(item)
        return out

    def _kind(self, rec: ExecRecord) -> tuple[str, ...]:
        """The exec's kind for aggregation; a storm repeats the same raw details, so the normalised key is
        remembered per raw (exe, parent exe, uid, argv) instead of being worked out again each time."""
        raw = (rec.exe, rec.parent_exe, rec.uid, rec.argv)
        key = self._kinds.get(raw)
        if key is None:
            cmd = rec.argv.replace(b"\0", b" ").decode("utf-8", "replace") if rec.argv else ""
            key = (rec.exe or "", rec.parent_exe or "", str(rec.uid), normalise(cmd))
            if rec.argv is None or len(rec.argv) <= MAX_KIND_ARGV:
                if len(self._kinds) >= MAX_KIND_CACHE:
                    self._kinds.clear()
                self._kinds[raw] = key
        return key

    def exec_item(self, rec: ExecRecord) -> dict[str, Any]:
        """The process.start payload of one exec (command line redacted here, before anything is built)."""
        missing = list(rec.missing)
        if rec.argv is not None:
            cmdline, truncated, invalid = self.cmdline(rec.argv)
            truncated = truncated or rec.argv_over
            if truncated:
                signals.input_truncated.emit(what="cmdline")
        else:
            cmdline, truncated, invalid = "", False, False
        exe, exe_invalid, _ = clean(rec.exe or "", 4096)
        parents = self.parents(rec.ppid or 0)
        if rec.parent_exe:
            parent_exe = clean(rec.parent_exe, 4096)[0]
            parents = [parent_exe, *parents[1:]] if parents else [parent_exe]
        item: dict[str, Any] = {
            "pid": rec.pid, "ppid": rec.ppid or 0, "exe": exe, "cmdline": cmdline, "cmdline_truncated": truncated,
            "user": self._user(rec.uid), "start_time": round(rec.time, 3), "name": os.path.basename(exe),
            "parents": parents, "source": self.exec_source.mode if self.exec_source is not None else "connector",
        }
        if rec.cgroup is not None:
            item["cgroup"] = clean(rec.cgroup, 256)[0]
        if missing:
            item["missing"] = missing
        if invalid or exe_invalid:
            item["invalid_utf8"] = True
        return item
