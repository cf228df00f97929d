"""The osquery stage as a Faust agent: osquery result logs in, herdwatch telemetry out (logic in osquery_map.py).

    <deployment>.osquery.results --osquery agent--> <deployment>.telemetry (key host_id, signed) --> hosts agent
         |                         osquery-hosts table (per host: seq counter, recent offsets, per-query rows)
         +--> deadletter (malformed lines, rows the contract refuses)

On only with HERDWATCH_WORKER_OSQUERY=true. Each line is decoded and mapped (`streams.osquery_map`); the
events of one line form one telemetry batch keyed by the host, signed with a key derived for that host from
HERDWATCH_WORKER_OSQUERY_KEY_SECRET (every worker derives the same key, so the host stage pins it like an
agent's), then the host's record is written back. A line that cannot be mapped is dead-lettered with the
reason and counted; the stage goes on.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import topics as t
from contract.events import Rejected, encode_batch
from contract.kafka_admin import ensure_topics
from contract.observability import Signal
from contract.settings import KafkaSettings
from contract.signing import sign
from streams.faust_fixes import OffsetGuard
from streams.osquery_map import LineError, OsqueryHost, OsqueryMapping, decode_line, map_line
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.stage_loop import run_stage
from streams.topology import OSQUERY_TABLE, Topology, changelog_topic

COMPONENT = "streams.osquery"
KEY_DOMAIN = b"herdwatch-osquery-host-key-v1\x00"

lines_in = Signal("streams_osquery_lines_in", "osquery result log lines consumed")
lines_dead_lettered = Signal("streams_osquery_lines_dead_lettered",
                             "osquery lines (or rows of them) refused and sent to the dead-letter topic")
lines_replayed = Signal("streams_osquery_lines_replayed",
                        "osquery lines read again after a crash, older than the offsets a host remembers: skipped")
events_out = Signal("streams_osquery_events_out", "telemetry events made from osquery lines")

Signer = Callable[[str, bytes, bytes], list[tuple[str, bytes]]]


def host_signer(secret: str | None) -> Signer:
    """Signature headers for one host's batch, with a key derived from `secret` and the host id (none
    without a secret: the batch goes unsigned, accepted only where signatures are not required)."""
    keys: dict[str, Ed25519PrivateKey] = {}

    def headers(host: str, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        if not secret:
            return []
        private = keys.get(host)
        if private is None:
            if len(keys) > 100_000:
                keys.clear()
            seed = hmac.new(secret.encode(), KEY_DOMAIN + host.encode(), hashlib.sha256).digest()
            private = keys[host] = Ed25519PrivateKey.from_private_bytes(seed)
        return sign(private, key, value)

    return headers


def mapping_of(ws: WorkerSettings) -> OsqueryMapping:
    return OsqueryMapping(default_image=ws.osquery_default_image, families=dict(ws.osquery_families),
                          queries=dict(ws.osquery_queries))


def check_settings(ws: WorkerSettings) -> None:
    """Refuse a worker that would publish telemetry the host stage refuses."""
    if ws.osquery and ws.require_signatures and not ws.osquery_key_secret:
        raise ValueError("HERDWATCH_WORKER_OSQUERY=true needs HERDWATCH_WORKER_OSQUERY_KEY_SECRET (the same "
                         "secret on every worker) while signatures are required; or set "
                         "HERDWATCH_WORKER_REQUIRE_SIGNATURES=false (docs/osquery.md)")


def prepare(kafka: KafkaSettings, ws: WorkerSettings, timeout: float = 30.0) -> dict[str, int]:
    """Create the osquery topic if it is missing (the default name only) and the stage table's changelog,
    partitioned like it (as the worker does for its other tables); return {topic: partitions}."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    name = ws.osquery_topic or kafka.topics.osquery
    if not ws.osquery_topic:
        ensure_topics(kafka, (t.OSQUERY,), partitions=ws.partitions)
    admin = AdminClient(kafka.confluent_config())
    deadline = time.monotonic() + timeout
    while True:  # a new topic takes a moment to show up in metadata
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        if topic is not None and topic.partitions and topic.error is None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"osquery topic {name} does not exist on {kafka.bootstrap}; create it or unset "
                               "HERDWATCH_WORKER_OSQUERY_TOPIC")
        time.sleep(0.2)
    n = len(topic.partitions)
    changelog = NewTopic(changelog_topic(ws.app_id, OSQUERY_TABLE), num_partitions=n, replication_factor=1,
                         config={"cleanup.policy": "compact"})
    for fut in admin.create_topics([changelog], request_timeout=timeout).values():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create changelog topic {changelog.topic}: {e}") from e
    return {name: n}


def add_osquery_agent(app: Any, topology: Topology, outputs: Outputs, ws: WorkerSettings, guard: OffsetGuard,
                      signer: Signer | None = None) -> None:
    check_settings(ws)
    table, telemetry = topology.osquery_hosts, topology.telemetry
    mapping = mapping_of(ws)
    secret = ws.osquery_key_secret.get_secret_value() if ws.osquery_key_secret else None
    headers_of = signer or host_signer(secret)

    async def refuse(reason: str, event: Any) -> None:
        lines_dead_lettered.emit()
        await outputs.dead_letter(Rejected(reason, event.value or b""), event, COMPONENT)

    async def on_line(event: Any) -> None:
        lines_in.emit()
        msg = event.message
        try:
            lines = decode_line(event.value, mapping)
        except LineError as e:
            await refuse(f"osquery line refused: {e}", event)
            return
        if not lines:
            return
        host = lines[0].host_id
        record = OsqueryHost.from_json(table.get(host))
        mapped = map_line(lines, record, f"{msg.topic}:{msg.partition}", msg.partition, msg.offset)
        if mapped.replay:
            lines_replayed.emit()
            return
        for reason in mapped.rejected:
            await refuse(reason, event)
        if mapped.events:
            key, value = host.encode(), encode_batch(mapped.events)
            events_out.emit(len(mapped.events))
            await telemetry.send(key=key, value=value, headers=headers_of(host, key, value))
        table[host] = record.to_json()

    @app.agent(topology.osquery, concurrency=1)
    async def osquery(stream: Any) -> None:
        await run_stage(app, stream, "osquery", on_line, guard, outputs)
