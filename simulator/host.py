"""One simulated host: its software state, its normal life, and the events its collector would send.

A `SimHost` keeps what a real host has (processes, sockets, configuration, packages, modules) and, once
per collector cycle, `step` returns the events the real collector would publish for that cycle: changes
as they happened, metrics every cycle, a heartbeat every few cycles, full inventories on hello and
periodically, and a goodbye when the host is destroyed. Per-host `seq` starts at 0 and grows by one per
event. Everything random comes from the host's own seeded generator, so runs are reproducible.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contract.events import Event, Kind

AGENT_VERSION = "0.1.0"
_MASK62 = (1 << 62) - 1


def uuid7(ms: int, rnd: int) -> str:
    """A UUIDv7 string for event time `ms` with 74 caller-supplied random bits (reproducible ids)."""
    h = f"{ms & 0xFFFFFFFFFFFF:012x}7{(rnd >> 62) & 0xFFF:03x}{_VARIANT | (rnd & _MASK62):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_VARIANT = 0b10 << 62


@dataclass
class Image:
    """A built image: the process/socket/package/config/module templates hosts start from."""

    name: str
    id: str
    family: str
    role: str
    processes: list[dict[str, Any]]
    listen: list[dict[str, Any]]
    packages: dict[str, str]
    config: dict[str, str]
    modules: list[str]
    gauges: dict[str, tuple[float, float]]
    rates: dict[str, tuple[float, float]]
    life: dict[str, Any]
    cores: int
    mem_total: float
    bursts: dict[str, Any]
    service: str
    """The exe of the role's main service (what an exploited service would spawn from)."""


@dataclass
class Effects:
    """Metric changes active on a host (scenarios add them, then take them away)."""

    add: dict[str, float] = field(default_factory=dict)
    mul: dict[str, float] = field(default_factory=dict)


class SimHost:
    """A host and its collector. The fleet drives it one cycle at a time with `step`."""

    def __init__(
        self,
        host_id: str,
        image: Image,
        cohort: str,
        tags: dict[str, str],
        rng: random.Random,
        phase: float,
        launched: float,
        id_rng: random.Random,
    ) -> None:
        self.host_id = host_id
        self.image = image
        self.cohort = cohort
        self.tags = tags
        self.rng = rng
        self.id_rng = id_rng
        self.phase = phase
        """Seconds after each cycle start at which this host's collector samples."""
        self.launched = launched
        self.boot_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.ip = f"10.{rng.randrange(0, 32)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"
        self.hostname = "ip-" + self.ip.replace(".", "-")
        self.seq = 0
        self.sent = 0
        self.started = False
        self.gone = False
        self.next_pid = 300 + rng.randrange(0, 400)
        self.procs: dict[int, dict[str, Any]] = {}
        self.listen: list[dict[str, Any]] = []
        self.established: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.config = dict(image.config)
        self.packages = dict(image.packages)
        self.modules = {m: "loaded" for m in image.modules}
        self.logins: list[dict[str, Any]] = []
        """Interactive sessions (who is logged in), as the login probe reports them."""
        self.effects = Effects()
        self.pending: list[tuple[Kind, dict[str, Any]]] = []
        self.auth: list[dict[str, Any]] = []
        self.bias = {name: 1.0 + rng.gauss(0.0, 0.02) for name in (*image.gauges, *image.rates)}
        self.inventory_offset = rng.randrange(0, 1 << 16)
        self.life_offset = rng.random()
        self.client_conns: list[dict[str, Any]] = []
        self.cycle_state: dict[str, Any] = {}
        self.boot_time = 0.0
        self.now = 0.0
        """Epoch seconds of the cycle being generated (process start times)."""
        self.load5 = self.load15 = image.gauges.get("load1", (0.5, 0.0))[0]
        self.disk_pct = round(rng.uniform(18.0, 34.0), 1)
        self._boot()

    # --- state changes (queued as change events for the current cycle) -------------------------------

    def _boot(self) -> None:
        for tmpl in self.image.processes:
            for _ in range(int(tmpl.get("count", 1))):
                self._spawn(tmpl, queue=False)
        for sock in self.image.listen:
            self.listen.append(self._listen_sock(sock))

    def _spawn(
        self, tmpl: dict[str, Any], queue: bool = True, parent_pid: int | None = None, start_time: float = 0.0
    ) -> dict[str, Any]:
        pid = self.next_pid
        self.next_pid += 1 + self.rng.randrange(0, 40)
        if parent_pid is None:
            parent_pid = self.find_pid(tmpl["parent"]) if "parent" in tmpl else 1
            if tmpl.get("ppid") == 0:
                pid, parent_pid = 1, 0
        exe = tmpl["exe"]
        proc = {
            "pid": pid,
            "ppid": parent_pid or 0,
            "exe": exe,
            "cmdline": tmpl.get("cmdline", exe),
            "cmdline_truncated": False,
            "user": tmpl.get("user", "root"),
            "start_time": start_time,
            "name": tmpl.get("name", exe.rsplit("/", 1)[-1][:15]),
        }
        self.procs[pid] = proc
        if queue:
            self.pending.append((Kind.PROCESS_START, {**proc, "parents": self.parents(pid)}))
        return proc

    def start_process(self, tmpl: dict[str, Any], parent_exe: str | None = None) -> dict[str, Any]:
        parent = self.find_pid(parent_exe) if parent_exe else None
        return self._spawn(tmpl, parent_pid=parent or 1, start_time=round(self.now, 2))

    def exit_process(self, pid: int) -> None:
        proc = self.procs.pop(pid, None)
        if proc is not None:
            self.pending.append((Kind.PROCESS_EXIT, proc))

    def find_pid(self, exe: str) -> int | None:
        for pid, p in self.procs.items():
            if p["exe"] == exe:
                return pid
        return None

    def parents(self, pid: int) -> list[str]:
        out: list[str] = []
        p = self.procs.get(pid)
        while p is not None and p["ppid"] and len(out) < 8:
            p = self.procs.get(p["ppid"])
            if p is not None:
                out.append(p["exe"])
        return out

    def _listen_sock(self, s: dict[str, Any]) -> dict[str, Any]:
        proto = s.get("proto", "tcp")
        laddr = s.get("laddr", "::" if proto.endswith("6") else "0.0.0.0")
        return {
            "state": "listen",
            "proto": proto,
            "laddr": laddr,
            "lport": int(s["port"]),
            "raddr": "",
            "rport": 0,
            "pid": self.find_pid(s["exe"]) or 0,
            "exe": s["exe"],
        }

    def open_listen(self, s: dict[str, Any]) -> dict[str, Any]:
        sock = self._listen_sock(s)
        self.listen.append(sock)
        self.pending.append((Kind.NET_OPEN, sock))
        return sock

    def close_listen(self, lport: int) -> None:
        for sock in list(self.listen):
            if sock["lport"] == lport:
                self.listen.remove(sock)
                self.pending.append((Kind.NET_CLOSE, sock))

    def connect(self, raddr: str, rport: int, proc: dict[str, Any], lport: int | None = None) -> dict[str, Any]:
        sock = {
            "state": "established",
            "proto": "tcp",
            "laddr": self.ip,
            "lport": lport if lport is not None else self.rng.randrange(32768, 60999),
            "raddr": raddr,
            "rport": rport,
            "pid": proc["pid"],
            "exe": proc["exe"],
        }
        self.established[(raddr, rport, sock["lport"])] = sock
        self.pending.append((Kind.NET_OPEN, sock))
        return sock

    def disconnect(self, sock: dict[str, Any]) -> None:
        if self.established.pop((sock["raddr"], sock["rport"], sock["lport"]), None) is not None:
            self.pending.append((Kind.NET_CLOSE, sock))

    def set_config(self, key: str, value: str | None) -> None:
        before = self.config.get(key)
        if before == value:
            return
        if value is None:
            self.config.pop(key, None)
        else:
            self.config[key] = value
        self.pending.append((Kind.CONFIG_CHANGE, {"key": key, "before": before, "after": value}))

    def set_package(self, name: str, version: str | None) -> None:
        """Install, upgrade or (version None) remove a package."""
        before = self.packages.get(name)
        if before == version:
            return
        if version is None:
            self.packages.pop(name, None)
        else:
            self.packages[name] = version
        self.pending.append((Kind.PACKAGE_CHANGE, {"key": name, "before": before, "after": version}))

    def set_module(self, name: str, state: str | None) -> None:
        """Load (state "loaded") or (None) unload a kernel module."""
        before = self.modules.get(name)
        if before == state:
            return
        if state is None:
            self.modules.pop(name, None)
        else:
            self.modules[name] = state
        self.pending.append((Kind.MODULE_CHANGE, {"key": name, "before": before, "after": state}))

    def auth_attempt(self, user: str, outcome: str, source: str, method: str = "password") -> None:
        self.auth.append({"user": user, "outcome": outcome, "source": source, "method": method, "service": "sshd"})

    def login(self, user: str, terminal: str, source: str) -> dict[str, Any]:
        """A session opens: the login probe reports the new list of logged-in users."""
        session = {"user": user, "terminal": terminal, "host": source, "started": round(self.now, 3)}
        self.logins.append(session)
        self.pending.append((Kind.LOGIN_INVENTORY, {"items": list(self.logins)}))
        return session

    def logout(self, session: dict[str, Any]) -> None:
        if session in self.logins:
            self.logins.remove(session)
            self.pending.append((Kind.LOGIN_INVENTORY, {"items": list(self.logins)}))

    # --- normal life ---------------------------------------------------------------------------------

    def _live(self, t: float, cycle: float, level: float) -> None:
        life = self.image.life
        rng = self.rng
        if "ssh_noise" in life:
            for _ in range(_poisson(rng, life["ssh_noise"]["per_cycle"])):
                self.auth_attempt(rng.choice(_SSH_USERS), "failure", _public_ip(rng))
        if "client_connections" in life:
            spec = life["client_connections"]
            for sock in self.client_conns:
                self.disconnect(sock)
            self.client_conns = []
            server = self.cycle_state.get("client_proc")
            if server is None or server["pid"] not in self.procs:
                pid = self.find_pid(spec["exe"])
                server = self.procs[pid] if pid else None
                self.cycle_state["client_proc"] = server
            if server is not None:
                for _ in range(_poisson(rng, spec["per_cycle"] * level)):
                    sock = {
                        "state": "established",
                        "proto": "tcp",
                        "laddr": self.ip,
                        "lport": int(spec["port"]),
                        "raddr": _public_ip(rng),
                        "rport": 1024 + rng.getrandbits(16) % 64511,
                        "pid": server["pid"],
                        "exe": server["exe"],
                    }
                    self.established[(sock["raddr"], sock["rport"], sock["lport"])] = sock
                    self.pending.append((Kind.NET_OPEN, sock))
                    self.client_conns.append(sock)
        if "config_run" in life:
            self._config_run(life["config_run"], t, cycle)
        if "jobs" in life:
            self._jobs(life["jobs"], t, cycle)

    def _config_run(self, spec: dict[str, Any], t: float, cycle: float) -> None:
        """Chef/Puppet-like convergence: the client runs, restarts the services, then exits."""
        every = float(spec["every_s"])
        pos = (t + self.life_offset * every) % every
        state = self.cycle_state
        if pos < cycle and "runner" not in state:
            daemon = self.find_pid(spec["fork_of"])
            if daemon is None:
                return
            d = self.procs[daemon]
            state["runner"] = self.start_process(
                {k: d[k] for k in ("exe", "cmdline", "user", "name")}, parent_exe=spec["fork_of"]
            )
            state["run_step"] = 0
            self.effects.add["cpu_pct"] = self.effects.add.get("cpu_pct", 0.0) + float(spec.get("cpu_add", 0))
        elif "runner" in state:
            state["run_step"] += 1
            if state["run_step"] == 1:
                for exe in spec.get("restarts", []):
                    pid = self.find_pid(exe)
                    if pid is None:
                        continue
                    old = self.procs[pid]
                    self.exit_process(pid)
                    tmpl = {
                        "exe": old["exe"],
                        "cmdline": old["cmdline"],
                        "user": old["user"],
                        "name": old["name"],
                    }
                    self.start_process(tmpl)
            elif state["run_step"] >= 2:
                self.exit_process(state.pop("runner")["pid"])
                self.effects.add["cpu_pct"] = self.effects.add.get("cpu_pct", 0.0) - float(spec.get("cpu_add", 0))

    def _jobs(self, spec: dict[str, Any], t: float, cycle: float) -> None:
        every, duration = float(spec["every_s"]), float(spec["duration_s"])
        pos = (t + self.life_offset * every) % every
        state = self.cycle_state
        if "job" in state and t - state["job_t"] >= duration:
            if "job_sock" in state:
                self.disconnect(state.pop("job_sock"))
            self.exit_process(state.pop("job")["pid"])
        if pos < cycle and "job" not in state:
            state["job"] = self.start_process(spec, parent_exe=spec.get("parent"))
            state["job_t"] = t
            if "connect" in spec:  # the job talks to a backend (a database, a queue) while it runs
                backend = spec["connect"]
                state["job_sock"] = self.connect(str(backend["raddr"]), int(backend["rport"]), state["job"])

    # --- one collector cycle -------------------------------------------------------------------------

    def step(
        self,
        t: float,
        when: datetime,
        cycle: float,
        level: dict[str, float],
        cycle_no: int,
        inventory_every: int,
        heartbeat_every: int,
        goodbye: str | None = None,
    ) -> list[Event]:
        """The events of one collector cycle at `when` (= fleet start + t + phase)."""
        events: list[Event] = []
        self.now = when.timestamp()
        ms = int(self.now * 1000)
        first = not self.started
        if first:
            self.started = True
            self.boot_time = when.timestamp() - 40.0 - self.rng.random() * 20.0
            for p in self.procs.values():
                p["start_time"] = round(self.boot_time + 1.0 + (p["pid"] % 50) * 0.1, 2)
            self._emit(
                events,
                Kind.HELLO,
                {
                    "agent_version": AGENT_VERSION,
                    "boot_time": round(self.boot_time, 3),
                    "hostname": self.hostname,
                    "host_age_s": round(when.timestamp() - self.boot_time, 1),
                    "shed": {},
                    "spool_dropped": 0,
                },
                when,
                ms,
            )
        else:
            self._live(t, cycle, level.get("traffic", 1.0))
            # auth attempts come from the log, spread over the last cycle, oldest first
            if self.auth:
                n = len(self.auth)
                self.cycle_state["failed"] = sum(1 for a in self.auth if a["outcome"] == "failure")
                for i, a in enumerate(self.auth):
                    at = when - timedelta(seconds=cycle * (n - i) / (n + 1))
                    self._emit(events, Kind.AUTH_ATTEMPT, a, at, int(at.timestamp() * 1000))
                self.auth = []
            for kind, payload in self.pending:
                self._emit(events, kind, payload, when, ms)
        self.pending = []
        if first or (cycle_no + self.inventory_offset) % inventory_every == 0:
            self._inventories(events, when, ms)
        self._emit(events, Kind.METRICS, {"values": self._metrics(cycle, level)}, when, ms)
        if not first and (cycle_no + self.inventory_offset) % heartbeat_every == 0:
            self._emit(
                events,
                Kind.HEARTBEAT,
                {
                    "events_sent": self.sent + len(events) + 1,
                    "events_dropped": 0,
                    "events_spooled": 0,
                    "cpu_pct": round(0.3 + self.rng.random() * 0.4, 2),
                    "rss_bytes": 41_000_000,
                    "shed": {},
                },
                when,
                ms,
            )
        if goodbye is not None:
            self._emit(events, Kind.GOODBYE, {"reason": goodbye}, when, ms)
            self.gone = True
        self.sent += len(events)
        return events

    def heartbeat(self, when: datetime) -> list[Event]:
        """A batch of one heartbeat (a collector with nothing else to say), sent at `when`."""
        events: list[Event] = []
        payload = {"events_sent": self.sent + 1, "events_dropped": 0, "events_spooled": 0, "shed": {}}
        self._emit(events, Kind.HEARTBEAT, payload, when, int(when.timestamp() * 1000))
        self.sent += 1
        return events

    def goodbye(self, when: datetime, reason: str = "shutdown") -> list[Event]:
        """The agent's last batch when the host shuts down: only the goodbye."""
        events: list[Event] = []
        self._emit(events, Kind.GOODBYE, {"reason": reason}, when, int(when.timestamp() * 1000))
        self.sent += 1
        self.gone = True
        return events

    def _emit(self, events: list[Event], kind: Kind, payload: dict[str, Any], when: datetime, ms: int) -> None:
        events.append(
            Event(
                kind,
                when,
                self.host_id,
                self.boot_id,
                self.image.id,
                self.image.family,
                self.seq,
                payload,
                self.tags,
                uuid7(ms, self.id_rng.getrandbits(74)),
            )
        )
        self.seq += 1

    def _inventories(self, events: list[Event], when: datetime, ms: int) -> None:
        self._emit(events, Kind.PROCESS_INVENTORY, {"items": list(self.procs.values())}, when, ms)
        self._emit(
            events,
            Kind.NET_INVENTORY,
            {"items": self.listen + list(self.established.values()), "truncated": False},
            when,
            ms,
        )
        self._emit(events, Kind.LOGIN_INVENTORY, {"items": list(self.logins)}, when, ms)
        self._emit(events, Kind.CONFIG_INVENTORY, {"items": dict(sorted(self.config.items()))}, when, ms)
        self._emit(
            events,
            Kind.PACKAGE_INVENTORY,
            {"items": dict(sorted(self.packages.items())), "manager": "dpkg"},
            when,
            ms,
        )
        self._emit(
            events,
            Kind.MODULE_INVENTORY,
            {"items": dict(sorted(self.modules.items())), "available": True},
            when,
            ms,
        )

    def _burst(self, cycle: float) -> tuple[str, float] | None:
        """A short burst on one metric now and then (normal noise, not an anomaly)."""
        spec = self.image.bursts
        left = self.cycle_state.get("burst_left", 0)
        if left > 0:
            self.cycle_state["burst_left"] = left - 1
            return self.cycle_state["burst"]  # type: ignore[no-any-return]
        if not spec or self.rng.random() >= float(spec["per_hour"]) * cycle / 3600.0:
            return None
        name = self.rng.choice([*self.image.rates, "cpu_pct", "load1"])
        burst = (name, self.rng.uniform(*spec["factor"]))
        self.cycle_state["burst"] = burst
        self.cycle_state["burst_left"] = self.rng.randint(*spec["cycles"]) - 1
        return burst

    def _metrics(self, cycle: float, level: dict[str, float]) -> dict[str, float]:
        gauss = self.rng.gauss
        bias = self.bias
        add, mul = self.effects.add, self.effects.mul
        traffic = level.get("traffic", 1.0)
        base = level.get("base", 1.0)
        values: dict[str, float] = {}
        for name, (mean, sd) in self.image.gauges.items():
            lvl = traffic if name != "mem_pct" else base
            v = mean * lvl * bias[name] + gauss(0.0, sd)
            if name in mul:
                v *= mul[name]
            if name in add:
                v += add[name]
            values[name] = max(0.0, v)
        for name, (mean, sd) in self.image.rates.items():
            v = (mean * traffic * bias[name] + gauss(0.0, sd)) * cycle
            if name in mul:
                v *= mul[name]
            if name in add:
                v += add[name] * cycle
            values[name] = float(max(0, int(v)))
        burst = self._burst(cycle)
        if burst is not None and burst[0] in values:
            values[burst[0]] *= burst[1]
        values["cpu_pct"] = min(100.0, values.get("cpu_pct", 0.0))
        values["mem_pct"] = min(100.0, values.get("mem_pct", 0.0))
        if "load1" in add:
            values["load1"] = max(0.0, values["load1"])
        values["mem_used_bytes"] = float(int(self.image.mem_total * values["mem_pct"] / 100.0))
        values["mem_total_bytes"] = self.image.mem_total
        load = values.get("load1", 0.0)
        # the kernel's 5 and 15 minute exponential averages, sampled once per cycle
        w5, w15 = 1.0 - math.exp(-cycle / 300.0), 1.0 - math.exp(-cycle / 900.0)
        self.load5 += w5 * (load - self.load5)
        self.load15 += w15 * (load - self.load15)
        values["load5"], values["load15"] = round(self.load5, 2), round(self.load15, 2)
        values["disk_root_pct"] = self.disk_pct
        values["interval_s"] = cycle
        values["net_packets_out"] = float(int(values.get("net_bytes_out", 0.0) / 1100.0))
        values["net_packets_in"] = float(int(values.get("net_bytes_in", 0.0) / 700.0))
        values["procs"] = float(len(self.procs) + 96)
        values["conns"] = float(len(self.listen) + len(self.established))
        values["failed_logins"] = float(self.cycle_state.pop("failed", 0))
        return values


_SSH_USERS = ("root", "admin", "ubuntu", "test", "oracle", "postgres", "git", "user", "ftpuser", "pi")


def _public_ip(rng: random.Random) -> str:
    r = rng.getrandbits(29)
    return f"{_PUBLIC_A[r % len(_PUBLIC_A)]}.{(r >> 5) & 255}.{(r >> 13) & 255}.{((r >> 21) % 254) + 1}"


_PUBLIC_A = (23, 31, 45, 51, 62, 77, 81, 89, 91, 95, 103, 109, 115, 128, 141, 151, 176, 185, 193, 212, 218)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
