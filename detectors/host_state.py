"""Per-host state: turns one host's events (in order) into Observations of what changed.

A host "shows" a behaviour feature (process, parent->child, listener, destination, login) while it is
present and for `linger_s` seconds after it disappears, so short-lived processes (batch jobs, a config
run restarting a service) do not flap in and out of the cohort baseline. Configuration, packages and
modules are state: they change only when the host reports a change or a new inventory.

A *sample* does not linger: a process a polling agent (`process_source` mode "poll" in its hello and
heartbeats) saw for less than `SAMPLED_S`, or an outbound connection (sockets are always listed by
polling) seen for less than `SAMPLED_SOCKET_S`. A listing every few seconds catches such a process or
connection on some clones at some times and not on others, so "1 of N hosts shows it" says nothing about
how rare it is; while it lingered, a periodic job's child caught on one clone was reported as rare there.
Without the linger the feature leaves again right away, its judgement finds it gone and the image's
history learns it as the image's behaviour. What the agent sees for longer (a miner, a reverse shell, a
listener) lingers as before; a sampled one-off (a dropper living 200 ms) is no longer reported as rare on a
polling host.

The state is a compact JSON-able dict (`to_dict` / `from_dict`) so a stream processor can keep one per
host in a table.
"""

from __future__ import annotations

from typing import Any

from contract.events import Event, Kind
from detectors.features import (
    EPHEMERAL_PORT,
    auth_source,
    config_feature,
    dest_feature,
    listen_feature,
    login_feature,
    module_feature,
    package_feature,
    parent_feature,
    proc_feature,
    socket_details,
)
from detectors.types import Observation

MAX_FEATURES = 4096
SAMPLED_S = 5.0
"""A process a polling agent saw for less than this is a sample: its features do not linger. A listing or
two of the process probe (every second) plus a slow cycle."""
SAMPLED_SOCKET_S = 12.0
"""An outbound connection the agent saw for less than this is a sample: two listings of a network probe
listing every 5 s (1 s by default) plus a slow cycle."""
"""Behaviour features kept per host; beyond this new ones collapse into `<kind>:<overflow>`."""


def metric_scope_suffix(payload: dict[str, Any]) -> str | None:
    """How a metrics event's values are named: the host's own as they are; a cgroup's (payload scope
    "cgroup:<path>", collectors/cgroups.py) as `<name>@<unit>`, the last path component, so a watched
    service compares with the same service on its clones and never overwrites the host's figures; the
    agent's own cgroup (`own`: true, e.g. its container) as `<name>@own`, whatever its per-host path.
    None for the machine's figures seen from a namespace (scope "machine", collectors/probes/metrics.py):
    every workload on that machine shares them, so they say nothing of this host (they stay in storage)."""
    scope = payload.get("scope")
    if scope == "machine":
        return None
    if not isinstance(scope, str) or not scope.startswith("cgroup:"):
        return ""
    if payload.get("own") is True:
        return "@own"
    return "@" + (scope.rstrip("/").rsplit("/", 1)[-1] or "root")


PER_INTERVAL = ("net_bytes_out", "net_bytes_in", "net_packets_out", "net_packets_in", "disk_read_bytes",
                "disk_write_bytes", "failed_logins", "auth_failures", "proc_starts", "proc_restarts")
"""The host's metrics that count what happened in a report's interval (the rest are levels)."""


AGENT_TRAFFIC = {"net_bytes_out": "agent_net_bytes_out", "net_bytes_in": "agent_net_bytes_in",
                 "net_packets_out": "agent_net_requests_out", "net_packets_in": "agent_net_responses_in"}
"""Interface counter -> the agent's own share of it in the same interval (collectors/own_traffic.py)."""


def without_agent_traffic(metrics: dict[str, float]) -> None:
    """Take the agent's own Kafka traffic out of the host's network counters, and drop its counters: that
    traffic follows the agent's state (just restarted, replaying its spool, slowed by its self-limit), not
    the host's behaviour, and clones whose agents are in different states would differ by it alone. Bytes
    are Kafka protocol bytes (headers and pure ACKs stay); a request or response is counted as one packet
    (a large one is several), so what is left is at most the host's own plus that remainder. Reports
    without the agent's counters (older agents, imported metrics) keep the interface counters as sent."""
    for name, own in AGENT_TRAFFIC.items():
        mine = metrics.pop(own, None)
        if mine is not None and name in metrics and mine >= 0.0:
            metrics[name] = max(0.0, metrics[name] - mine)


def per_configured_interval(metrics: dict[str, float], every_s: Any) -> None:
    """Put a host report's per-interval counts on the interval its agent is configured for (`every_s`), and
    leave out `interval_s` itself. An agent over its CPU budget stretches its intervals (collectors/budget.py),
    and one starting on a loaded machine may report after twice its interval: its counts then double although
    the host does nothing else, and its clones' peer view would flag them. The clones share the configuration,
    so the counts compare again. Without `every_s` (older agents, imported metrics) the counts stay as sent."""
    took = metrics.pop("interval_s", None)
    if not isinstance(every_s, (int, float)) or isinstance(every_s, bool) or took is None:
        return
    if not (0.0 < every_s < 86400.0 and 0.0 < took < 86400.0):
        return
    scale = min(10.0, max(0.1, float(every_s) / took))
    if abs(scale - 1.0) < 0.05:  # scheduling jitter
        return
    for name in PER_INTERVAL:
        if name in metrics:
            metrics[name] *= scale


class HostState:
    """What one host currently shows. `apply(event)` returns an Observation or None (nothing changed)."""

    def __init__(self, host_id: str, image_id: str, image_family: str, linger_s: float = 900.0) -> None:
        self.host_id = host_id
        self.image_id = image_id
        self.image_family = image_family
        self.linger_s = float(linger_s)
        self.started = False
        self.last = 0.0
        self.counts: dict[str, int] = {}
        """Behaviour feature -> live references (pids, sockets, sessions)."""
        self.linger: dict[str, float] = {}
        """Behaviour features with no live reference, shown until this event time (epoch s)."""
        self.pids: dict[str, list[str]] = {}
        """pid -> [process feature, parent feature, exe]."""
        self.state: dict[str, dict[str, str]] = {"cfg": {}, "pkg": {}, "mod": {}}
        self.ports: dict[str, int] = {}
        """"tcp/80" -> listeners, to tell inbound connections (ignored) from outbound ones."""
        self.counters: dict[str, float] = {}
        """Events counted between metrics events (auth_failures, proc_starts, proc_restarts)."""
        self.polled = False
        """The agent lists /proc (process_source mode "poll"): short-lived processes are samples."""
        self.born: dict[str, float] = {}
        """Polling agents: pid -> when the agent first reported the process (event time)."""
        self.opened: dict[str, float] = {}
        """Outbound connection (proto|laddr|lport|raddr|rport) -> when the agent first reported it."""

    def _reset(self) -> None:
        self.started = False
        self.counts, self.linger, self.pids, self.ports, self.counters = {}, {}, {}, {}, {}
        self.born, self.opened = {}, {}
        self.state = {"cfg": {}, "pkg": {}, "mod": {}}

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "h": self.host_id,
            "i": self.image_id,
            "f": self.image_family,
            "ls": self.linger_s,
            "s": self.started,
            "t": self.last,
            "c": self.counts,
            "l": self.linger,
            "p": self.pids,
            "k": self.state,
            "lp": self.ports,
            "x": self.counters,
            "pm": self.polled,
            "b": self.born,
            "o": self.opened,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostState:
        hs = cls(d["h"], d["i"], d["f"], linger_s=d.get("ls", 900.0))
        hs.started = bool(d.get("s", False))
        hs.last = float(d.get("t", 0.0))
        hs.counts = dict(d.get("c", {}))
        hs.linger = dict(d.get("l", {}))
        hs.pids = {k: list(v) for k, v in d.get("p", {}).items()}
        k = d.get("k", {})
        hs.state = {
            "cfg": dict(k.get("cfg", {})),
            "pkg": dict(k.get("pkg", {})),
            "mod": dict(k.get("mod", {})),
        }
        hs.ports = dict(d.get("lp", {}))
        hs.counters = dict(d.get("x", {}))
        hs.polled = bool(d.get("pm", False))
        hs.born = {str(k): float(v) for k, v in d.get("b", {}).items()}
        hs.opened = {str(k): float(v) for k, v in d.get("o", {}).items()}
        return hs

    def features(self) -> set[str]:
        """Every feature the host shows now."""
        out = set(self.counts) | set(self.linger)
        out.update(config_feature(k, v) for k, v in self.state["cfg"].items())
        out.update(package_feature(k, v) for k, v in self.state["pkg"].items())
        out.update(module_feature(k) for k in self.state["mod"])
        return out

    # ---- applying events -----------------------------------------------------------------------
    def apply(self, event: Event) -> Observation | None:
        now = event.time.timestamp()
        self._instances: dict[str, dict[str, Any]] = {}
        added: list[str] = []
        removed: list[str] = []
        first = False
        if self.started and event.image_id != self.image_id:
            # Re-imaged in place: the old identity leaves, the new one joins with its full state.
            self._reset()
        if not self.started:
            self.started = True
            first = True
            self.image_id, self.image_family = event.image_id, event.image_family
        self.last = max(self.last, now)
        if self.linger:
            self._expire(now, removed)
        kind = event.kind
        p = event.payload
        metrics: dict[str, float] = {}
        if kind == Kind.GOODBYE:
            gone = sorted(self.features())
            self._reset()
            return Observation(
                self.host_id,
                self.image_id,
                self.image_family,
                event.time,
                removed=tuple(gone),
                gone=True,
                first=first,
            )
        if kind in (Kind.HELLO, Kind.HEARTBEAT):
            source = p.get("process_source")
            if isinstance(source, dict) and isinstance(source.get("mode"), str):
                self.polled = source["mode"] == "poll"
                if not self.polled:
                    self.born = {}
        elif kind == Kind.METRICS:
            suffix = metric_scope_suffix(p)
            for name, value in (p.get("values", {}) if suffix is not None else {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[name + suffix] = float(value)
            if suffix == "":  # the host's own event carries the per-interval counters
                for name in ("auth_failures", "proc_starts", "proc_restarts"):
                    metrics.setdefault(name, self.counters.get(name, 0.0))
                self.counters = {}
                without_agent_traffic(metrics)
                per_configured_interval(metrics, p.get("every_s"))
        elif kind == Kind.PROCESS_START:
            self._proc_start(p, now, added, removed)
        elif kind == Kind.PROCESS_EXIT:
            self._proc_exit(p, now, removed)
        elif kind == Kind.PROCESS_INVENTORY:
            self._proc_inventory(p.get("items", []), now, added, removed)
        elif kind in (Kind.NET_OPEN, Kind.NET_CLOSE):
            f = self._sock_feature(p)
            if f is not None:
                sock = self._sock_key(p) if f.startswith("dest:") else ""
                if kind == Kind.NET_OPEN:
                    self._inc(self._seen(f, p), added)
                    if sock and sock not in self.opened and len(self.opened) < MAX_FEATURES:
                        self.opened[sock] = now
                else:
                    since = self.opened.pop(sock, None) if sock else None
                    self._dec(f, now, removed, linger=since is None or now - since >= SAMPLED_SOCKET_S)
                if f.startswith("listen:"):
                    self._track_port(f, +1 if kind == Kind.NET_OPEN else -1)
        elif kind == Kind.NET_INVENTORY:
            self._net_inventory(p.get("items", []), now, added, removed)
        elif kind == Kind.LOGIN_INVENTORY:
            new: dict[str, int] = {}
            for item in p.get("items", []):
                if isinstance(item, dict) and item.get("user"):
                    f = login_feature(str(item["user"]))
                    new[f] = new.get(f, 0) + 1
            self._replace("login:", new, now, added, removed)
        elif kind == Kind.AUTH_ATTEMPT:
            if p.get("outcome") == "failure":
                self.counters["auth_failures"] = self.counters.get("auth_failures", 0.0) + 1
            elif (login := auth_source(p)) is not None:  # a login from a source: shown, then lingering
                f, details = login
                self._instances.setdefault(f, details)
                self._inc(f, added)
                if f in self.counts:
                    self._dec(f, now, removed)
        elif kind in (Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY, Kind.MODULE_INVENTORY):
            self._state_inventory(kind, p.get("items", {}), added, removed)
        elif kind in (Kind.CONFIG_CHANGE, Kind.PACKAGE_CHANGE, Kind.MODULE_CHANGE):
            self._state_change(kind, p, added, removed)
        if not (added or removed or metrics or first):
            return None
        return Observation(
            self.host_id,
            self.image_id,
            self.image_family,
            event.time,
            added=tuple(added),
            removed=tuple(removed),
            metrics=metrics,
            first=first,
            details={f: d for f, d in self._instances.items() if f in added},
        )

    # ---- behaviour features (reference counted, lingering) --------------------------------------
    def _inc(self, f: str, added: list[str]) -> None:
        if not f:
            return
        c = self.counts.get(f)
        if c:
            self.counts[f] = c + 1
            return
        if f not in self.linger and len(self.counts) + len(self.linger) >= MAX_FEATURES:
            f = f.split(":", 1)[0] + ":<overflow>"
            if f in self.counts:
                self.counts[f] += 1
                return
        self.counts[f] = 1
        if self.linger.pop(f, None) is None:
            added.append(f)

    def _dec(self, f: str, now: float, removed: list[str], linger: bool = True) -> None:
        """One reference fewer; the last one leaves the feature lingering (`linger`: False for a sample,
        which leaves at once)."""
        c = self.counts.get(f)
        if not c:
            return
        if c > 1:
            self.counts[f] = c - 1
            return
        del self.counts[f]
        if linger and self.linger_s > 0:
            self.linger[f] = now + self.linger_s
        else:
            removed.append(f)

    def _expire(self, now: float, removed: list[str]) -> None:
        done = [f for f, until in self.linger.items() if until <= now]
        for f in done:
            del self.linger[f]
            removed.append(f)

    def _replace(
        self,
        prefix: str | tuple[str, ...],
        new: dict[str, int],
        now: float,
        added: list[str],
        removed: list[str],
    ) -> None:
        for f in [f for f in self.counts if f.startswith(prefix) and f not in new]:
            self.counts[f] = 1
            self._dec(f, now, removed)
        for f, c in new.items():
            if f in self.counts:
                self.counts[f] = c
            else:
                self._inc(f, added)
                if f in self.counts:
                    self.counts[f] = c

    # ---- processes -------------------------------------------------------------------------------
    @staticmethod
    def _proc_exe(p: dict[str, Any]) -> str:
        """The process's canonical identity: its resolved exe path, or "" when unknown. A process name
        never stands in for it (a name is what a short-lived process leaves when its exe could not be
        read); a kernel thread, which has no exe, is `[name]`."""
        exe = p.get("exe")
        missing = p.get("missing") or ()
        if isinstance(exe, str) and exe and "exe" not in missing:
            return exe
        if p.get("kernel_thread") is True and p.get("name"):
            return f"[{p['name']}]"
        return ""

    def _proc_features(self, p: dict[str, Any], parent_exe: str) -> tuple[str, str, str]:
        """(process feature, parent feature, exe); a feature is "" when part of its identity is unknown,
        so one program seen with its full and with a partial identity never makes two features."""
        exe = self._proc_exe(p)
        if not exe:
            return "", "", ""
        missing = p.get("missing") or ()
        cmdline, user = p.get("cmdline"), p.get("user")
        known = "cmdline" not in missing and "user" not in missing and isinstance(user, str) and user \
            and isinstance(cmdline, str) and (cmdline or p.get("kernel_thread") is True)
        pf = proc_feature(exe, str(cmdline), str(user)) if known else ""
        return pf, parent_feature(parent_exe, exe) if parent_exe else "", exe

    def _proc_start(self, p: dict[str, Any], now: float, added: list[str], removed: list[str]) -> None:
        parents = p.get("parents") or []
        parent_exe = str(parents[0]) if parents else ""
        if not parent_exe:
            known = self.pids.get(str(p.get("ppid")))
            parent_exe = known[2] if known else ""
        pf, cf, exe = self._proc_features(p, parent_exe)
        pid = str(p.get("pid"))
        old = self.pids.get(pid)
        if old is not None:  # pid reuse without an exit: drop the old process first
            self._dec(old[0], now, removed)
            self._dec(old[1], now, removed)
        count = p.get("count")  # a counted report of an exec storm: N identical execs in one window
        n = float(count) if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1.0
        if pf and (pf in self.counts or pf in self.linger):
            self.counters["proc_restarts"] = self.counters.get("proc_restarts", 0.0) + n
        self.counters["proc_starts"] = self.counters.get("proc_starts", 0.0) + n
        self.pids[pid] = [pf, cf, exe]
        if self.polled:
            self.born[pid] = now
        self._inc(pf, added)
        self._inc(cf, added)

    def _proc_exit(self, p: dict[str, Any], now: float, removed: list[str]) -> None:
        pid = str(p.get("pid"))
        known = self.pids.pop(pid, None)
        born = self.born.pop(pid, None)
        linger = not (self.polled and born is not None and now - born < SAMPLED_S)  # a sample leaves at once
        if known is None:
            pf = self._proc_features(p, "")[0]
            self._dec(pf, now, removed, linger)
            return
        self._dec(known[0], now, removed, linger)
        self._dec(known[1], now, removed, linger)

    def _proc_inventory(self, items: list[Any], now: float, added: list[str], removed: list[str]) -> None:
        exes = {str(it.get("pid")): self._proc_exe(it) for it in items if isinstance(it, dict)}
        pids: dict[str, list[str]] = {}
        new: dict[str, int] = {}
        for it in items:
            if not isinstance(it, dict):
                continue
            parents = it.get("parents") or []
            parent_exe = str(parents[0]) if parents else exes.get(str(it.get("ppid")), "")
            pf, cf, exe = self._proc_features(it, parent_exe)
            pids[str(it.get("pid"))] = [pf, cf, exe]
            if pf:
                new[pf] = new.get(pf, 0) + 1
            if cf:
                new[cf] = new.get(cf, 0) + 1
        self.pids = pids
        if self.polled:
            self.born = {pid: self.born.get(pid, now) for pid in pids}
        self._replace(("proc:", "pc:"), new, now, added, removed)

    # ---- network ---------------------------------------------------------------------------------
    def _sock_feature(self, s: dict[str, Any]) -> str | None:
        proto = str(s.get("proto", "tcp"))
        family = proto.rstrip("6")
        lport = int(s.get("lport") or 0)
        if s.get("state") == "listen":
            return listen_feature(proto, lport, str(s.get("laddr", "")), str(s.get("exe") or ""))
        rport = int(s.get("rport") or 0)
        raddr = str(s.get("raddr") or "")
        if not raddr:
            return None
        if f"{family}/{lport}" in self.ports or (lport < EPHEMERAL_PORT and lport < rport):
            return None  # inbound: a client of one of our services
        return dest_feature(proto, raddr, rport)

    def _track_port(self, f: str, delta: int) -> None:
        sock = f[len("listen:") :].split("@", 1)[0]
        proto, _, port = sock.partition("/")
        key = f"{proto.rstrip('6')}/{port}"
        n = self.ports.get(key, 0) + delta
        if n > 0:
            self.ports[key] = n
        else:
            self.ports.pop(key, None)

    def _net_inventory(self, items: list[Any], now: float, added: list[str], removed: list[str]) -> None:
        listeners = [s for s in items if isinstance(s, dict) and s.get("state") == "listen"]
        self.ports = {}
        open_now = {self._sock_key(s) for s in items if isinstance(s, dict) and s.get("state") != "listen"}
        self.opened = {k: t for k, t in self.opened.items() if k in open_now}
        for s in listeners:
            self._track_port(self._sock_feature(s) or "listen:?/0", +1)
        new: dict[str, int] = {}
        for s in items:
            if not isinstance(s, dict):
                continue
            f = self._sock_feature(s)
            if f is not None:
                if f not in new:
                    f = self._seen(f, s)  # the first socket of a feature names its exact instance
                new[f] = new.get(f, 0) + 1
        self._replace(("listen:", "dest:"), new, now, added, removed)

    @staticmethod
    def _sock_key(s: dict[str, Any]) -> str:
        return "|".join(str(s.get(k) or "") for k in ("proto", "laddr", "lport", "raddr", "rport"))

    def _seen(self, feature: str, sock: dict[str, Any]) -> str:
        """`feature`, noting the exact socket behind it (remote address and port, owner pid, exe, user) for the
        observation's `details`: the cohort stage names it in a finding; clones compare the feature alone."""
        details = socket_details(sock)
        if details:
            self._instances.setdefault(feature, details)
        return feature

    # ---- configuration, packages, modules --------------------------------------------------------
    _STATE_KIND = {
        Kind.CONFIG_INVENTORY: "cfg",
        Kind.CONFIG_CHANGE: "cfg",
        Kind.PACKAGE_INVENTORY: "pkg",
        Kind.PACKAGE_CHANGE: "pkg",
        Kind.MODULE_INVENTORY: "mod",
        Kind.MODULE_CHANGE: "mod",
    }

    @staticmethod
    def _state_feature(kind: str, key: str, value: str) -> str:
        if kind == "cfg":
            return config_feature(key, value)
        if kind == "pkg":
            return package_feature(key, value)
        return module_feature(key)

    def _state_inventory(self, kind: Kind, items: dict[str, Any], added: list[str], removed: list[str]) -> None:
        k = self._STATE_KIND[kind]
        old = self.state[k]
        new = {str(key): str(v) for key, v in items.items() if v is not None}
        for key, v in old.items():
            if new.get(key) != v:
                removed.append(self._state_feature(k, key, v))
        for key, v in new.items():
            if old.get(key) != v:
                added.append(self._state_feature(k, key, v))
        self.state[k] = new

    def _state_change(self, kind: Kind, p: dict[str, Any], added: list[str], removed: list[str]) -> None:
        k = self._STATE_KIND[kind]
        key = str(p.get("key"))
        cur = self.state[k]
        after = p.get("after")
        old = cur.get(key)
        new = None if after is None else str(after)
        if old == new:
            return
        if old is not None:
            removed.append(self._state_feature(k, key, old))
            del cur[key]
        if new is not None:
            cur[key] = new
            added.append(self._state_feature(k, key, new))
