"""The named forensic queries, in one place. Each is plain ClickHouse SQL with bound parameters
({name:Type}), so a value typed on the command line can never change the query. docs/forensics.md shows
every one with an example and its output; `herdwatch sql` runs any of them by hand.

Run one from Python:  run_named(open_query_client(), "hosts_ran_exe", exe="/tmp/.x/xmrig", ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import state
from storage.query_client import QueryClient, QueryResult

T = "DateTime64(6, 'UTC')"


@dataclass(frozen=True)
class NamedQuery:
    name: str
    question: str
    sql: str
    params: tuple[str, ...]


def _q(name: str, question: str, sql: str, *params: str) -> NamedQuery:
    return NamedQuery(name, question, sql.strip(), params)


QUERIES: dict[str, NamedQuery] = {q.name: q for q in [
    _q("hosts_ran_exe", "Which hosts ran executable X between two times?", f"""
SELECT host_id, any(image_id) AS image_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       sum(sightings) AS sightings
FROM process_exe_hosts
WHERE exe = {{exe:String}} AND day BETWEEN toDate({{since:{T}}}) AND toDate({{until:{T}}})
GROUP BY host_id
HAVING first_seen <= {{until:{T}}} AND last_seen >= {{since:{T}}}
ORDER BY first_seen""", "exe", "since", "until"),

    _q("hosts_connected_to", "Which hosts connected to address A (any port) between two times?", f"""
SELECT host_id, any(image_id) AS image_id, groupUniqArray(rport) AS ports, min(first_seen) AS first_seen,
       max(last_seen) AS last_seen, sum(sightings) AS sightings
FROM network_remote_hosts
WHERE raddr = {{raddr:String}} AND day BETWEEN toDate({{since:{T}}}) AND toDate({{until:{T}}})
GROUP BY host_id
HAVING first_seen <= {{until:{T}}} AND last_seen >= {{since:{T}}}
ORDER BY first_seen""", "raddr", "since", "until"),

    _q("hosts_with_config", "Which hosts had configuration key K set to value V at time T?", f"""
WITH snaps AS (
    SELECT host_id, max(time) AS snap FROM config
    WHERE family = 'config' AND snapshot = 1 AND time <= {{at:{T}}} GROUP BY host_id
)
SELECT c.host_id AS host_id, any(c.image_id) AS image_id,
       argMax(tuple(c.value), (c.time, c.seq)).1 AS value, max(c.time) AS as_of
FROM config AS c INNER JOIN snaps AS s ON c.host_id = s.host_id
WHERE c.family = 'config' AND c.key = {{key:String}} AND c.time >= s.snap AND c.time <= {{at:{T}}}
GROUP BY c.host_id
HAVING value = {{value:String}}
ORDER BY host_id""", "key", "value", "at"),

    _q("hosts_alive_at", "Which hosts were alive at time T (seen before T, not gone before T)?", f"""
SELECT host_id, image_id, image_family, first_seen, last_seen, gone_at
FROM host_lifecycle
WHERE first_seen <= {{at:{T}}}
  AND coalesce(gone_at, last_seen + toIntervalSecond({{silence_s:UInt32}})) >= {{at:{T}}}
ORDER BY host_id""", "at", "silence_s"),

    _q("host_lifecycle", "When did host H live, from which image, and how did it end?", """
SELECT host_id, image_id, image_family, first_seen, last_seen, gone_at, gone_reason,
       dateDiff('second', first_seen, coalesce(gone_at, last_seen)) AS lifetime_s, boot_ids, tags, events
FROM host_lifecycle WHERE host_id = {host:String}""", "host"),

    _q("host_timeline", "Everything host H did between two times, in order.", f"""
SELECT time, seq, kind,
       multiIf(
         kind IN ('process.start', 'process.exit'),
           concat(JSONExtractString(payload, 'exe'), ' pid ', toString(JSONExtractInt(payload, 'pid')),
                  ' user ', JSONExtractString(payload, 'user')),
         kind IN ('net.open', 'net.close'),
           concat(JSONExtractString(payload, 'state'), ' ', JSONExtractString(payload, 'laddr'), ':',
                  toString(JSONExtractInt(payload, 'lport')), ' -> ', JSONExtractString(payload, 'raddr'), ':',
                  toString(JSONExtractInt(payload, 'rport')), ' ', JSONExtractString(payload, 'exe')),
         endsWith(kind, '.change'),
           concat(JSONExtractString(payload, 'key'), ': ',
                  ifNull(JSONExtract(payload, 'before', 'Nullable(String)'), '(absent)'), ' -> ',
                  ifNull(JSONExtract(payload, 'after', 'Nullable(String)'), '(absent)')),
         endsWith(kind, '.inventory'),
           concat('snapshot of ', toString(length(if(JSONType(payload, 'items') = 'Array',
                  JSONExtractArrayRaw(payload, 'items'), JSONExtractKeysAndValuesRaw(payload, 'items')))), ' items'),
         kind = 'auth.attempt',
           concat(JSONExtractString(payload, 'outcome'), ' ', JSONExtractString(payload, 'method'), ' login as ',
                  JSONExtractString(payload, 'user'), ' from ', JSONExtractString(payload, 'source')),
         kind = 'metrics',
           arrayStringConcat(arrayMap(kv -> concat(kv.1, '=', toString(round(kv.2, 1))),
                             JSONExtractKeysAndValues(payload, 'values', 'Float64')), ' '),
         kind = 'agent.goodbye', concat('goodbye: ', JSONExtractString(payload, 'reason')),
         substring(payload, 1, 120)) AS what
FROM events
WHERE host_id = {{host:String}} AND time >= {{since:{T}}} AND time <= {{until:{T}}}
  AND ({{kinds:String}} = '' OR has(splitByChar(',', {{kinds:String}}), kind))
ORDER BY time, seq
LIMIT {{limit:UInt32}}""", "host", "since", "until", "kinds", "limit"),

    _q("host_anomalies", "Which anomalies were raised about host H?", """
SELECT time, kind, severity, round(score, 2) AS score, subject, explanation
FROM anomalies FINAL WHERE host_id = {host:String} ORDER BY time""", "host"),

    _q("sequence_gaps", "Where did host H lose events on the way (gaps in its sequence numbers)?", """
SELECT boot_id, prev_seq + 1 AS first_missing, seq - 1 AS last_missing, seq - prev_seq - 1 AS missing,
       prev_time AS after_time, time AS before_time
FROM (
    SELECT boot_id, seq, time,
           lagInFrame(seq, 1, seq - 1) OVER w AS prev_seq, lagInFrame(time, 1, time) OVER w AS prev_time
    FROM (SELECT DISTINCT boot_id, toInt64(seq) AS seq, time FROM events WHERE host_id = {host:String})
    WINDOW w AS (PARTITION BY boot_id ORDER BY seq ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
)
WHERE seq > prev_seq + 1 ORDER BY after_time""", "host"),

    _q("rare_executables", "Which executables ran on only a few hosts of an image between two times?", f"""
SELECT exe, uniqExact(host_id) AS hosts, groupUniqArray(10)(host_id) AS some_hosts, min(first_seen) AS first_seen
FROM process_exe_hosts
WHERE image_id = {{image:String}} AND day BETWEEN toDate({{since:{T}}}) AND toDate({{until:{T}}})
GROUP BY exe HAVING hosts <= {{max_hosts:UInt32}}
ORDER BY hosts, exe""", "image", "since", "until", "max_hosts"),

    _q("rollouts", "Which image rollouts happened in family F?", """
SELECT time, status, old_image, new_image, round(share, 2) AS share, explanation
FROM rollouts FINAL WHERE image_family = {family:String} ORDER BY time""", "family"),

    _q("hardening_inputs", "Configuration and package history of every host of image I (or family F), for "
       "the hardening checks", f"""
SELECT c.host_id AS host_id, c.image_id AS image_id, h.image_family AS image_family, c.family AS family,
       c.key AS key, c.time AS time, c.seq AS seq, c.snapshot AS snapshot, c.value AS value
FROM config AS c INNER JOIN host_lifecycle AS h ON c.host_id = h.host_id
WHERE c.family IN ('config', 'package') AND c.time <= {{until:{T}}}
  AND ({{image:String}} = '' OR c.image_id = {{image:String}})
  AND ({{family:String}} = '' OR h.image_family = {{family:String}})
ORDER BY c.host_id, c.time, c.seq""", "image", "family", "until"),

    _q("host_state_processes", "What was host H running at time T?", state.PROCESSES, "host", "at"),
    _q("host_state_sockets", "What was host H listening on and connected to at time T?", state.SOCKETS,
       "host", "at"),
    _q("host_state_config", "How was host H configured at time T (family config | package | module)?",
       state.CONFIG, "host", "at", "family"),
    _q("host_state_logins", "Who was logged in to host H at time T?", state.LOGINS, "host", "at"),
]}


def run_named(client: QueryClient, name: str, **params: Any) -> QueryResult:
    """Run a named query with its parameters (all must be given; they are bound, never pasted in)."""
    q = QUERIES.get(name)
    if q is None:
        raise KeyError(f"no named query {name!r}; known: {', '.join(QUERIES)}")
    missing = [p for p in q.params if p not in params]
    if missing:
        raise ValueError(f"query {name} needs parameters: {', '.join(missing)}")
    return client.query(q.sql, {p: _param(params[p]) for p in q.params})


def _param(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, datetime):
        from contract.events import format_time

        return format_time(value).replace("T", " ").removesuffix("Z")
    return value
