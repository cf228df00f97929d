"""Security-relevant configuration: file hashes and modes, parsed sshd/passwd/group settings,
sudoers, crontabs, authorized_keys and kernel sysctls.

Change detection is cheap: each source is re-read only when the stat signature (inode, size, mtime,
mode, owner) of one of its files, or the listing of its directory, changed. Sysctls are tiny /proc
reads and are read every cycle. A change is reported as config.change {key, before, after}.

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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from collectors.probes.base import Emit, Probe, diff_maps
from collectors.probes.hardening_inputs import HardeningInputs
from collectors.redact import Redactor
from collectors.safe import absent, clean, lstat_below, read_below, read_bounded, to_text
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

Signature = tuple[tuple[str, int, int, int, int, int] | None, ...]


def stat_sig(path: Path) -> tuple[str, int, int, int, int, int] | None:
    st = absent(lambda: os.lstat(path))
    if st is None:
        return None
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid)


def _is_dir(path: Path) -> bool:
    st = absent(lambda: os.lstat(path))
    return st is not None and stat.S_ISDIR(st.st_mode)


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
        self._started = False
        self.hardening = HardeningInputs(self.host, proc)

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _listing(self, directory: str) -> list[str]:
        names = absent(lambda: os.listdir(self.host(directory))) or []
        return sorted(f"{directory}/{n}" for n in names if not n.startswith("."))

    def _homes(self) -> list[tuple[str, str]]:
        """(user, home) from /etc/passwd, without homes that are links a user could have made."""
        text = to_text((read_bounded(self.host("/etc/passwd"), MAX_FILE) or (b"", False))[0])[0]
        homes = []
        for line in text.splitlines():
            f = line.split(":")
            if len(f) >= 7 and f[5].startswith("/") and ".." not in f[5].split("/"):
                st = absent(lambda h=f[5]: os.lstat(self.host(h)))  # type: ignore[misc]
                if st is not None and stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
                    continue
                homes.append((clean(f[0], 64)[0], f[5]))
        return homes

    def sources(self) -> dict[str, tuple[list[str], Callable[[list[str]], dict[str, str]]]]:
        """name -> (host paths to stat, reader of those paths)."""
        src: dict[str, tuple[list[str], Callable[[list[str]], dict[str, str]]]] = {}
        for path in WATCHED_FILES:
            src[path] = ([path], self._read_file)
        src["/etc/ssh/sshd_config"] = (["/etc/ssh/sshd_config", *self._listing("/etc/ssh/sshd_config.d")],
                                       self._read_file)  # Include'd files change sshd.* keys too
        for directory in WATCHED_DIRS:
            files = [p for p in self._listing(directory) if not _is_dir(self.host(p))]
            src[directory] = ([directory, *files], self._read_dir)
        sudoers = ["/etc/sudoers", "/etc/sudoers.d", *self._listing("/etc/sudoers.d")]
        src["sudoers"] = (sudoers, self._read_sudoers)
        names = ("authorized_keys", "authorized_keys2")
        keys = [f"{home}/.ssh/{n}" for _, home in self._homes() for n in names]
        src["authorized_keys"] = (["/etc/passwd", *keys], self._read_authorized_keys)
        src.update(self.hardening.sources())  # parsed values for the hardening checks
        return src

    def _signature(self, name: str, paths: list[str]) -> Signature:
        if name != "authorized_keys":
            return tuple(stat_sig(self.host(p)) for p in paths)
        sig: list[tuple[str, int, int, int, int, int] | None] = [stat_sig(self.host(paths[0]))]
        for path in paths[1:]:  # under a home: never stat through a link the user made
            home, _, rel = path.partition("/.ssh/")
            st = lstat_below(self.host(home), f".ssh/{rel}")
            sig.append(None if st is None else (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid))
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
        for name in SYSCTLS:
            got = read_bounded(self.proc / "sys" / name.replace(".", "/"), 4096)
            if got is not None:
                out[f"sysctl.{name}"] = " ".join(to_text(got[0])[0].split())
        return out

    def current(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for name, (paths, reader) in self.sources().items():
            sig = self._signature(name, paths)
            if self._sigs.get(name) != sig or name not in self._parts:
                self._parts[name] = reader(paths)
                self._sigs[name] = sig
            values.update(self._parts[name])
        values.update(self.sysctls())
        values.update(self.hardening.per_cycle())
        return values

    def collect(self, full: bool) -> list[Emit]:
        now = self.current()
        out = diff_maps(Kind.CONFIG_CHANGE, self.values, now) if self._started else []
        self.values, self._started = now, True
        if full:
            out.append((Kind.CONFIG_INVENTORY, {"items": dict(sorted(now.items()))}))
        return out
