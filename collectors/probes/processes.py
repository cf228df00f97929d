"""Process starts, exits and inventory.

Cheap by design: each cycle lists /proc (one readdir) and reads details only for new pids, so a host
with hundreds of idle processes costs almost nothing. With the default 1 s interval every process that
lives 1 s or more is seen. A pid reused within one interval is not told apart (documented limit).
A new process that still looks exactly like its parent (same exe and command line: forked, not yet
exec'd) is looked at again one cycle later, so the program it execs is what process.start reports; if it
is gone by then, it is reported as it was (start and exit).

Command lines pass the redaction (collectors/redact.py) argument by argument before they are cut to
max_cmdline_chars, so a secret is masked even when the line is long.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

from collectors import signals
from collectors.probes.base import Emit, Probe
from collectors.redact import Redactor
from collectors.safe import absent, clean, read_bounded, to_text
from contract.events import Kind

MAX_PARENTS = 8


class ProcessProbe(Probe):
    name = "processes"

    def __init__(self, interval: float = 1.0, inventory_interval: float | None = 600.0,
                 proc: Path = Path("/proc"), max_cmdline_chars: int = 4096,
                 redactor: Redactor | None = None) -> None:
        super().__init__(interval, inventory_interval)
        self.redactor = redactor or Redactor()
        self.proc = proc
        self.max_cmdline = max_cmdline_chars
        self.known: dict[int, dict[str, Any]] = {}
        self._users: dict[int, str] = {}
        self._deferred: dict[int, dict[str, Any]] = {}
        self._started = False

    def pids(self) -> set[int]:
        try:
            return {int(n) for n in os.listdir(self.proc) if n.isdigit()}
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
            chain.append(parent["exe"] or parent["name"])
            ppid = parent["ppid"]
        return chain

    def _unexeced_fork(self, item: dict[str, Any]) -> bool:
        parent = self.known.get(item["ppid"])
        return parent is not None and parent["exe"] == item["exe"] and parent["cmdline"] == item["cmdline"]

    def collect(self, full: bool) -> list[Emit]:
        now = self.pids()
        out: list[Emit] = []
        for pid in sorted(self.known.keys() - now):
            out.append((Kind.PROCESS_EXIT, self.known.pop(pid)))
        deferred, self._deferred = self._deferred, {}
        for pid in sorted(deferred.keys() - now):  # a fork that ended without exec'ing
            gone = deferred[pid]
            out += [(Kind.PROCESS_START, {**gone, "parents": self.parents(gone["ppid"])}), (Kind.PROCESS_EXIT, gone)]
        for pid in sorted(now - self.known.keys()):
            item = self.read(pid)
            if item is None:
                continue
            if self._started and pid not in deferred and self._unexeced_fork(item):
                self._deferred[pid] = item  # look again next cycle, once it has exec'd
                continue
            self.known[pid] = item
            if self._started:
                out.append((Kind.PROCESS_START, {**item, "parents": self.parents(item["ppid"])}))
        self._started = True
        if full:
            out.append((Kind.PROCESS_INVENTORY, {"items": [self.known[p] for p in sorted(self.known)]}))
        return out
