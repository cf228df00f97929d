"""The ClickHouse schema, as numbered migrations applied once each (recorded in `schema_migrations`).

Every statement is idempotent (IF NOT EXISTS), so re-running a migration that was interrupted half way
is safe. Add a new migration at the end of MIGRATIONS; never edit one that has shipped.
Design and the reasons for the sorting keys, partitions and codecs: docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from storage.settings import TTL_TABLES, SinkSettings

T = "DateTime64(6, 'UTC')"
ZERO_TIME = "toDateTime64(0, 6, 'UTC')"

# --- raw events -------------------------------------------------------------------------------------
EVENTS = f"""
CREATE TABLE IF NOT EXISTS events (
    event_id UUID,
    kind LowCardinality(String),
    time {T} CODEC(Delta, ZSTD(1)),
    host_id String,
    boot_id String,
    image_id LowCardinality(String),
    image_family LowCardinality(String),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    tags Map(LowCardinality(String), String),
    payload String CODEC(ZSTD(3)),
    schema_version UInt8,
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX kafka_offset_idx kafka_offset TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, time, event_id)
{{ttl}}"""
"""ENVELOPE_FIELDS of contract.events map 1:1 onto these columns (checked by a test)."""

# --- typed tables per event family, fed by materialized views from `events` -------------------------
PROCESSES = f"""
CREATE TABLE IF NOT EXISTS processes (
    host_id String,
    time {T} CODEC(Delta, ZSTD(1)),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    kind LowCardinality(String),
    image_id LowCardinality(String),
    pid Int64,
    ppid Int64,
    exe String,
    name LowCardinality(String),
    cmdline String CODEC(ZSTD(3)),
    user LowCardinality(String),
    start_time Float64,
    parents Array(String),
    event_id UUID
) ENGINE = MergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, time, seq)
{{ttl}}"""

PROCESSES_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS processes_mv TO processes AS
SELECT host_id, time, seq, kind, image_id,
       JSONExtractInt(item, 'pid') AS pid, JSONExtractInt(item, 'ppid') AS ppid,
       JSONExtractString(item, 'exe') AS exe, JSONExtractString(item, 'name') AS name,
       JSONExtractString(item, 'cmdline') AS cmdline, JSONExtractString(item, 'user') AS user,
       JSONExtractFloat(item, 'start_time') AS start_time,
       JSONExtract(item, 'parents', 'Array(String)') AS parents, event_id
FROM events
LEFT ARRAY JOIN if(kind = 'process.inventory', JSONExtractArrayRaw(payload, 'items'), [payload]) AS item
WHERE kind IN ('process.inventory', 'process.start', 'process.exit')"""

PROCESS_EXE_HOSTS = f"""
CREATE TABLE IF NOT EXISTS process_exe_hosts (
    exe String,
    day Date,
    host_id String,
    image_id SimpleAggregateFunction(any, LowCardinality(String)),
    first_seen SimpleAggregateFunction(min, {T}),
    last_seen SimpleAggregateFunction(max, {T}),
    sightings SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toMonday(day)
ORDER BY (exe, day, host_id)
{{ttl}}"""

PROCESS_EXE_HOSTS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS process_exe_hosts_mv TO process_exe_hosts AS
SELECT exe, toDate(time) AS day, host_id, any(image_id) AS image_id, min(time) AS first_seen,
       max(time) AS last_seen, count() AS sightings
FROM processes WHERE kind != 'process.exit' AND exe != ''
GROUP BY exe, day, host_id"""

NETWORK = f"""
CREATE TABLE IF NOT EXISTS network (
    host_id String,
    time {T} CODEC(Delta, ZSTD(1)),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    kind LowCardinality(String),
    image_id LowCardinality(String),
    state LowCardinality(String),
    proto LowCardinality(String),
    laddr String,
    lport Int32,
    raddr String,
    rport Int32,
    pid Int64,
    exe String,
    event_id UUID
) ENGINE = MergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, time, seq)
{{ttl}}"""

NETWORK_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS network_mv TO network AS
SELECT host_id, time, seq, kind, image_id,
       JSONExtractString(item, 'state') AS state, JSONExtractString(item, 'proto') AS proto,
       JSONExtractString(item, 'laddr') AS laddr, toInt32(JSONExtractInt(item, 'lport')) AS lport,
       JSONExtractString(item, 'raddr') AS raddr, toInt32(JSONExtractInt(item, 'rport')) AS rport,
       JSONExtractInt(item, 'pid') AS pid, JSONExtractString(item, 'exe') AS exe, event_id
FROM events
LEFT ARRAY JOIN if(kind = 'net.inventory', JSONExtractArrayRaw(payload, 'items'), [payload]) AS item
WHERE kind IN ('net.inventory', 'net.open', 'net.close')"""

NETWORK_REMOTE_HOSTS = f"""
CREATE TABLE IF NOT EXISTS network_remote_hosts (
    raddr String,
    rport Int32,
    day Date,
    host_id String,
    image_id SimpleAggregateFunction(any, LowCardinality(String)),
    first_seen SimpleAggregateFunction(min, {T}),
    last_seen SimpleAggregateFunction(max, {T}),
    sightings SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toMonday(day)
ORDER BY (raddr, rport, day, host_id)
{{ttl}}"""

NETWORK_REMOTE_HOSTS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS network_remote_hosts_mv TO network_remote_hosts AS
SELECT raddr, rport, toDate(time) AS day, host_id, any(image_id) AS image_id, min(time) AS first_seen,
       max(time) AS last_seen, count() AS sightings
FROM network WHERE raddr != '' AND kind != 'net.close'
GROUP BY raddr, rport, day, host_id"""

LOGINS = f"""
CREATE TABLE IF NOT EXISTS logins (
    host_id String,
    time {T} CODEC(Delta, ZSTD(1)),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    kind LowCardinality(String),
    image_id LowCardinality(String),
    user LowCardinality(String),
    terminal String,
    source String,
    started Float64,
    outcome LowCardinality(String),
    method LowCardinality(String),
    service LowCardinality(String),
    event_id UUID
) ENGINE = MergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, time, seq)
{{ttl}}"""

LOGINS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS logins_mv TO logins AS
SELECT host_id, time, seq, kind, image_id,
       JSONExtractString(item, 'user') AS user, JSONExtractString(item, 'terminal') AS terminal,
       if(kind = 'auth.attempt', JSONExtractString(item, 'source'), JSONExtractString(item, 'host')) AS source,
       JSONExtractFloat(item, 'started') AS started, JSONExtractString(item, 'outcome') AS outcome,
       JSONExtractString(item, 'method') AS method, JSONExtractString(item, 'service') AS service, event_id
FROM events
LEFT ARRAY JOIN if(kind = 'login.inventory', JSONExtractArrayRaw(payload, 'items'), [payload]) AS item
WHERE kind IN ('login.inventory', 'auth.attempt')"""

METRICS = f"""
CREATE TABLE IF NOT EXISTS metrics (
    host_id String,
    name LowCardinality(String),
    time {T} CODEC(Delta, ZSTD(1)),
    value Float64 CODEC(Gorilla, ZSTD(1)),
    image_id LowCardinality(String),
    image_family LowCardinality(String)
) ENGINE = MergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, name, time)
{{ttl}}"""

METRICS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_mv TO metrics AS
SELECT host_id, kv.1 AS name, time, kv.2 AS value, image_id, image_family
FROM events
ARRAY JOIN JSONExtractKeysAndValues(payload, 'values', 'Float64') AS kv
WHERE kind = 'metrics'"""

CONFIG = f"""
CREATE TABLE IF NOT EXISTS config (
    host_id String,
    family LowCardinality(String),
    key String,
    time {T} CODEC(Delta, ZSTD(1)),
    seq UInt64,
    kind LowCardinality(String),
    snapshot UInt8,
    value Nullable(String),
    before Nullable(String),
    image_id LowCardinality(String),
    event_id UUID
) ENGINE = MergeTree
PARTITION BY toMonday(time)
ORDER BY (host_id, family, key, time, seq)
{{ttl}}"""
"""Configuration, packages and kernel modules: `family` is config | package | module."""

_VALUE_OF_RAW = "if(JSONType(kv.2) = 'String', JSONExtractString(kv.2), kv.2)"
CONFIG_MV = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS config_mv TO config AS
SELECT host_id, splitByChar('.', kind)[1] AS family, kv.1 AS key, time, seq, kind,
       toUInt8(endsWith(kind, '.inventory')) AS snapshot,
       if(snapshot = 1, CAST({_VALUE_OF_RAW}, 'Nullable(String)'),
          JSONExtract(payload, 'after', 'Nullable(String)')) AS value,
       if(snapshot = 1, CAST(NULL, 'Nullable(String)'),
          JSONExtract(payload, 'before', 'Nullable(String)')) AS before,
       image_id, event_id
FROM events
LEFT ARRAY JOIN if(endsWith(kind, '.inventory'), JSONExtractKeysAndValuesRaw(payload, 'items'),
              [(JSONExtractString(payload, 'key'), '')]) AS kv
WHERE kind IN ('config.inventory', 'config.change', 'package.inventory', 'package.change',
               'module.inventory', 'module.change')"""

# --- hosts: lifecycle from telemetry (first/last seen) and from the lifecycle topic ------------------
LIFECYCLE = f"""
CREATE TABLE IF NOT EXISTS lifecycle (
    host_id String,
    status LowCardinality(String),
    time {T},
    image_id LowCardinality(String),
    image_family LowCardinality(String),
    first_seen Nullable({T}),
    last_seen Nullable({T}),
    reason String,
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (host_id, time, status)
{{ttl}}"""

HOSTS = f"""
CREATE TABLE IF NOT EXISTS hosts (
    host_id String,
    image_id SimpleAggregateFunction(max, LowCardinality(String)),
    image_family SimpleAggregateFunction(max, LowCardinality(String)),
    first_seen SimpleAggregateFunction(min, {T}),
    last_seen SimpleAggregateFunction(max, {T}),
    gone_at SimpleAggregateFunction(max, {T}),
    gone_reason SimpleAggregateFunction(max, String),
    boot_ids SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    tags SimpleAggregateFunction(anyLast, Map(String, String)),
    events SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
ORDER BY host_id"""
"""One row per host after merges (read it through the `host_lifecycle` view). gone_at 0 = not gone."""

HOSTS_FROM_EVENTS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS hosts_from_events_mv TO hosts AS
SELECT host_id, max(image_id) AS image_id, max(image_family) AS image_family,
       min(time) AS first_seen, max(time) AS last_seen,
       maxIf(time, kind = 'agent.goodbye') AS gone_at,
       maxIf(JSONExtractString(payload, 'reason'), kind = 'agent.goodbye') AS gone_reason,
       groupUniqArray(boot_id) AS boot_ids,
       anyLast(CAST(tags, 'Map(String, String)')) AS tags,
       count() AS events
FROM events GROUP BY host_id"""

HOSTS_FROM_LIFECYCLE_MV = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS hosts_from_lifecycle_mv TO hosts AS
SELECT host_id, image_id, image_family,
       coalesce(first_seen, time) AS first_seen, coalesce(last_seen, time) AS last_seen,
       if(status = 'gone', time, {ZERO_TIME}) AS gone_at, if(status = 'gone', reason, '') AS gone_reason,
       CAST([], 'Array(String)') AS boot_ids, CAST(map(), 'Map(String, String)') AS tags,
       toUInt64(0) AS events
FROM lifecycle"""

HOST_LIFECYCLE_VIEW = f"""
CREATE VIEW IF NOT EXISTS host_lifecycle AS
SELECT host_id, max(image_id) AS image_id, max(image_family) AS image_family,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       nullIf(max(gone_at), {ZERO_TIME}) AS gone_at, max(gone_reason) AS gone_reason,
       groupUniqArrayArray(boot_ids) AS boot_ids, anyLast(tags) AS tags, sum(events) AS events
FROM hosts GROUP BY host_id"""

# --- findings and rollouts from the stream workers ---------------------------------------------------
ANOMALIES = f"""
CREATE TABLE IF NOT EXISTS anomalies (
    finding_id String,
    kind LowCardinality(String),
    host_id String,
    image_id LowCardinality(String),
    image_family LowCardinality(String),
    time {T},
    score Float64,
    severity LowCardinality(String),
    subject String,
    explanation String,
    details String CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, time, finding_id)
{{ttl}}"""

ROLLOUTS = f"""
CREATE TABLE IF NOT EXISTS rollouts (
    image_family LowCardinality(String),
    time {T},
    status LowCardinality(String),
    old_image LowCardinality(String),
    new_image LowCardinality(String),
    share Float64,
    explanation String,
    diff String CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (image_family, time, status, new_image)
{{ttl}}"""

def ttl_clause(table: str, settings: SinkSettings, column: str = "time") -> str:
    days = settings.ttl_days(table)
    expr = f"toDateTime({column})" if column == "time" else column
    return f"TTL {expr} + toIntervalDay({days})" if days else ""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[SinkSettings], list[str]]


def _v1(s: SinkSettings) -> list[str]:
    def table(sql: str, ttl_of: str, column: str = "time") -> str:
        """`ttl_of`: the table whose HERDWATCH_SINK_TTL_<TABLE>_DAYS setting applies."""
        return sql.format(ttl=ttl_clause(ttl_of, s, column))

    return [
        table(EVENTS, "events"),
        table(PROCESSES, "processes"), PROCESSES_MV,
        table(PROCESS_EXE_HOSTS, "processes", "day"), PROCESS_EXE_HOSTS_MV,
        table(NETWORK, "network"), NETWORK_MV,
        table(NETWORK_REMOTE_HOSTS, "network", "day"), NETWORK_REMOTE_HOSTS_MV,
        table(LOGINS, "logins"), LOGINS_MV,
        table(METRICS, "metrics"), METRICS_MV,
        table(CONFIG, "config"), CONFIG_MV,
        table(LIFECYCLE, "lifecycle"), HOSTS, HOSTS_FROM_EVENTS_MV, HOSTS_FROM_LIFECYCLE_MV,
        HOST_LIFECYCLE_VIEW,
        table(ANOMALIES, "anomalies"), table(ROLLOUTS, "rollouts"),
    ]


MIGRATIONS: list[Migration] = [
    Migration(1, "raw events, typed family tables, hosts, anomalies, rollouts", _v1),
]


def _state_views(s: SinkSettings) -> list[str]:
    from storage import state

    return state.view_statements()


MIGRATIONS.append(Migration(2, "point-in-time state views (parameterised)", _state_views))

HOST_KEYS = """
CREATE TABLE IF NOT EXISTS host_keys (
    host_id String,
    public_key String,
    fingerprint String,
    pinned_at DateTime64(6, 'UTC'),
    kafka_partition UInt16,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(pinned_at)
ORDER BY host_id"""
"""Each host's pinned Ed25519 key (base64 of the raw key), trust on first use (docs/security.md, "Host
identity"). The sink reads the pins when partitions are assigned and adds a row when it pins a key, before it
commits the message that pinned it; an operator's re-pin adds a later row, which wins (argMax on pinned_at)."""

MIGRATIONS.append(Migration(3, "host key pins", lambda s: [HOST_KEYS]))

MIGRATIONS.append(Migration(4, "lifecycle: events written but never received at a timeout", lambda s: [
    "ALTER TABLE lifecycle ADD COLUMN IF NOT EXISTS missing_events UInt64 DEFAULT 0 AFTER reason"]))

METRICS_SCOPED_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_mv TO metrics AS
SELECT host_id, kv.1 AS name, if(JSONHas(payload, 'scope'), JSONExtractString(payload, 'scope'), 'host') AS scope,
       time, kv.2 AS value, image_id, image_family
FROM events
ARRAY JOIN JSONExtractKeysAndValues(payload, 'values', 'Float64') AS kv
WHERE kind = 'metrics'"""
"""A metrics event's scope (docs/contract.md, "Metrics scope") beside each value: `host`, `machine` or
`cgroup:<path>`, so a container's or the machine's cpu_pct is never read as the host's own."""

MIGRATIONS.append(Migration(5, "metrics: the scope of each value (host, machine, cgroup)", lambda s: [
    "ALTER TABLE metrics ADD COLUMN IF NOT EXISTS scope LowCardinality(String) DEFAULT 'host' AFTER name",
    "DROP VIEW IF EXISTS metrics_mv", METRICS_SCOPED_MV]))


def applied_versions(client: Client) -> set[int]:
    client.command("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version UInt32, description String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree ORDER BY version""")
    return {int(r[0]) for r in client.query("SELECT version FROM schema_migrations").result_rows}


def migrate(client: Client, settings: SinkSettings | None = None) -> list[int]:
    """Apply every migration not applied yet; returns the versions applied now. Safe to call often."""
    settings = settings or SinkSettings()
    done = applied_versions(client)
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for statement in m.statements(settings):
            client.command(statement)
        client.insert("schema_migrations", [[m.version, m.description]],
                      column_names=["version", "description"])
        applied.append(m.version)
    apply_ttl(client, settings)
    return applied


def apply_ttl(client: Client, settings: SinkSettings) -> None:
    """Bring each table's TTL in line with the settings (only tables whose TTL differs are altered)."""
    rows = client.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()")
    engines: dict[str, str] = {str(name): str(engine) for name, engine in rows.result_rows}
    for table, column in [*((t, "time") for t in TTL_TABLES),
                          ("process_exe_hosts", "day"), ("network_remote_hosts", "day")]:
        if table not in engines:
            continue
        ttl_of = {"process_exe_hosts": "processes", "network_remote_hosts": "network"}.get(table, table)
        days = settings.ttl_days(ttl_of)
        has = " TTL " in engines[table]
        wanted = f"toIntervalDay({days})"
        if days and (not has or wanted not in engines[table]):
            client.command(f"ALTER TABLE {table} MODIFY {ttl_clause(ttl_of, settings, column)}",
                           settings={"materialize_ttl_after_modify": 0})
        elif not days and has:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
