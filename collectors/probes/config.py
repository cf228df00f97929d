"""Security-relevant configuration: file hashes and modes, parsed sshd/passwd/group settings,
sudoers, crontabs, authorized_keys and kernel sysctls.

Change detection is cheap, as nearly every run finds nothing changed: each source is re-read only when
the stat signature (device, inode, size, mtime, ctime, mode, owner; collectors/probes/file_sigs.py) of one
of its files, or the listing of its directory, changed, or when the last signature was taken in the same
clock tick as a change ("racy": a second change in that tick could hide). Directory listings, the homes
parsed from /etc/passwd and the mount table's parse are kept while what they come from is unchanged, and a
run that re-read nothing and found the sysctls and mounts as before returns without diffing. Sysctls are
tiny /proc reads (open, read, close each) and are read every cycle. A change is reported as config.change
{key, before, after}.

Files are read with collectors.safe (never blocking, never through a symlink, size-capped). A watched
path that is a symlink is reported as `file.link:<path>` = its target, never read through (e.g. the
unit links in /etc/systemd/system); a FIFO, device or directory as `file.type:<path>` with hash
"unreadable". authorized_keys are read below each user's home folder without following any link
(~/.ssh -> /etc is refused) and only when the file has a single hard link; a home folder that is itself
a symlink not owned by root is skipped. sshd settings pass the command-line redaction (e.g. a token in
AuthorizedKeysCommand). The hardening checks' inputs (parsed values, counts, modes; never contents)
come from collectors/probes/hardening_inputs.py.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from collectors.probes.base import Emit, Probe, diff_maps
from collectors.probes.file_sigs import Listings, Sig, racy, sig_of, stat_sig
from collectors.probes.hardening_inputs import HardeningInputs
from collectors.redact import Redactor
from collectors.safe import absent, clean, read_below, read_bounded, read_proc_file, to_text
from contract import ssh_keys
from contract.events import Kind

MAX_FILE = 16 * 1024 * 1024
UNREADABLE = "unreadable"

WATCHED_FILES = ("/etc/ssh/sshd_config", "/etc/sudoers", "/etc/passwd", "/etc/group", "/etc/shadow",
                 "/etc/crontab", "/etc/hosts", "/etc/ld.so.preload", "/etc/pam.d/sshd",
                 "/etc/pam.d/common-auth", "/etc/pam.d/su")
WATCHED_DIRS = ("/etc/ssh/sshd_config.d", "/etc/sudoers.d", "/etc/cron.d", "/etc/cron.hourly",
                "/etc/cron.daily", "/var/spool/cron/crontabs", "/var/spool/cron", "/etc/systemd/system")
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.accept_redirects",
           "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.rp_filter", "net.ipv4.tcp_syncookies",
           "kernel.randomize_va_space", "kernel.kptr_restrict", "kernel.dmesg_restrict",
           "kernel.yama.ptrace_scope", "kernel.modules_disabled", "kernel.unprivileged_bpf_disabled",
           "fs.suid_dumpable", "fs.protected_symlinks", "fs.protected_hardlinks", "kernel.core_pattern",
           # the hardening checks' (detectors/checks/network.yaml, kernel.yaml)
           "net.ipv4.conf.default.send_redirects", "net.ipv4.conf.default.accept_redirects",
           "net.ipv4.conf.all.secure_redirects", "net.ipv4.conf.default.secure_redirects",
           "net.ipv4.conf.all.accept_source_route", "net.ipv4.conf.default.accept_source_route",
           "net.ipv4.conf.all.log_martians", "net.ipv4.conf.default.log_martians",
           "net.ipv4.conf.default.rp_filter", "net.ipv4.icmp_echo_ignore_broadcasts",
           "net.ipv4.icmp_ignore_bogus_error_responses", "net.ipv6.conf.all.accept_ra",
           "net.ipv6.conf.default.accept_ra", "net.ipv6.conf.all.accept_redirects",
           "net.ipv6.conf.default.accept_redirects", "net.ipv6.conf.all.accept_source_route",
           "net.ipv6.conf.default.accept_source_route", "kernel.perf_event_paranoid", "kernel.kexec_load_disabled",
           "kernel.sysrq", "net.core.bpf_jit_harden", "dev.tty.ldisc_autoload", "fs.protected_fifos",
           "fs.protected_regular")

Signature = tuple[Sig | None, ...]
KEY_FILES = ("authorized_keys", "authorized_keys2")


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def key_file_sigs(home: str, shown: str) -> tuple[Sig | None, Sig | None]:
    """The signatures of <home>/.ssh/authorized_keys and authorized_keys2, never through a link below the
    home folder (as collectors.safe.lstat_below: `home` itself is trusted), with `.ssh` opened once for
    both; `shown` is the home as /etc/passwd gives it (the signatures' paths)."""
    try:
        home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        ssh_fd = os.open(".ssh", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=home_fd)
    except OSError:
        return None, None
    finally:
        os.close(home_fd)
    try:
        sigs: list[Sig | None] = []
        for name in KEY_FILES:
            try:
                st = os.stat(name, dir_fd=ssh_fd, follow_symlinks=False)
            except OSError:
                sigs.append(None)
                continue
            sigs.append(sig_of(f"{shown}/.ssh/{name}", st))
        return sigs[0], sigs[1]
    finally:
        os.close(ssh_fd)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "char-device"), (stat.S_ISBLK, "block-device")):
        if test(mode):
            return name
    return "other"


def parse_sshd(text: str, include: Callable[[str], list[str]], redactor: Redactor | None = None) -> dict[str, str]:
    """sshd's first-value-wins keywords (lower-cased) until the first Match block."""
    out: dict[str, str] = {}
    redact = redactor or Redactor()

    def walk(body: str, depth: int) -> bool:
        for line in body.splitlines():
            parts = line.strip().split(None, 1)
            if not parts or parts[0].startswith("#"):
                continue
            key = parts[0].lower()
            value = parts[1].strip() if len(parts) > 1 else ""
            if key == "match":
                return False
            if key == "include" and depth < 4:
                for chunk in include(value):
                    if not walk(chunk, depth + 1):
                        return False
                continue
            out.setdefault(f"sshd.{key}", clean(redact.text(value), 512)[0])
        return True

    walk(text, 0)
    return out


def parse_passwd(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[0] and not f[0].startswith("#"):
            out[f"user.{clean(f[0], 64)[0]}"] = f"{f[2]}:{f[3]}:{f[5]}:{f[6]}"
    return out


def parse_group(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[0] and not f[0].startswith("#"):
            out[f"group.{clean(f[0], 64)[0]}"] = f"{f[2]}:{f[3]}"
    return out


class ConfigProbe(Probe):
    name = "config"

    def __init__(self, interval: float = 5.0, inventory_interval: float | None = 3600.0,
                 root: Path = Path("/"), proc: Path = Path("/proc"), redactor: Redactor | None = None) -> None:
        super().__init__(interval, inventory_interval)
        self.root = root
        self.proc = proc
        self.redactor = redactor or Redactor()
        self.values: dict[str, str] = {}
        self._sigs: dict[str, Signature] = {}
        self._parts: dict[str, dict[str, str]] = {}
        self._racy: set[str] = set()
        """Sources whose last signature was racy (file_sigs): read again at the next run."""
        self._started = False
        self._host_paths: dict[str, str] = {}
        self.listings = Listings()
        self._passwd: tuple[Sig, list[tuple[str, str]]] | None = None
        """/etc/passwd's signature and the (user, home) pairs parsed from it."""
        self._sysctl_paths = [(f"sysctl.{name}", f"{proc}/sys/{name.replace('.', '/')}") for name in SYSCTLS]
        self._last_read: tuple[dict[str, str], dict[str, str]] | None = None
        """The sysctls and the hardening inputs read every run, as last read."""
        self.rereads = 0
        """Sources read again because their signature changed or was racy (for tests and benchmarks)."""
        self.hardening = HardeningInputs(self.host, proc, self._host_listing)

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def host_path(self, path: str) -> str:
        """`host(path)` as a string, made once per path (the signatures are taken from strings)."""
        got = self._host_paths.get(path)
        if got is None:
            got = self._host_paths[path] = str(self.host(path))
        return got

    def _host_listing(self, host_dir: Path | str) -> list[str]:
        return self.listings.names(os.fspath(host_dir))

    def _listing(self, directory: str) -> list[str]:
        names = self.listings.names(self.host_path(directory))
        return sorted(f"{directory}/{n}" for n in names if not n.startswith("."))

    def _homes(self) -> list[tuple[str, str]]:
        """(user, home) from /etc/passwd, without homes that are links a user could have made. The parse is
        kept while /etc/passwd's signature is unchanged (and not racy); the homes are looked at every time."""
        passwd = self.host_path("/etc/passwd")
        sig = stat_sig(passwd)
        if sig is not None and self._passwd is not None and self._passwd[0] == sig:
            candidates = self._passwd[1]
        else:
            text = to_text((read_bounded(passwd, MAX_FILE) or (b"", False))[0])[0]
            candidates = []
            for line in text.splitlines():
                f = line.split(":")
                if len(f) >= 7 and f[5].startswith("/") and ".." not in f[5].split("/"):
                    candidates.append((clean(f[0], 64)[0], f[5]))
            self._passwd = None if sig is None or racy(sig, time.time_ns()) else (sig, candidates)
        homes = []
        for user, home in candidates:
            try:
                st = os.lstat(self.host_path(home))
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
                continue
            homes.append((user, home))
        return homes

    def sources(self) -> dict[str, tuple[list[str], Callable[[list[str]], dict[str, str]]]]:
        """name -> (host paths to stat, reader of those paths)."""
        src: dict[str, tuple[list[str], Callable[[list[str]], dict[str, str]]]] = {}
        for path in WATCHED_FILES:
            src[path] = ([path], self._read_file)
        src["/etc/ssh/sshd_config"] = (["/etc/ssh/sshd_config", *self._listing("/etc/ssh/sshd_config.d")],
                                       self._read_file)  # Include'd files change sshd.* keys too
        for directory in WATCHED_DIRS:
            files = [p for p in self._listing(directory) if not _is_dir(self.host_path(p))]
            src[directory] = ([directory, *files], self._read_dir)
        sudoers = ["/etc/sudoers", "/etc/sudoers.d", *self._listing("/etc/sudoers.d")]
        src["sudoers"] = (sudoers, self._read_sudoers)
        keys = [f"{home}/.ssh/{n}" for _, home in self._homes() for n in KEY_FILES]
        src["authorized_keys"] = (["/etc/passwd", *keys], self._read_authorized_keys)
        src.update(self.hardening.sources())  # parsed values for the hardening checks
        return src

    def _signature(self, name: str, paths: list[str]) -> Signature:
        if name != "authorized_keys":
            return tuple(stat_sig(self.host_path(p)) for p in paths)
        sig: list[Sig | None] = [stat_sig(self.host_path(paths[0]))]
        for i in range(1, len(paths), len(KEY_FILES)):  # under a home: never stat through a link the user made
            home = paths[i].partition("/.ssh/")[0]
            sig += key_file_sigs(self.host_path(home), home)
        return tuple(sig)

    def _read_file(self, paths: list[str]) -> dict[str, str]:
        path = paths[0]
        host = self.host(path)
        st = absent(lambda: os.lstat(host))
        if st is None:
            return {}
        out = {f"file.owner:{path}": f"{st.st_uid}:{st.st_gid}"}
        if stat.S_ISLNK(st.st_mode):  # reported as a link, never read through
            # no mode: Linux never uses a link's own mode, which lstat always gives as 0777 (a unit enabled
            # as a link in /etc/systemd/system was reported as a world-writable sensitive file)
            target = absent(lambda: os.readlink(host))
            out[f"file.link:{path}"] = clean(target, 1024)[0] if target is not None else UNREADABLE
            return out
        out[f"file.mode:{path}"] = f"{st.st_mode & 0o7777:04o}"
        if not stat.S_ISREG(st.st_mode):
            out[f"file.type:{path}"] = _file_type(st.st_mode)
            out[f"file.sha256:{path}"] = UNREADABLE
            return out
        got = read_bounded(host, MAX_FILE)
        if got is None:
            out[f"file.sha256:{path}"] = UNREADABLE
            return out
        out[f"file.sha256:{path}"] = hashlib.sha256(got[0]).hexdigest()
        text = to_text(got[0])[0]
        if path == "/etc/ssh/sshd_config":
            out.update(parse_sshd(text, self._sshd_include, self.redactor))
        elif path == "/etc/passwd":
            out.update(parse_passwd(text))
        elif path == "/etc/group":
            out.update(parse_group(text))
        return out

    def _sshd_include(self, pattern: str) -> list[str]:
        chunks = []
        for pat in pattern.split():
            full = pat if pat.startswith("/") else f"/etc/ssh/{pat}"
            for match in sorted(self.root.glob(full.lstrip("/"))):
                text = read_bounded(match, MAX_FILE)
                if text is not None:
                    chunks.append(to_text(text[0])[0])
        return chunks

    def _read_dir(self, paths: list[str]) -> dict[str, str]:
        out = {}
        for path in paths[1:]:
            out.update(self._read_file([path]))
        return out

    def _read_sudoers(self, paths: list[str]) -> dict[str, str]:
        h = hashlib.sha256()
        found = False
        for path in [paths[0], *paths[2:]]:
            got = read_bounded(self.host(path), MAX_FILE)
            if got is not None:
                found = True
                h.update(path.encode() + b"\0" + got[0] + b"\0")
        return {"sudoers.sha256": h.hexdigest()} if found else {}

    def _read_authorized_keys(self, paths: list[str]) -> dict[str, str]:
        """Per user `authorized_keys:<user>` = the SHA-256 of their key files (any change, options
        included), and per key `authorized_keys.key:<user>:<fingerprint>` = "<type> <comment>"
        (contract.ssh_keys): the key's type, fingerprint and comment, never the file's contents. A comment is
        printable, short and passes the command-line redaction (it is free text)."""
        out = {}
        for user, home in self._homes():
            h = hashlib.sha256()
            found = False
            keys: dict[str, str] = {}
            for name in ("authorized_keys", "authorized_keys2"):
                got = read_below(self.host(home), f".ssh/{name}", MAX_FILE)
                if got is not None:
                    found = True
                    h.update(got[0])
                    for key in ssh_keys.parse_file(got[0]):
                        if len(keys) < ssh_keys.MAX_KEYS_PER_USER:
                            redacted = replace(key, comment=ssh_keys.safe_comment(self.redactor.element(key.comment)))
                            keys.setdefault(*ssh_keys.entry(user, redacted))
            if found:
                out[f"authorized_keys:{user}"] = h.hexdigest()
                out.update(keys)
        return out

    def sysctls(self) -> dict[str, str]:
        out = {}
        for key, path in self._sysctl_paths:
            got = read_proc_file(path, 4096)
            if got is not None:
                out[key] = " ".join(to_text(got)[0].split())
        return out

    def current(self) -> dict[str, str]:
        """Every value now. When no source was read again and the per-run reads are as before, this is
        the last result itself (the same object), so `collect` knows there is nothing to diff."""
        changed = not self._started
        now_ns = time.time_ns()
        racy_now: set[str] = set()
        for name, (paths, reader) in self.sources().items():
            sig = self._signature(name, paths)
            if self._sigs.get(name) != sig or name not in self._parts or name in self._racy:
                part = reader(paths)
                changed = changed or part != self._parts.get(name)
                self._parts[name] = part
                self._sigs[name] = sig
                self.rereads += 1
            if any(racy(s, now_ns) for s in sig):
                racy_now.add(name)
        self._racy = racy_now
        per_run = (self.sysctls(), self.hardening.per_cycle())
        if not changed and per_run == self._last_read and self.values:
            return self.values
        self._last_read = per_run
        values: dict[str, str] = {}
        for part in self._parts.values():
            values.update(part)
        values.update(per_run[0])
        values.update(per_run[1])
        return values

    def collect(self, full: bool) -> list[Emit]:
        now = self.current()
        out = diff_maps(Kind.CONFIG_CHANGE, self.values, now) if self._started and now is not self.values else []
        self.values, self._started = now, True
        if full:
            out.append((Kind.CONFIG_INVENTORY, {"items": dict(sorted(now.items()))}))
        return out
