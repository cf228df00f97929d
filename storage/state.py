"""A host's state at any past moment, rebuilt from periodic snapshots plus change events.

The collector sends a full snapshot now and then (`process.inventory`, `net.inventory`,
`config.inventory`, ...) and change events in between (`process.start`/`exit`, `net.open`/`close`,
`*.change`). The state at time T is the latest snapshot at or before T, with every change after it (up to
T) applied: for each item (a pid, a socket, a config key) the last row wins, ordered by (time, seq);
items whose last row is an exit/close/removal are gone. Empty snapshots are stored as one empty row, so
"nothing was running" is remembered too.

Each query takes bound parameters {host:String} and {at:DateTime64(6, 'UTC')}; the same SQL is installed
as parameterised views (`SELECT * FROM state_processes(host = 'i-0abc', at = '2026-03-01 12:00:00')`).
"""

from __future__ import annotations

from dataclasses import dataclass

AT = "{at:DateTime64(6, 'UTC')}"
HOST = "{host:String}"


def _snapshot(table: str, condition: str) -> str:
    return (f"(SELECT max(time) FROM {table} WHERE host_id = {HOST} AND {condition} "
            f"AND time <= {AT})")


PROCESSES = f"""
WITH {_snapshot('processes', "kind = 'process.inventory'")} AS snap
SELECT pid,
       argMax(ppid, (time, seq)) AS ppid,
       argMax(exe, (time, seq)) AS exe,
       argMax(user, (time, seq)) AS user,
       argMax(cmdline, (time, seq)) AS cmdline,
       toDateTime64(argMax(start_time, (time, seq)), 0, 'UTC') AS started,
       argMax(kind, (time, seq)) AS last_kind
FROM processes
WHERE host_id = {HOST} AND time >= snap AND time <= {AT} AND pid != 0
GROUP BY pid
HAVING last_kind != 'process.exit'
ORDER BY pid"""
"""Processes running on the host at `at`."""

SOCKETS = f"""
WITH {_snapshot('network', "kind = 'net.inventory'")} AS snap
SELECT argMax(state, (time, seq)) AS state, proto, laddr, lport, raddr, rport,
       argMax(pid, (time, seq)) AS pid, argMax(exe, (time, seq)) AS exe,
       argMax(kind, (time, seq)) AS last_kind, max(time) AS as_of
FROM network
WHERE host_id = {HOST} AND time >= snap AND time <= {AT} AND proto != ''
GROUP BY proto, laddr, lport, raddr, rport
HAVING last_kind != 'net.close'
ORDER BY state DESC, lport, raddr, rport"""
"""Listening sockets (state = 'listen') and open connections (state = 'established') at `at`."""

CONFIG = f"""
WITH {_snapshot('config', "family = {family:String} AND snapshot = 1")} AS snap
SELECT key, argMax(tuple(value), (time, seq)).1 AS value, max(time) AS as_of
FROM config
WHERE host_id = {HOST} AND family = {{family:String}} AND time >= snap AND time <= {AT} AND key != ''
GROUP BY key
HAVING value IS NOT NULL
ORDER BY key"""
"""Configuration values, package versions or loaded modules (family = config | package | module)."""

LOGINS = f"""
SELECT user, terminal, source AS from_host, toDateTime64(started, 0, 'UTC') AS started
FROM logins
WHERE host_id = {HOST} AND kind = 'login.inventory' AND user != ''
  AND time = {_snapshot('logins', "kind = 'login.inventory'")}
ORDER BY user, terminal"""
"""Users logged in at `at` (from the latest login snapshot)."""

HOST_ROW = f"""
SELECT host_id, image_id, image_family, first_seen, last_seen, gone_at, gone_reason, boot_ids, tags,
       events,
       first_seen <= {AT} AND (gone_at IS NULL OR gone_at >= {AT}) AS alive_at
FROM host_lifecycle WHERE host_id = {HOST}"""
"""The host's lifecycle row (first/last seen, gone, image, cohort, tags) and whether it was alive."""


@dataclass(frozen=True)
class StateSection:
    name: str
    title: str
    sql: str
    extra_params: tuple[tuple[str, str], ...] = ()


SECTIONS: tuple[StateSection, ...] = (
    StateSection("processes", "running processes", PROCESSES),
    StateSection("sockets", "listening ports and open connections", SOCKETS),
    StateSection("config", "configuration", CONFIG, (("family", "config"),)),
    StateSection("packages", "packages", CONFIG, (("family", "package"),)),
    StateSection("modules", "kernel modules", CONFIG, (("family", "module"),)),
    StateSection("logins", "logged-in users", LOGINS),
)

VIEWS = {"state_processes": PROCESSES, "state_sockets": SOCKETS, "state_config": CONFIG,
         "state_logins": LOGINS, "state_host": HOST_ROW}


def view_statements() -> list[str]:
    return [f"CREATE VIEW IF NOT EXISTS {name} AS {sql}" for name, sql in VIEWS.items()]
