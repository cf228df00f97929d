"""Per-workload figures from cgroup v2: what a container or sidecar really uses.

In a container (or a PID namespace) psutil's cpu_percent, load and memory are the whole machine's. The
cgroup v2 files are the workload's own:

    cpu.stat      usage_usec            -> cpu_pct (delta over wall time, % of one core)
    cpu.max       "<quota> <period>"    -> cpu_quota_pct (% of the quota; absent when "max")
    memory.current, memory.max          -> mem_bytes, mem_max_bytes (absent when "max")
    io.stat       rbytes= / wbytes=     -> io_read_bytes, io_write_bytes (delta per interval)
    pids.current                        -> pids

A file the kernel does not offer for this cgroup (controller not enabled) is simply left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collectors.safe import read_text

DEFAULT_MOUNT = Path("/sys/fs/cgroup")


def cgroup2_mount(proc: Path = Path("/proc")) -> Path | None:
    """Where cgroup v2 is mounted (from /proc/self/mountinfo), or None without cgroup v2."""
    text = read_text(proc / "self" / "mountinfo") or ""
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5:
                return Path(fields[4].replace("\\040", " "))
    return None


def own_cgroup(proc: Path = Path("/proc")) -> str | None:
    """This process's cgroup v2 path ("0::<path>" in /proc/self/cgroup), or None."""
    text = read_text(proc / "self" / "cgroup") or ""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def _int_file(path: Path) -> int | None:
    """An integer file's value; None if absent, unreadable or "max"."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class CgroupSample:
    cpu_usec: int | None
    quota_cores: float | None
    """cpu.max quota / period, in cores; None when unlimited or unknown."""
    mem_bytes: int | None
    mem_max_bytes: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    pids: int | None


def read_cgroup(directory: Path) -> CgroupSample:
    cpu_usec: int | None = None
    for line in (read_text(directory / "cpu.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "usage_usec" and value.strip().isdigit():
            cpu_usec = int(value)
    quota: float | None = None
    words = (read_text(directory / "cpu.max") or "").split()
    if len(words) == 2 and words[0].isdigit() and words[1].isdigit() and int(words[1]) > 0:
        quota = int(words[0]) / int(words[1])
    io_text = read_text(directory / "io.stat")
    rbytes = wbytes = None
    if io_text is not None:
        rbytes = wbytes = 0
        for line in io_text.splitlines():  # one line per device: "8:0 rbytes=1 wbytes=2 rios=..."
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if value.isdigit():
                    if key == "rbytes":
                        rbytes += int(value)
                    elif key == "wbytes":
                        wbytes += int(value)
    return CgroupSample(cpu_usec, quota, _int_file(directory / "memory.current"),
                        _int_file(directory / "memory.max"), rbytes, wbytes, _int_file(directory / "pids.current"))


class CgroupMeter:
    """One cgroup's metrics per interval (deltas between two calls of `values`)."""

    def __init__(self, path: str, mount: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = "/" + path.strip("/")
        self.directory = mount / path.strip("/")
        self.clock = clock
        self._last: tuple[float, CgroupSample] | None = None

    @property
    def scope(self) -> str:
        return f"cgroup:{self.path}"

    def values(self) -> dict[str, float] | None:
        """This interval's figures, or None when the cgroup does not exist (any more)."""
        if not self.directory.is_dir():
            self._last = None
            return None
        now, s = self.clock(), read_cgroup(self.directory)
        out: dict[str, float] = {}
        for name, value in (("mem_bytes", s.mem_bytes), ("mem_max_bytes", s.mem_max_bytes), ("pids", s.pids)):
            if value is not None:
                out[name] = float(value)
        if s.mem_bytes is not None and s.mem_max_bytes:
            out["mem_pct"] = 100.0 * s.mem_bytes / s.mem_max_bytes
        if s.quota_cores is not None:
            out["cpu_quota_cores"] = s.quota_cores
        if self._last is not None:
            t0, before = self._last
            dt = now - t0
            if dt > 0 and s.cpu_usec is not None and before.cpu_usec is not None and s.cpu_usec >= before.cpu_usec:
                cores = (s.cpu_usec - before.cpu_usec) / 1e6 / dt
                out["cpu_pct"] = 100.0 * cores
                if s.quota_cores:
                    out["cpu_quota_pct"] = 100.0 * cores / s.quota_cores
            for name, new, old in (("io_read_bytes", s.io_read_bytes, before.io_read_bytes),
                                   ("io_write_bytes", s.io_write_bytes, before.io_write_bytes)):
                if new is not None and old is not None:
                    out[name] = float(new - old if new >= old else new)
            out["interval_s"] = round(dt, 3)
        self._last = (now, s)
        return out
