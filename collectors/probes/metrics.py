"""Host metrics: CPU, memory, disk and network I/O (per-interval deltas), load, process and
connection counts, failed logins in the interval (payload `scope`: "host").

Per workload, from cgroup v2 (collectors/cgroups.py): one more metrics event per watched cgroup, with
payload `scope`: "cgroup:<path>". Watched are the cgroups listed in the settings and, when the agent runs
in a container or sidecar (its own cgroup v2 path is not "/"), its own cgroup. The host's figures stay in
the host event.

In a PID namespace of its own (a container, a sidecar, a lab host) the kernel's machine-wide figures (CPU,
load, memory, swap, the root filesystem and disk I/O) are the whole machine's, the same for every
workload on it: they go in an event of their own, payload `scope`: "machine", and the host event keeps
what the namespace makes its own (network, processes, connections, logins). The detectors judge a host by
its own figures only: two namespaced clones on one machine whose sampling intervals are offset by a few
seconds see different slices of the machine's disk reads, a difference neither of them made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from collectors.cgroups import DEFAULT_MOUNT, CgroupMeter, cgroup2_mount, own_cgroup
from collectors.probes.base import Emit, Probe
from collectors.safe import absent
from contract.events import Kind

MACHINE_WIDE = frozenset({"cpu_pct", "load1", "load5", "load15", "mem_pct", "mem_used_bytes", "mem_total_bytes",
                          "swap_pct", "disk_root_pct", "disk_read_bytes", "disk_write_bytes"})
"""Figures psutil reads from the kernel's machine-wide counters, whatever namespace the agent is in."""

INITIAL_PID_NAMESPACE = "pid:[4026531836]"
"""/proc/self/ns/pid in the machine's initial PID namespace (the kernel's fixed PROC_PID_INIT_INO)."""


def in_own_pid_namespace(proc: Path = Path("/proc")) -> bool:
    """True when this process runs in a PID namespace other than the machine's (a container, a lab host);
    False in the initial one or when it cannot be told (the link is unreadable)."""
    try:
        return os.readlink(proc / "self" / "ns" / "pid") != INITIAL_PID_NAMESPACE
    except OSError:
        return False


class MetricsProbe(Probe):
    name = "metrics"

    def __init__(self, interval: float = 30.0, procs: Callable[[], int] | None = None,
                 conns: Callable[[], int] | None = None, failed_logins: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, cgroups: list[str] | None = None,
                 own_scope: bool = True, cgroup_mount: Path | None = None, proc: Path = Path("/proc"),
                 own_traffic: Callable[[], dict[str, float]] | None = None,
                 machine_scope: bool | None = None) -> None:
        super().__init__(interval, None)
        self.machine_scope = in_own_pid_namespace(proc) if machine_scope is None else machine_scope
        """Machine-wide figures in a "machine" event of their own, not the host's (None: when the agent runs
        in a PID namespace of its own)."""
        self.procs, self.conns, self.failed_logins = procs, conns, failed_logins
        self.own_traffic = own_traffic
        """The agent's own Kafka traffic so far (collectors/own_traffic.py), reported per interval beside the
        interface counters as agent_net_*, so the host stage can leave it out of the host's."""
        self.clock = clock
        mount = cgroup_mount or cgroup2_mount(proc) or DEFAULT_MOUNT
        paths = list(cgroups or [])
        own = own_cgroup(proc) if own_scope else None
        self.own = "/" + own.strip("/") if own else None
        if own is not None and own != "/" and own not in paths:  # in a container or sidecar
            paths.append(own)
        self.cgroups = [CgroupMeter(path, mount, clock) for path in dict.fromkeys(paths)]
        self._last: dict[str, float] = {}
        self._last_t: float | None = None
        self._cpu_since = clock()
        psutil.cpu_percent(None)  # prime: the next call covers the interval since now

    def counters(self) -> dict[str, float]:
        c: dict[str, float] = {}
        net = absent(psutil.net_io_counters)
        if net is not None:
            c["net_bytes_out"], c["net_bytes_in"] = net.bytes_sent, net.bytes_recv
            c["net_packets_out"], c["net_packets_in"] = net.packets_sent, net.packets_recv
        disk = absent(psutil.disk_io_counters)
        if disk is not None:
            c["disk_read_bytes"], c["disk_write_bytes"] = disk.read_bytes, disk.write_bytes
        if self.failed_logins is not None:
            c["failed_logins"] = self.failed_logins()
        if self.own_traffic is not None:
            c.update(self.own_traffic())
        return c

    def collect(self, full: bool) -> list[Emit]:
        values: dict[str, float] = {}
        cpu = psutil.cpu_percent(None)
        if self.clock() - self._cpu_since >= 0.5:  # a shorter interval gives a meaningless figure
            values["cpu_pct"] = cpu
        self._cpu_since = self.clock()
        mem = psutil.virtual_memory()
        values.update(mem_pct=mem.percent, mem_used_bytes=mem.total - mem.available,
                      mem_total_bytes=mem.total)
        swap = absent(psutil.swap_memory)
        if swap is not None:
            values["swap_pct"] = swap.percent
        load = absent(os.getloadavg)
        if load is not None:
            values.update(load1=load[0], load5=load[1], load15=load[2])
        usage = absent(lambda: psutil.disk_usage("/"))
        if usage is not None:
            values["disk_root_pct"] = usage.percent
        values["procs"] = self.procs() if self.procs else len(psutil.pids())
        if self.conns is not None:
            values["conns"] = self.conns()
        now, counters = self.clock(), self.counters()
        if self._last_t is not None:
            values["interval_s"] = round(now - self._last_t, 3)
            for name, value in counters.items():
                before = self._last.get(name)
                # a counter that went backwards was reset (e.g. interface re-created): count from zero
                values[name] = value - before if before is not None and value >= before else value
        self._last, self._last_t = counters, now
        every = float(self.interval)  # as configured: the budget may stretch interval_s
        host: dict[str, Any] = {"values": {k: float(v) for k, v in values.items()}, "scope": "host",
                                "every_s": every}
        out: list[Emit] = [(Kind.METRICS, host)]
        if self.machine_scope:
            machine = {k: host["values"].pop(k) for k in list(host["values"]) if k in MACHINE_WIDE}
            if "interval_s" in host["values"]:
                machine["interval_s"] = host["values"]["interval_s"]
            out.append((Kind.METRICS, {"values": machine, "scope": "machine", "every_s": every}))
        for meter in self.cgroups:
            scoped = meter.values()
            if scoped is not None:
                payload: dict[str, Any] = {"values": scoped, "scope": meter.scope}
                if meter.path == self.own:
                    payload["own"] = True  # the agent's own cgroup (its container): named apart by the detectors
                out.append((Kind.METRICS, payload))
        return out
