"""The values the hardening checks (detectors/checks/*.yaml) need, collected by the config probe.

Only parsed values, counts, modes and owners leave the host, never file contents:

    hardening.inputs                  "1": this agent collects the keys below (checks wait for it)
    os.id, os.version_id, os.id_like  /usr/lib/os-release or /etc/os-release
    login_defs.<key>                  PASS_MAX_DAYS, PASS_MIN_DAYS, PASS_WARN_AGE, ENCRYPT_METHOD, UMASK
    pwquality.<key>                   /etc/security/pwquality.conf and pwquality.conf.d/*.conf
    faillock.<key>                    /etc/security/faillock.conf (deny, unlock_time, even_deny_root ...)
    pam.module:<file>:<module>        "yes" for each module a PAM file uses (comments skipped)
    pam.nullok:<file>                 "yes" when pam_unix is given nullok
    pam.remember:<file>               remember=N of pam_pwhistory or pam_unix
    pam.wheel:<file>                  "use_uid" / "yes" for an active pam_wheel line (/etc/pam.d/su)
    mount.options:<mountpoint>        the hardening flags it is mounted with (nodev, noexec, nosuid, ro)
                                      or "none", from /proc/1/mounts (else /proc/self/mounts)
    file.mode:<path>, file.owner:<path>   for sensitive files and folders, from lstat only
    service.<unit>                    enabled | masked | disabled (unit installed but not wanted)
    auditd.<key>                      /etc/audit/auditd.conf values that the checks name
    audit.watch:<path>                the -p permissions of a -w rule; audit.syscall:<name> "yes";
    audit.immutable                   "yes" when -e 2 is set; audit.rules: how many rules
    boot.audit, boot.audit_backlog_limit   from /proc/cmdline
    sudoers.use_pty, sudoers.logfile  "yes"/"no"; sudoers.nopasswd, sudoers.noauthenticate: counts;
    sudoers.timestamp_timeout         when set
    shadow.empty_passwords            how many accounts have an empty password field
    passwd.uid0                       the accounts with uid 0 (names); passwd.unshadowed: count
    journald.<key>                    Storage, Compress, ForwardToSyslog
    selinux.mode, selinux.type        /etc/selinux/config
    limits.core_hard                  the hard core limit for everyone ("*") in limits.conf(.d)
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from collectors.safe import absent, clean, read_bounded, to_text

MAX_FILE = 1024 * 1024
INPUTS_VERSION = "1"

LOGIN_DEFS = ("PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE", "ENCRYPT_METHOD", "UMASK")
PWQUALITY = ("minlen", "minclass", "dcredit", "ucredit", "lcredit", "ocredit", "maxrepeat", "maxsequence",
             "dictcheck", "difok", "enforce_for_root")
FAILLOCK = ("deny", "unlock_time", "fail_interval", "even_deny_root", "root_unlock_time")
PAM_FILES = ("/etc/pam.d/common-auth", "/etc/pam.d/common-password", "/etc/pam.d/common-account",
             "/etc/pam.d/system-auth", "/etc/pam.d/password-auth", "/etc/pam.d/su")
MOUNTS = ("/tmp", "/dev/shm", "/var/tmp", "/home", "/var", "/var/log", "/var/log/audit")
MOUNT_FLAGS = ("nodev", "noexec", "nosuid", "ro")
STAT_PATHS = ("/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
              "/etc/security/opasswd", "/etc/issue", "/etc/issue.net", "/etc/motd", "/etc/crontab",
              "/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly",
              "/etc/cron.allow", "/etc/cron.deny", "/etc/at.allow", "/etc/at.deny", "/etc/ssh/sshd_config",
              "/etc/ssh/sshd_config.d", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/etc/sudoers",
              "/etc/audit/auditd.conf", "/var/log/audit", "/etc/security/opasswd")
STAT_GLOBS = ("/etc/ssh/ssh_host_*_key", "/etc/ssh/ssh_host_*_key.pub")
UNITS = ("auditd", "avahi-daemon", "cups", "rpcbind", "nfs-server", "snmpd", "xinetd", "telnet.socket",
         "tftp.socket", "rsh.socket", "rlogin.socket", "vsftpd", "slapd", "smb", "smbd", "squid", "ypserv",
         "dovecot", "named", "bind9", "isc-dhcp-server", "dhcpd", "rsync", "chronyd", "chrony",
         "systemd-timesyncd", "rsyslog", "systemd-journald", "apparmor", "nftables", "ufw", "firewalld",
         "ssh", "sshd", "cron", "crond", "autofs", "kdump", "debug-shell")
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
WANTS = ("multi-user.target.wants", "sockets.target.wants", "sysinit.target.wants", "timers.target.wants")
AUDITD = ("max_log_file", "max_log_file_action", "space_left_action", "admin_space_left_action",
          "disk_full_action", "disk_error_action", "num_logs")
JOURNALD = ("storage", "compress", "forwardtosyslog")

Reader = Callable[[list[str]], dict[str, str]]


def read_host_text(path: Path) -> str | None:
    got = read_bounded(path, MAX_FILE)
    return None if got is None else to_text(got[0])[0]


def _value(v: str) -> str:
    return clean(v, 128)[0]


# ---- parsers: text -> the few values the checks need ------------------------------------------------
def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() in ("ID", "VERSION_ID", "ID_LIKE"):
            out[f"os.{k.strip().lower()}"] = _value(v.strip().strip("\"'"))
    return out


def parse_login_defs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in LOGIN_DEFS:
            out[f"login_defs.{parts[0].lower()}"] = _value(parts[1])
    return out


def parse_key_values(texts: Iterable[str], keys: tuple[str, ...], prefix: str) -> dict[str, str]:
    """`key = value` files (pwquality, faillock, auditd): later files override; a bare key is a flag."""
    out: dict[str, str] = {}
    for text in texts:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            k, sep, v = line.partition("=")
            k = k.strip().lower()
            if k in keys:
                out[f"{prefix}.{k}"] = _value(v.strip()) if sep else "yes"
    return out


def parse_ini(texts: Iterable[str], keys: tuple[str, ...], prefix: str) -> dict[str, str]:
    """systemd-style Key=Value files (journald.conf and its drop-ins); later files override."""
    out: dict[str, str] = {}
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            k, sep, v = line.partition("=")
            if sep and k.strip().lower() in keys:
                out[f"{prefix}.{k.strip().lower()}"] = _value(v.strip().lower())
    return out


_PAM_LINE = re.compile(r"^-?(auth|account|password|session)\s+(\[[^\]]*\]|\S+)\s+(\S+)(.*)$")


def parse_pam(path: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _PAM_LINE.match(line.strip())
        if not m:
            continue
        module = os.path.basename(m.group(3)).removesuffix(".so")
        args = m.group(4).split()
        out[f"pam.module:{path}:{_value(module)}"] = "yes"
        if module == "pam_unix":
            if "nullok" in args:
                out[f"pam.nullok:{path}"] = "yes"
            else:
                out.setdefault(f"pam.nullok:{path}", "no")
        if module in ("pam_pwhistory", "pam_unix"):
            for a in args:
                if a.startswith("remember="):
                    out[f"pam.remember:{path}"] = _value(a.partition("=")[2])
        if module == "pam_wheel" and m.group(1) == "auth":
            out[f"pam.wheel:{path}"] = "use_uid" if "use_uid" in args else "yes"
    return out


def parse_mounts(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4:
            mountpoint = f[1].replace("\\040", " ")
            if mountpoint in MOUNTS:  # the last mount of a point is the one in effect
                flags = sorted(set(f[3].split(",")) & set(MOUNT_FLAGS))
                out[f"mount.options:{mountpoint}"] = ",".join(flags) or "none"
    return out


def parse_audit_rules(texts: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    rules = 0
    for text in texts:
        for line in text.splitlines():
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            if tokens[:2] == ["-e", "2"]:
                out["audit.immutable"] = "yes"
                continue
            if tokens[0] not in ("-w", "-a", "-A"):
                continue
            rules += 1
            for i, tok in enumerate(tokens[:-1]):
                nxt = tokens[i + 1]
                if tok == "-w":
                    perms = tokens[tokens.index("-p") + 1] if "-p" in tokens[:-1] else "rwxa"
                    out[f"audit.watch:{_value(nxt)}"] = _value(perms)
                elif tok == "-S":
                    for name in nxt.split(","):
                        if name:
                            out[f"audit.syscall:{_value(name)}"] = "yes"
                elif tok == "-F" and nxt.startswith("path="):
                    out[f"audit.watch:{_value(nxt[5:])}"] = "x"
    out.setdefault("audit.immutable", "no")
    out["audit.rules"] = str(rules)
    return out


def parse_cmdline(text: str) -> dict[str, str]:
    out = {}
    for tok in text.split():
        k, sep, v = tok.partition("=")
        if sep and k in ("audit", "audit_backlog_limit"):
            out[f"boot.{k}"] = _value(v)
    return out


def parse_sudoers(texts: Iterable[str]) -> dict[str, str]:
    use_pty, logfile, nopasswd, noauth, timeout = False, False, 0, 0, None
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or (line.startswith("#") and not line.startswith("#include")):
                continue
            if line.startswith("Defaults"):
                options = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
                for opt in (o.strip() for o in options.split(",")):
                    name, _, value = opt.partition("=")
                    name = name.strip()
                    if name == "use_pty":
                        use_pty = True
                    elif name == "!use_pty":
                        use_pty = False
                    elif name == "logfile" and value.strip():
                        logfile = True
                    elif name == "!authenticate":
                        noauth += 1
                    elif name == "timestamp_timeout":
                        timeout = _value(value.strip())
                continue
            nopasswd += line.count("NOPASSWD:")
    out = {"sudoers.use_pty": "yes" if use_pty else "no", "sudoers.logfile": "yes" if logfile else "no",
           "sudoers.nopasswd": str(nopasswd), "sudoers.noauthenticate": str(noauth)}
    if timeout is not None:
        out["sudoers.timestamp_timeout"] = timeout
    return out


def parse_shadow(text: str) -> dict[str, str]:
    empty = sum(1 for line in text.splitlines() if len(f := line.split(":")) >= 2 and f[0] and f[1] == "")
    return {"shadow.empty_passwords": str(empty)}


def parse_passwd_summary(text: str) -> dict[str, str]:
    uid0, unshadowed = [], 0
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[0] and not f[0].startswith("#"):
            if f[2] == "0":
                uid0.append(clean(f[0], 32)[0])
            if f[1] != "x":
                unshadowed += 1
    return {"passwd.uid0": ",".join(sorted(uid0)) or "none", "passwd.unshadowed": str(unshadowed)}


def parse_selinux(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.strip().partition("=")
        if sep and k in ("SELINUX", "SELINUXTYPE"):
            out["selinux.mode" if k == "SELINUX" else "selinux.type"] = _value(v.strip().lower())
    return out


def parse_limits(texts: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in texts:
        for line in text.splitlines():
            f = line.split("#", 1)[0].split()
            if len(f) == 4 and f[0] == "*" and f[1] in ("hard", "-") and f[2] == "core":
                out["limits.core_hard"] = _value(f[3])
    return out


# ---- reading them from a host root -----------------------------------------------------------------
class HardeningInputs:
    """Sources for the config probe: name -> (paths whose stat signature triggers a re-read, reader);
    `per_cycle()` reads the tiny /proc files every cycle."""

    def __init__(self, host: Callable[[str], Path], proc: Path,
                 listdir: Callable[[Path], list[str]] | None = None) -> None:
        self.host = host
        self.proc = proc
        self.listdir = listdir or (lambda d: absent(lambda: os.listdir(d)) or [])
        """Entry names of a host directory ([] if absent); the config probe's keeps unchanged listings."""
        self._mounts: tuple[str, dict[str, str]] | None = None
        """The mount table as last read and its parse (parsed again only when its text changed)."""

    def _text(self, path: str) -> str | None:
        return read_host_text(self.host(path))

    def _texts(self, paths: list[str]) -> list[str]:
        return [t for p in paths if (t := self._text(p)) is not None]

    def _listing(self, directory: str, suffix: str = "") -> list[str]:
        names = self.listdir(self.host(directory))
        return sorted(f"{directory}/{n}" for n in names if not n.startswith(".") and n.endswith(suffix))

    def _glob(self, pattern: str) -> list[str]:
        directory, _, name = pattern.rpartition("/")
        rx = re.compile("^" + re.escape(name).replace(r"\*", "[^/]*") + "$")
        return [p for p in self._listing(directory) if rx.match(p.rpartition("/")[2])]

    def sources(self) -> dict[str, tuple[list[str], Reader]]:
        pwq = ["/etc/security/pwquality.conf", *self._listing("/etc/security/pwquality.conf.d", ".conf")]
        journald = ["/etc/systemd/journald.conf", *self._listing("/etc/systemd/journald.conf.d", ".conf")]
        limits = ["/etc/security/limits.conf", *self._listing("/etc/security/limits.d", ".conf")]
        audit = ["/etc/audit/audit.rules", *self._listing("/etc/audit/rules.d", ".rules")]
        stat_paths = [*STAT_PATHS, *(p for g in STAT_GLOBS for p in self._glob(g))]
        unit_paths = [*UNIT_DIRS, *(f"/etc/systemd/system/{w}" for w in WANTS)]
        return {
            "hardening:os": (["/usr/lib/os-release", "/etc/os-release"], self._os_release),
            "hardening:login.defs": (["/etc/login.defs"], lambda p: parse_login_defs(self._text(p[0]) or "")),
            "hardening:pwquality": (["/etc/security/pwquality.conf.d", *pwq],
                                    lambda p: parse_key_values(self._texts(p[1:]), PWQUALITY, "pwquality")),
            "hardening:faillock": (["/etc/security/faillock.conf"],
                                   lambda p: parse_key_values(self._texts(p), FAILLOCK, "faillock")),
            "hardening:pam": (list(PAM_FILES), self._pam),
            "hardening:stat": (stat_paths, self._stat),
            "hardening:services": (unit_paths, self._services),
            "hardening:auditd": (["/etc/audit/auditd.conf"],
                                 lambda p: parse_key_values(self._texts(p), AUDITD, "auditd")),
            "hardening:audit.rules": (["/etc/audit/rules.d", *audit], lambda p: parse_audit_rules(self._texts(p[1:]))),
            "hardening:sudoers": (["/etc/sudoers", "/etc/sudoers.d", *self._listing("/etc/sudoers.d")],
                                  lambda p: parse_sudoers(self._texts([p[0], *p[2:]]))),
            "hardening:accounts": (["/etc/passwd", "/etc/shadow"], self._accounts),
            "hardening:journald": (["/etc/systemd/journald.conf.d", *journald],
                                   lambda p: parse_ini(self._texts(p[1:]), JOURNALD, "journald")),
            "hardening:selinux": (["/etc/selinux/config"], lambda p: parse_selinux(self._text(p[0]) or "")),
            "hardening:limits": (["/etc/security/limits.d", *limits], lambda p: parse_limits(self._texts(p[1:]))),
        }

    def per_cycle(self) -> dict[str, str]:
        out = {"hardening.inputs": INPUTS_VERSION}
        mounts = read_host_text(self.proc / "1" / "mounts") or read_host_text(self.proc / "self" / "mounts")
        if mounts is not None:
            if self._mounts is None or self._mounts[0] != mounts:
                self._mounts = (mounts, parse_mounts(mounts))
            out.update(self._mounts[1])
        cmdline = read_host_text(self.proc / "cmdline")
        if cmdline is not None:
            out.update(parse_cmdline(cmdline))
        return out

    # ---- readers ----------------------------------------------------------------------------------
    def _os_release(self, paths: list[str]) -> dict[str, str]:
        for p in paths:  # /etc/os-release is usually a link to /usr/lib/os-release: never followed
            text = self._text(p)
            if text is not None:
                return parse_os_release(text)
        return {}

    def _pam(self, paths: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in paths:
            text = self._text(p)
            if text is not None:
                out.update(parse_pam(p, text))
        return out

    def _stat(self, paths: list[str]) -> dict[str, str]:
        out = {}
        for p in paths:
            st = absent(lambda p=p: os.lstat(self.host(p)))  # type: ignore[misc]
            if st is not None and not stat.S_ISLNK(st.st_mode):
                out[f"file.mode:{p}"] = f"{st.st_mode & 0o7777:04o}"
                out[f"file.owner:{p}"] = f"{st.st_uid}:{st.st_gid}"
        return out

    def _unit_file(self, unit: str) -> str | None:
        name = unit if "." in unit else f"{unit}.service"
        return name if any(self._exists(f"{d}/{name}") for d in UNIT_DIRS) else None

    def _services(self, paths: list[str]) -> dict[str, str]:
        out = {}
        for unit in UNITS:
            name = self._unit_file(unit)
            if name is None:
                continue
            mask = self.host(f"/etc/systemd/system/{name}")
            target = absent(lambda mask=mask: os.readlink(mask))  # type: ignore[misc]
            if target == "/dev/null":
                out[f"service.{unit}"] = "masked"
                continue
            wanted = any(self._exists(f"/etc/systemd/system/{w}/{name}") for w in WANTS)
            out[f"service.{unit}"] = "enabled" if wanted else "disabled"
        return out

    def _exists(self, path: str) -> bool:
        host = self.host(path)
        return absent(lambda: os.lstat(host)) is not None

    def _accounts(self, paths: list[str]) -> dict[str, str]:
        out = {}
        passwd = self._text("/etc/passwd")
        if passwd is not None:
            out.update(parse_passwd_summary(passwd))
        shadow = self._text("/etc/shadow")
        if shadow is not None:
            out.update(parse_shadow(shadow))
        return out
