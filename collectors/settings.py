"""Collector settings: env prefix HERDWATCH_COLLECTOR_, optionally a YAML file (env wins over the file).

Kafka connection settings come from contract.settings.KafkaSettings (HERDWATCH_KAFKA_...).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HERDWATCH_COLLECTOR_"


def default_state_dir() -> Path:
    """/var/lib/herdwatch for root (the unit and images use it too), else the user's XDG state folder."""
    if os.geteuid() == 0:
        return Path("/var/lib/herdwatch")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path.home() / ".local" / "state"
    return base / "herdwatch" / "agent"


class CollectorSettings(BaseSettings):
    """Everything the host agent needs besides Kafka. Intervals are in seconds."""

    # No env_file: a .env in whatever directory the agent was started from must not change its settings.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    state_dir: Path = Field(default_factory=default_state_dir,
                            description="seq, spool and identity live here (created 0700)")

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
    network_interval_s: float = 1.0
    """Reads /proc/net tables (cheap; owners of new sockets only): a connection held 2 s is seen."""
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
    disabled_probes: list[str] = Field(default_factory=list)

    # Where the probes look (tests and containers point these elsewhere).
    root: Path = Path("/")
    """Filesystem root for config, package and auth-log reads (a sidecar mounts the host at /host)."""
    proc: Path = Path("/proc")
    watch_cgroups: list[str] = Field(default_factory=list)
    """cgroup v2 paths (e.g. /system.slice/nginx.service) measured apart: one metrics event each, scope
    "cgroup:<path>"."""
    cgroup_own_scope: bool = True
    """In a container or sidecar (own cgroup v2 path not "/"), also measure the agent's own cgroup."""
    auth_logs: list[Path] = Field(
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

    # Probe time budgets: a probe still running after its budget is reported once (probe_stuck) and not
    # started again until that run returns; the other probes go on.
    probe_timeout_s: float = 10.0
    probe_timeouts: dict[str, float] = Field(default_factory=lambda: {"packages": 120.0})
    """Per-probe budgets overriding probe_timeout_s (rpm -qa can take a minute on a big host)."""

    # Redaction of secrets in command lines (see collectors/redact.py); these regexes add to the built-in
    # rules. A pattern's first group is masked, or the whole match when it has no group.
    redact_patterns: list[str] = Field(default_factory=list)

    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"

    host_key: Path | None = None
    """The Ed25519 host key that signs every batch (default <state_dir>/host.key; created 0600 at first start,
    never overwritten)."""

    @property
    def host_key_path(self) -> Path:
        return self.host_key if self.host_key is not None else self.state_dir / "host.key"

    @field_validator("state_dir", "root", "proc", "image_file", "host_key")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative paths would depend on the directory the agent was started from: made absolute now."""
        return value if value is None or value.is_absolute() else Path(os.path.abspath(value))

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"redact_patterns: {pattern!r} is not a valid regular expression: {e}") from e
        return value


def load_settings(path: Path | None = None, **overrides: Any) -> CollectorSettings:
    """Settings from env (HERDWATCH_COLLECTOR_*), then a YAML file for anything env leaves unset,
    then explicit overrides (command-line flags), which win."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ValueError(f"cannot read collector settings file {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping of collector settings (e.g. state_dir: /x)")
        section = loaded.get("collector", loaded)
        for key, value in section.items():
            if f"{ENV_PREFIX}{key.upper()}" not in os.environ:
                values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CollectorSettings(**values)
