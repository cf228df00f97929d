"""Host compromises: what each injected scenario changes on its host, and how it is undone.

Each attack is a small class with `begin(host)` and `end(host)`; the changes go through the host's own
state (processes, sockets, configuration, metric effects), so they reach the telemetry exactly like the
real collector would see them. Parameters come from the scenario file (e.g. `exe`, `port`, `factor`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from simulator.host import SimHost


class Attack:
    """Base: an attack with its parameters; subclasses change the host in begin/end."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.state: dict[str, Any] = {}

    def begin(self, host: SimHost) -> None:
        raise NotImplementedError

    def end(self, host: SimHost) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What was injected, for the ground truth file."""
        return dict(self.params)


def _effect(host: SimHost, table: str, name: str, value: float, undo: bool = False) -> None:
    d = host.effects.add if table == "add" else host.effects.mul
    if table == "add":
        d[name] = d.get(name, 0.0) + (-value if undo else value)
    else:
        d[name] = d.get(name, 1.0) / value if undo else d.get(name, 1.0) * value


class Cryptominer(Attack):
    """A miner dropped in a temp dir: a new process, a pool connection, CPU and load pinned."""

    def begin(self, host: SimHost) -> None:
        p = self.params
        proc = host.start_process(
            {
                "exe": p.get("exe", "/tmp/.X11-unix/.rsync/xmrig"),
                "user": p.get("user", "www-data"),
                "cmdline": p.get(
                    "cmdline",
                    "./xmrig -o stratum+tcp://pool.hashvault.example:3333 -u 4AcBf9sk1t2Q --donate-level 1 -B",
                ),
                "name": "xmrig",
            }
        )
        sock = host.connect(p.get("pool_ip", "185.212.47.61"), int(p.get("pool_port", 3333)), proc)
        self.state.update(proc=proc, sock=sock)
        _effect(host, "add", "cpu_pct", float(p.get("cpu_add", 65.0)))
        _effect(host, "add", "load1", float(host.image.cores))

    def end(self, host: SimHost) -> None:
        host.disconnect(self.state["sock"])
        host.exit_process(self.state["proc"]["pid"])
        _effect(host, "add", "cpu_pct", float(self.params.get("cpu_add", 65.0)), undo=True)
        _effect(host, "add", "load1", float(host.image.cores), undo=True)


class ReverseShell(Attack):
    """An interactive shell spawned by the service process, connected out to the attacker."""

    def begin(self, host: SimHost) -> None:
        p = self.params
        parent = p.get("parent") or _main_service(host)
        proc = host.start_process(
            {
                "exe": p.get("exe", "/usr/bin/bash"),
                "cmdline": p.get("cmdline", "bash -i"),
                "user": p.get("user") or _user_of(host, parent),
                "name": "bash",
            },
            parent_exe=parent,
        )
        sock = host.connect(p.get("attacker_ip", "91.215.85.17"), int(p.get("port", 4444)), proc)
        self.state.update(proc=proc, sock=sock)

    def end(self, host: SimHost) -> None:
        host.disconnect(self.state["sock"])
        host.exit_process(self.state["proc"]["pid"])


class BackdoorPort(Attack):
    """A new listener: a bind shell on an unusual port."""

    def begin(self, host: SimHost) -> None:
        p = self.params
        exe = p.get("exe", "/usr/bin/nc.openbsd")
        port = int(p.get("port", 31337))
        proc = host.start_process(
            {
                "exe": exe,
                "cmdline": p.get("cmdline", f"nc -lk -p {port} -e /bin/sh"),
                "user": p.get("user", "root"),
                "name": exe.rsplit("/", 1)[-1][:15],
            }
        )
        host.open_listen({"proto": "tcp", "port": port, "exe": exe})
        self.state.update(proc=proc, port=port)

    def end(self, host: SimHost) -> None:
        host.close_listen(self.state["port"])
        host.exit_process(self.state["proc"]["pid"])


class SshdTamper(Attack):
    """sshd_config edited to allow root and password logins (the file hash changes too)."""

    CHANGES = {"sshd.permitrootlogin": "yes", "sshd.passwordauthentication": "yes"}

    def begin(self, host: SimHost) -> None:
        self.state["before"] = {k: host.config.get(k) for k in (*self.CHANGES, _SSHD_FILE)}
        for key, value in {**self.CHANGES, **self.params.get("set", {})}.items():
            host.set_config(key, str(value))
        host.set_config(_SSHD_FILE, _sha(f"{host.host_id}:{self.name}:sshd_config"))

    def end(self, host: SimHost) -> None:
        for key, value in self.state["before"].items():
            host.set_config(key, value)


class AuthorizedKey(Attack):
    """An attacker's public key appended to a user's authorized_keys."""

    def begin(self, host: SimHost) -> None:
        key = f"authorized_keys:{self.params.get('user', 'root')}"
        self.state.update(key=key, before=host.config.get(key))
        host.set_config(key, _sha(f"{host.host_id}:{self.name}:{key}"))

    def end(self, host: SimHost) -> None:
        host.set_config(self.state["key"], self.state["before"])


class Exfiltration(Attack):
    """Data leaving the host: bytes out (and disk reads) far above its peers, no new software."""

    def begin(self, host: SimHost) -> None:
        _effect(host, "mul", "net_bytes_out", float(self.params.get("factor", 20.0)))
        _effect(host, "mul", "disk_read_bytes", float(self.params.get("disk_factor", 4.0)))

    def end(self, host: SimHost) -> None:
        _effect(host, "mul", "net_bytes_out", float(self.params.get("factor", 20.0)), undo=True)
        _effect(host, "mul", "disk_read_bytes", float(self.params.get("disk_factor", 4.0)), undo=True)


class SshBreakIn(Attack):
    """A password guessed over SSH: a successful login, an interactive session, and tools installed
    with the package manager (by default netcat)."""

    def begin(self, host: SimHost) -> None:
        p = self.params
        user, source = str(p.get("user", "root")), str(p.get("source", "198.51.100.7"))
        host.auth_attempt(user, "success", source, str(p.get("method", "password")))
        session = host.login(user, str(p.get("terminal", "pts/0")), source)
        packages = {str(k): str(v) for k, v in p.get("install", {"netcat": "1.10-47"}).items()}
        self.state.update(session=session, before={name: host.packages.get(name) for name in packages})
        for name, version in packages.items():
            host.set_package(name, version)

    def end(self, host: SimHost) -> None:
        host.logout(self.state["session"])
        for name, version in self.state["before"].items():
            host.set_package(name, version)


class KernelModule(Attack):
    """A rootkit's kernel module loaded (and unloaded when the attack ends)."""

    def begin(self, host: SimHost) -> None:
        host.set_module(str(self.params.get("module", "diamorphine")), "loaded")

    def end(self, host: SimHost) -> None:
        host.set_module(str(self.params.get("module", "diamorphine")), None)


ATTACKS: dict[str, type[Attack]] = {
    "cryptominer": Cryptominer,
    "reverse_shell": ReverseShell,
    "backdoor_port": BackdoorPort,
    "sshd_tamper": SshdTamper,
    "authorized_key": AuthorizedKey,
    "exfiltration": Exfiltration,
    "ssh_break_in": SshBreakIn,
    "kernel_module": KernelModule,
}

_SSHD_FILE = "file.sha256:/etc/ssh/sshd_config"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _main_service(host: SimHost) -> str:
    """The exe of the host's main service (the role's `service`), e.g. the app server's java."""
    return host.image.service


def _user_of(host: SimHost, exe: str) -> str:
    for p in host.procs.values():
        if p["exe"] == exe:
            return str(p["user"])
    return "root"
