"""Logged-in users (psutil) and authentication attempts from the auth log or the systemd journal.

The auth log is followed like `tail -F`: by inode and offset, a rotated or truncated file is reopened
from its start. Reads are bounded per cycle; over-long lines are cut. Without an auth log file, the
journal's auth facilities are read with a cursor file (`journalctl --cursor-file`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import psutil

from collectors import signals
from collectors.probes.base import Emit, Probe
from collectors.safe import absent, clean, open_regular, read_fd
from collectors.state import read_json, write_json
from contract.events import Kind

MAX_LINE = 4096
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")

# sshd's own lines, anchored at the message's start: a client-chosen user name ("Invalid user <name> from ...")
# can hold spaces and look like another line, so the source is the last "from <address> port <n>".
_SSH_FAILED = re.compile(r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>.*) from (?P<src>\S+) port \d+")
_SSH_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<src>\S+) port \d+")
_PAM_FAILURE = re.compile(r"pam_unix\((?P<service>[\w-]+):auth\): authentication failure;.*?"
                          r"(?:rhost=(?P<src>\S*))?\s*(?:user=(?P<user>\S+))?\s*$")
_SUDO_OK = re.compile(r"^\s*(?P<user>\S+) : .*COMMAND=")
_SERVICE = re.compile(r"(?P<service>[\w.-]+)(?:\[\d+\])?: (?P<msg>.*)$")


def parse_auth_line(line: str, service: str | None = None) -> dict[str, Any] | None:
    """One auth.attempt payload from a syslog line (or a journal MESSAGE with its identifier)."""
    msg = line
    if service is None:
        m = _SERVICE.search(line)
        if not m:
            return None
        service, msg = m.group("service"), m.group("msg")
    if service == "sshd" or service.startswith("sshd-"):
        msg = msg.strip()
        if m2 := _SSH_FAILED.match(msg):
            return {"user": m2["user"][:64], "outcome": "failure", "source": m2["src"][:64],
                    "method": m2["method"][:32], "service": "sshd"}
        if m2 := _SSH_ACCEPTED.match(msg):
            return {"user": m2["user"][:64], "outcome": "success", "source": m2["src"][:64],
                    "method": m2["method"][:32], "service": "sshd"}
        return None  # sshd's own pam lines duplicate the "Failed ..." line
    if m2 := _PAM_FAILURE.search(msg):
        return {"user": m2["user"] or "", "outcome": "failure", "source": m2["src"] or "",
                "method": "password", "service": m2["service"]}
    if service == "sudo" and (m2 := _SUDO_OK.search(msg)):
        return {"user": m2["user"], "outcome": "success", "source": "", "method": "sudo", "service": "sudo"}
    return None


class LogFollower:
    """Reads new complete lines of a file, surviving rotation and truncation."""

    def __init__(self, path: Path, max_bytes: int, from_start_if_newer_than: float | None = None,
                 state_file: Path | None = None) -> None:
        self.path = path
        self.state_file = state_file
        self.max_bytes = max_bytes
        self.inode: int | None = None
        self.offset = 0
        self._partial = b""
        self._newer_than = from_start_if_newer_than

    def read_lines(self) -> list[str]:
        st = absent(lambda: os.stat(self.path))
        if st is None:
            return []
        if self.inode is None:  # first open: where the last run stopped, else the end of the file, unless
            saved = read_json(self.state_file) if self.state_file else None  # it began this boot
            fresh = self._newer_than is not None and st.st_ctime >= self._newer_than
            self.offset = 0 if fresh else st.st_size
            if isinstance(saved, dict) and saved.get("inode") == st.st_ino and saved.get("offset", -1) <= st.st_size:
                self.offset = int(saved["offset"])
        elif st.st_ino != self.inode or st.st_size < self.offset:
            self.offset, self._partial = 0, b""  # rotated or truncated
        self.inode = st.st_ino
        if st.st_size == self.offset:
            return []

        def read() -> bytes:  # never blocks on a FIFO, never follows a link planted at the log path
            fd = open_regular(self.path)
            try:
                os.lseek(fd, self.offset, os.SEEK_SET)
                data, _ = read_fd(fd, self.max_bytes)
                return data
            finally:
                os.close(fd)
        data = absent(read) or b""
        self.offset += len(data)
        if self.state_file is not None and data:
            with contextlib.suppress(OSError):
                write_json(self.state_file, {"inode": self.inode, "offset": self.offset})
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = b""
        out = []
        for raw in lines:
            text, truncated, _ = clean(raw, MAX_LINE)
            if truncated:
                signals.input_truncated.emit(what="auth_line")
            out.append(text)
        return out


def _listdir(path: str) -> list[str]:
    return absent(lambda: os.listdir(path)) or []


class JournalReader:
    """New auth/authpriv journal entries since the last call (cursor kept in a file)."""

    def __init__(self, cursor_file: Path) -> None:
        self.cursor_file = cursor_file
        self.journalctl = shutil.which("journalctl")

    def has_journal(self) -> bool:
        """Any journal file at all (a cheap look before paying for a journalctl process)."""
        for top in JOURNAL_DIRS:
            for sub in _listdir(top):
                if any(n.endswith(".journal") for n in _listdir(f"{top}/{sub}")):
                    return True
        return False

    def entries(self) -> list[tuple[str, str]]:
        if not self.journalctl or not self.has_journal():
            return []
        cmd = [self.journalctl, "--no-pager", "-q", "-o", "json", f"--cursor-file={self.cursor_file}",
               "SYSLOG_FACILITY=4", "SYSLOG_FACILITY=10"]
        if not self.cursor_file.exists():
            cmd.append("-b")
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=10, check=False, umask=0o077).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        entries = []
        for raw in out.splitlines()[-5000:]:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            msg, ident = obj.get("MESSAGE"), obj.get("SYSLOG_IDENTIFIER") or obj.get("_COMM") or ""
            if isinstance(msg, list):  # the journal gives non-UTF-8 messages as byte arrays
                msg = bytes(b & 0xFF for b in msg if isinstance(b, int))
            if isinstance(msg, str | bytes) and isinstance(ident, str):
                entries.append((clean(ident, 64)[0], clean(msg, MAX_LINE)[0]))
        return entries


class LoginProbe(Probe):
    name = "logins"

    def __init__(self, interval: float = 15.0, inventory_interval: float | None = 600.0,
                 auth_logs: list[Path] | None = None, journal_cursor: Path | None = None,
                 max_bytes: int = 1_000_000, boot_time: float | None = None,
                 state_dir: Path | None = None) -> None:
        super().__init__(interval, inventory_interval)
        boot = boot_time if boot_time is not None else psutil.boot_time()
        self.followers = [LogFollower(p, max_bytes, boot, state_dir / f"authlog.{p.name}.json" if state_dir else None)
                          for p in auth_logs or []]
        self.journal = JournalReader(journal_cursor) if journal_cursor is not None else None
        self.failed_total = 0
        self._last_users: list[dict[str, Any]] | None = None

    def users(self) -> list[dict[str, Any]]:
        got = absent(psutil.users) or []
        return [{"user": clean(u.name or "", 64)[0], "terminal": clean(u.terminal or "", 64)[0],
                 "host": clean(u.host or "", 256)[0], "started": round(u.started, 3)} for u in got]

    def attempts(self) -> list[dict[str, Any]]:
        found = []
        have_file = False
        for follower in self.followers:
            if follower.path.exists():
                have_file = True
            for line in follower.read_lines():
                if (a := parse_auth_line(line)) is not None:
                    found.append(a)
        if not have_file and self.journal is not None:
            for ident, msg in self.journal.entries():
                if (a := parse_auth_line(msg, ident)) is not None:
                    found.append(a)
        return found

    def collect(self, full: bool) -> list[Emit]:
        out: list[Emit] = []
        users = self.users()
        if full or users != self._last_users:
            out.append((Kind.LOGIN_INVENTORY, {"items": users}))
            self._last_users = users
        for a in self.attempts():
            if a["outcome"] == "failure":
                self.failed_total += 1
            out.append((Kind.AUTH_ATTEMPT, a))
        return out
