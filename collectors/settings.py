"""Collector settings: env prefix HERDWATCH_COLLECTOR_, optionally a YAML file (env wins over the file).

Kafka connection settings: HERDWATCH_KAFKA_* and HERDWATCH_DEPLOYMENT (`AgentKafkaSettings`, read exactly as
contract.settings.KafkaSettings reads them, which the rest of herdwatch uses).

Both are typed settings checked when they are loaded, without pydantic: importing pydantic and
pydantic-settings costs the agent about 23 MB of its memory (measured with /proc/self/status), more than
everything else it imports together, for a dozen typed values read once. The types of the fields below are
the whole schema (`typing.get_type_hints`): a value from the environment is text (lists and mappings as
JSON), one from the YAML file or the code is taken as it is, and either is converted to the field's type or
refused with a message naming the setting, its variable and what it takes. No .env file is read: a .env in
whatever directory the agent was started from must not change its settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from contract.topics import TopicNames

ENV_PREFIX = "HERDWATCH_COLLECTOR_"
TRUE, FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}


def default_state_dir() -> Path:
    """/var/lib/herdwatch for root (the unit and images use it too), else the user's XDG state folder."""
    if os.geteuid() == 0:
        return Path("/var/lib/herdwatch")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path.home() / ".local" / "state"
    return base / "herdwatch" / "agent"


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a JSON list of {_describe(args[0])}"
    if origin is dict:
        return f"a JSON object of {_describe(args[1])}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text",
            Path: "a path"}.get(tp, str(tp))


def convert(value: Any, tp: Any, from_env: bool) -> Any:
    """`value` as type `tp` (text from the environment parsed as such); ValueError if it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            if type(None) in args:
                return None
            raise ValueError("null")
        return convert(value, next(a for a in args if a is not type(None)), from_env)
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(repr(value))
    if origin in (list, dict):
        if from_env and isinstance(value, str):
            value = json.loads(value)  # JSONDecodeError is a ValueError
        if origin is list and isinstance(value, list | tuple):
            return [convert(v, args[0], False) for v in value]
        if origin is dict and isinstance(value, dict):
            return {convert(k, args[0], False): convert(v, args[1], False) for k, v in value.items()}
        raise ValueError(repr(value))
    if tp is bool and isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if tp is bool and isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int and number and float(value).is_integer():
        return int(value)
    if tp is int and isinstance(value, str):
        return int(value.strip())
    if tp is float and number:
        return float(value)
    if tp is float and isinstance(value, str):
        return float(value.strip())
    if tp is str and isinstance(value, str):
        return value
    if tp is Path and isinstance(value, str | Path) and str(value):
        return Path(value)
    raise ValueError(repr(value))


class TypedSettings:
    """A settings class whose annotated fields are read from `env_prefix` + NAME (any case), then taken from
    the keyword arguments, which win; `env_aliases` lists other variable names of a field, first found wins."""

    env_prefix: ClassVar[str] = ""
    env_aliases: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **values: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = values.keys() - fields.keys()
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} field(s) {sorted(unknown)}; known: {sorted(fields)}")
        hints = _hints(type(self))
        env = {k.upper(): v for k, v in os.environ.items()}
        for name, f in fields.items():
            names = self.env_aliases.get(name, (self.env_prefix + name.upper(),))
            if name in values:
                raw, where, from_env = values[name], name, False
            elif (found := next((n for n in names if n in env), None)) is not None:
                raw, where, from_env = env[found], f"{found} (environment)", True
            elif f.default is not dataclasses.MISSING:
                setattr(self, name, f.default)
                continue
            else:
                setattr(self, name, f.default_factory())  # type: ignore[operator]
                continue
            try:
                setattr(self, name, convert(raw, hints[name], from_env))
            except (ValueError, TypeError):
                want = _describe(hints[name])
                raise ValueError(f"{where}: {raw!r} is not {want}; set {names[0]} (or {name} in the settings "
                                 f"file) to {want}") from None
        self.check()

    def check(self) -> None:
        """Checks beyond the types (raise ValueError naming the setting)."""

    @classmethod
    def default(cls, name: str) -> Any:
        f = {f.name: f for f in dataclasses.fields(cls)}[name]  # type: ignore[arg-type]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]

    def copy(self, **changes: Any) -> typing.Self:
        """These settings with `changes` (checked like any value given in code); the environment is not read."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return type(self)(**{**values, **changes})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


@dataclass(init=False)
class CollectorSettings(TypedSettings):
    """Everything the host agent needs besides Kafka. Intervals are in seconds."""

    env_prefix: ClassVar[str] = ENV_PREFIX

    state_dir: Path = field(default_factory=default_state_dir)
    """seq, spool and identity live here (created 0700)"""

    # Identity (explicit settings win over everything else).
    host_id: str | None = None
    image_id: str | None = None
    image_family: str | None = None
    image_file: Path = Path("/etc/herdwatch/image.json")
    """Written at image bake time: {"image_id": ..., "image_family": ...} (JSON) or KEY=VALUE lines."""
    cloud_metadata: bool = True
    cloud_metadata_timeout_s: float = 0.3
    cloud_metadata_url: str = "http://169.254.169.254"

    # Probe intervals. Each probe also sends a full inventory every *_inventory_s.
    process_interval_s: float = 0.9
    """Below 1 s, so every process that lives 1 s or more is seen, even with timer jitter."""
    process_inventory_s: float = 600.0
    network_interval_s: float = 0.9
    """A connection held 2 s is seen. Each run dumps listeners and UDP sockets through sock_diag netlink and
    lists established TCP sockets only when the kernel's counters say they changed; owners of new sockets
    only (collectors/probes/network.py). The process probe's cadence: both run in one cycle of the agent
    (one wakeup, one batch sent), which cost less than a 1 s interval beside it (0.93 against 1.02 % of a
    core for the whole idle agent, side by side in one run)."""
    network_source: Literal["auto", "netlink", "proc"] = "auto"
    """Where sockets come from: sock_diag netlink (what `ss` uses), /proc/net tables, or auto (netlink where
    the kernel allows it, else /proc/net; the mode in use is in agent.hello)."""
    network_inventory_s: float = 600.0
    login_interval_s: float = 15.0
    login_inventory_s: float = 600.0
    metrics_interval_s: float = 30.0
    config_interval_s: float = 5.0
    config_inventory_s: float = 3600.0
    package_interval_s: float = 60.0
    package_inventory_s: float = 21600.0
    module_interval_s: float = 30.0
    module_inventory_s: float = 3600.0
    heartbeat_interval_s: float = 60.0
    process_source: Literal["auto", "connector", "poll"] = "auto"
    """Where process starts and exits come from: the kernel's process events connector (every exec, as
    root in the initial namespaces), /proc polling every process_interval_s, or auto (the connector where
    it works, else polling; the mode in use is in agent.hello)."""
    exec_window_s: float = 10.0
    """Identical execs (same exe, parent exe, user, normalised command line) after the first are reported
    as one process.start with `count` per window."""
    exec_max_reads_per_s: float = 2000.0
    """At most this many execs per second are looked up in /proc; more are counted as shed."""
    exec_max_events_per_cycle: int = 500
    """At most this many new kinds of exec are reported one by one per cycle; more go into counted reports."""
    disabled_probes: list[str] = field(default_factory=list)

    # Where the probes look (tests and containers point these elsewhere).
    root: Path = Path("/")
    """Filesystem root for config, package and auth-log reads (a sidecar mounts the host at /host)."""
    proc: Path = Path("/proc")
    watch_cgroups: list[str] = field(default_factory=list)
    """cgroup v2 paths (e.g. /system.slice/nginx.service) measured apart: one metrics event each, scope
    "cgroup:<path>"."""
    cgroup_own_scope: bool = True
    """In a container or sidecar (own cgroup v2 path not "/"), also measure the agent's own cgroup."""
    auth_logs: list[Path] = field(
        default_factory=lambda: [Path("/var/log/auth.log"), Path("/var/log/secure")])
    journal: bool = True
    """Read authentication events from the systemd journal when no auth log file exists."""

    # Bad input bounds.
    max_cmdline_chars: int = 4096
    max_sockets: int = 5000
    max_auth_bytes_per_read: int = 1_000_000

    # Delivery and spool.
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    spool_fsync: Literal["always", "interval", "never"] = "always"
    spool_fsync_interval_s: float = 1.0
    spool_memory_bytes: int = 8 * 1024 * 1024
    """When the spool cannot be written (disk full), up to this many bytes wait in memory."""
    max_inflight: int = 64
    replay_rate_msgs: float = 50.0
    replay_rate_bytes: float = 2_000_000.0
    max_message_bytes: int = 900_000
    shutdown_flush_s: float = 5.0

    # Self-limits.
    cpu_budget_pct: float = 2.0
    rss_budget_mb: float = 80.0
    budget_window_s: float = 60.0
    max_degrade_level: int = 4
    malloc_arena_max: int = 2
    """C allocator arenas (glibc; collectors/allocator.py): fewer keep less memory in a mostly idle agent's
    threads; 0 leaves the allocator's default (8 per core)."""

    # Probe time budgets: a probe still running after its budget is reported once (probe_stuck) and not
    # started again until that run returns; the other probes go on.
    probe_timeout_s: float = 10.0
    probe_timeouts: dict[str, float] = field(default_factory=lambda: {"packages": 120.0})
    """Per-probe budgets overriding probe_timeout_s (rpm -qa can take a minute on a big host)."""

    # Redaction of secrets in command lines (see collectors/redact.py); these regexes add to the built-in
    # rules. A pattern's first group is masked, or the whole match when it has no group.
    redact_patterns: list[str] = field(default_factory=list)

    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"

    host_key: Path | None = None
    """The Ed25519 host key that signs every batch (default <state_dir>/host.key; created 0600 at first start,
    never overwritten)."""

    @property
    def host_key_path(self) -> Path:
        return self.host_key if self.host_key is not None else self.state_dir / "host.key"

    def check(self) -> None:
        # Relative paths would depend on the directory the agent was started from: made absolute now.
        for name in ("state_dir", "root", "proc", "image_file", "host_key"):
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                setattr(self, name, Path(os.path.abspath(value)))
        for pattern in self.redact_patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"redact_patterns: {pattern!r} is not a valid regular expression: {e}") from e


def load_settings(path: Path | None = None, **overrides: Any) -> CollectorSettings:
    """Settings from env (HERDWATCH_COLLECTOR_*), then a YAML file for anything env leaves unset,
    then explicit overrides (command-line flags), which win."""
    values: dict[str, Any] = {}
    if path is not None:
        import yaml  # only with a settings file (~1 MB of the agent's memory otherwise)

        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ValueError(f"cannot read collector settings file {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ValueError(f"collector settings file {path} is not valid YAML ({e}); fix it or leave out "
                             f"--config") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping of collector settings (e.g. state_dir: /x)")
        section = loaded.get("collector", loaded)
        known = {f.name for f in dataclasses.fields(CollectorSettings)}
        env = {k.upper() for k in os.environ}
        for key, value in section.items():
            if not isinstance(key, str) or key not in known:
                continue  # e.g. another program's section of a shared file
            if f"{ENV_PREFIX}{key.upper()}" not in env:
                values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CollectorSettings(**values)


KAFKA_PREFIX = "HERDWATCH_KAFKA_"
TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


@dataclass(init=False)
class AgentKafkaSettings(TypedSettings):
    """How the agent reaches Kafka: the variables of contract.settings.KafkaSettings (HERDWATCH_KAFKA_*,
    HERDWATCH_DEPLOYMENT), read the same way, with its `topics` and `confluent_config()` (a test holds the
    two to the same results), without pydantic and without a .env file."""

    env_prefix: ClassVar[str] = KAFKA_PREFIX
    env_aliases: ClassVar[dict[str, tuple[str, ...]]] = {
        "topic_prefix": ("HERDWATCH_DEPLOYMENT", "HERDWATCH_KAFKA_TOPIC_PREFIX")}

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "herdwatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def check(self) -> None:
        if not TOPIC_PREFIX.match(self.topic_prefix):
            raise ValueError(f"deployment name {self.topic_prefix!r}: letters, digits and _ only, not starting "
                             f"with _; set HERDWATCH_DEPLOYMENT to such a name")

    @property
    def deployment(self) -> str:
        return self.topic_prefix

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def confluent_config(self, quiet: bool = True) -> dict[str, Any]:
        """librdkafka properties, as contract.settings.KafkaSettings.confluent_config makes them."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap,
                                "security.protocol": self.security_protocol.lower()}
        if quiet:
            from contract.observability import kafka_client_logging

            conf.update(kafka_client_logging(self.bootstrap))
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password or ""
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        return conf
