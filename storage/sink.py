"""The storage sink: Kafka topics -> ClickHouse, in batches, at-least-once reading, exactly-once storing.

How no event is lost or stored twice:
- offsets are committed only after every row of a batch is inserted (and its dead letters delivered);
- a crash after an insert but before the commit means those messages are read again on restart. Each row
  carries its Kafka partition and offset, so when the sink first sees a partition it reads the keys
  (event ids; a content key for the one-row-per-message topics) already stored at or after that position
  and skips them. This also covers an insert that was applied only in part;
- a bounded memory of recent event ids drops duplicates sent upstream (a collector resending its spool);
  `events` is a ReplacingMergeTree on event_id as a last line of defence.

Inserts run in a second thread, one batch at a time, while this thread decodes the next batch; a batch's
offsets are committed once it is stored. When the store fails, the batch is kept, consumption of every
assigned partition is paused (backpressure: Kafka holds the rest), and the insert is retried with growing
waits until it succeeds.
Nothing is dropped. Malformed, oversized or wrong-version input goes to the dead-letter topic with a
`reason` header, and is counted.

Host identity: a telemetry message's valid events are stored only if its signature passes the contract's rule
(`contract.signing.judge`, the same as the stream worker's): host keys are pinned on first use in the
`host_keys` table, read when partitions are assigned (so pins survive a restart and follow a rebalance) and
written before the offsets of the message that pinned them are committed. Unsigned (when
`require_signatures`), forged or wrongly keyed batches go to the dead-letter topic (cause "identity").
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from contract.events import Rejected, arrival_time, dead_letter_message
from contract.settings import KafkaSettings
from contract.signing import fingerprint, judge, load_verifier, verify
from storage import rows as r
from storage import signals
from storage.load import EVENTS_INSERT_SETTINGS, INSERT_SETTINGS
from storage.settings import SinkSettings

log = logging.getLogger("herdwatch.sink")



class InsertClient(Protocol):
    """The part of a clickhouse-connect client the sink uses."""

    def raw_insert(self, table: str, column_names: Any = None, insert_block: Any = None,
                   settings: Any = None, fmt: Any = None, compression: Any = None) -> Any: ...

    def query(self, query: str, parameters: Any = None, settings: Any = None) -> Any: ...


@dataclass
class _Skip:
    """Keys already stored at or after the first offset seen for a partition since it was assigned."""

    keys: set[str]
    max_offset: int


@dataclass
class _RecentIds:
    """A bounded memory of recently stored event ids (two generations, so it never holds more than `size` plus
    one message's ids)."""

    size: int
    current: set[str] = field(default_factory=set)
    previous: set[str] = field(default_factory=set)

    def unseen(self, rows: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """The (event_id, row) pairs not seen recently (and remembers them): `seen` for a whole message."""
        if not self.size:
            return rows
        ids = [row[0] for row in rows]
        if self.current.isdisjoint(ids) and self.previous.isdisjoint(ids) and len(set(ids)) == len(ids):
            self.current.update(ids)  # the usual case, in set operations: nothing seen, no repeat within
            if len(self.current) >= self.size // 2:
                self.previous, self.current = self.current, set()
            return rows
        out = []
        for row in rows:
            event_id = row[0]
            if event_id in self.current or event_id in self.previous:
                continue
            self.current.add(event_id)
            out.append(row)
            if len(self.current) >= self.size // 2:
                self.previous, self.current = self.current, set()
        return out

    def forget(self, ids: list[str]) -> None:
        for i in ids:
            self.current.discard(i)
            self.previous.discard(i)

    def clear(self) -> None:
        self.current.clear()
        self.previous.clear()


@dataclass
class _Inflight:
    """A batch handed to the insert thread: rows per table (removed as each table is stored)."""

    tables: dict[str, r.TableRows]
    offsets: dict[tuple[str, int], int]
    stored: dict[str, int] = field(default_factory=dict)
    error: Exception | None = None
    thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


@dataclass
class SinkStats:
    messages: int = 0
    rows: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    batches: int = 0
    pauses: int = 0
    failed_inserts: int = 0
    identity_refused: int = 0  # telemetry messages (per host) refused for their signature
    first_message_at: float | None = None  # time.monotonic() of the first message taken
    last_flush_at: float | None = None  # time.monotonic() of the last successful flush


class Sink:
    """Consumes telemetry, anomalies, rollouts and lifecycle topics into ClickHouse.

    `client` is a clickhouse-connect client bound to the herdwatch database (schema already migrated).
    """

    def __init__(self, client: InsertClient, kafka: KafkaSettings, settings: SinkSettings | None = None,
                 consumer_overrides: dict[str, Any] | None = None) -> None:
        load_verifier()  # fails here, with the fix, if the install lacks the signature check
        self.client = client
        self.kafka = kafka
        self.settings = settings or SinkSettings()
        names = kafka.topics
        self.topics = {names.telemetry: "events", names.anomalies: "anomalies",
                       names.rollouts: "rollouts", names.lifecycle: "lifecycle"}
        self.deadletter_topic = names.deadletter
        self._row_makers: dict[str, Callable[[bytes | None, int, int], tuple[str, bytes]]] = {
            names.anomalies: r.anomaly_row, names.rollouts: r.rollout_row, names.lifecycle: r.lifecycle_row}
        conf = kafka.confluent_config()
        conf.update({"group.id": self.settings.group_id, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "enable.partition.eof": False,
                     "max.poll.interval.ms": 600_000,
                     "session.timeout.ms": self.settings.session_timeout_ms,
                     "heartbeat.interval.ms": max(1000, self.settings.session_timeout_ms // 5),
                     "fetch.max.bytes": 64 * 1024 * 1024})
        conf.update(consumer_overrides or {})
        self.consumer = Consumer(conf)
        pconf = kafka.confluent_config()
        pconf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                      "message.max.bytes": 8_000_000})
        self.producer = Producer(pconf)
        self.buffers = {t: r.TableRows(t) for t in ("events", "anomalies", "rollouts", "lifecycle")}
        self.stats = SinkStats()
        self._pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to commit
        self._first_offset: dict[tuple[str, int], int] = {}  # first offset seen since assignment
        self._skip: dict[tuple[str, int], _Skip] = {}
        self._needs_skip: set[tuple[str, int]] = set()
        self._recent = _RecentIds(self.settings.dedup_memory)
        self._batch_started: float | None = None
        self._paused = False
        self._retry_at = 0.0
        self._backoff = self.settings.retry_initial
        self._dl_errors: list[str] = []
        self._inserts = 0
        self._stopping = False
        self._inflight: _Inflight | None = None
        self._assigned = False
        self._last_activity = time.monotonic()
        self._pins: dict[str, bytes] = {}
        self._new_pins: list[bytes] = []  # host_keys rows not stored yet

    # --- public -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run(self, duration: float | None = None, until_idle: float | None = None) -> SinkStats:
        """Consume until stop(), `duration` seconds, or `until_idle` seconds without a message."""
        self._ensure_pins()
        self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = self._last_activity = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                if self._paused:
                    self._wait_for_store()
                    self._last_activity = time.monotonic()
                    continue
                wait = self.settings.batch_timeout
                if self._batch_started is not None:
                    wait = max(0.0, self._batch_started + self.settings.batch_timeout - now)
                if self._inflight is not None:
                    wait = min(wait, 0.05)  # look again soon: a stored batch is committed promptly
                messages = self.consumer.consume(num_messages=10_000, timeout=min(wait, 0.5))
                if messages:
                    self._last_activity = time.monotonic()
                    self._take(messages)
                if self._inflight is not None and not self._inflight.busy():
                    self._finish_inflight()  # commit the stored batch without waiting for the next
                if self._due():
                    self._flush_async()
                idle = time.monotonic() - self._last_activity
                if until_idle is not None and idle >= until_idle and self._assigned \
                        and not self._has_pending():
                    break
            # final flush: keep trying while the store is down, unless asked to stop again
            while self._has_pending() and not self.flush():
                time.sleep(min(self._backoff, 1.0))
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)

    # --- consuming ---------------------------------------------------------------------------------
    def _take(self, messages: list[Message]) -> None:
        for m in messages:
            self._take_one(m)
            if not self._paused and self._rows_buffered() >= self.settings.batch_size:
                self._flush_async()

    def _take_one(self, m: Message) -> None:
        err = m.error()
        if err is not None:
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                log.debug("kafka: %s", err)
                return
            log.warning("kafka error: %s", err)
            return
        topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
        tp = (topic, partition)
        self.stats.messages += 1
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        if tp not in self._first_offset:
            self._first_offset[tp] = offset
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        try:
            self._rows_of(m, topic, partition, offset)
        except Exception as e:  # a bug or an input nobody foresaw: the message becomes a dead letter
            signals.message_failed.emit(topic=topic)
            self._dead_letter(m, f"internal error: {type(e).__name__}: {str(e)[:200]}", m.value() or b"")
        # only now, when the message is buffered for storage or dead-lettered, may its offset be committed
        self._pending[tp] = offset + 1

    def _rows_of(self, m: Message, topic: str, partition: int, offset: int) -> None:
        """Buffer the rows of one message for its table; dead-letter what the contract refuses."""
        if self.topics[topic] == "events":
            good, rejected = r.telemetry_rows(m.value(), partition, offset, self.settings.max_row_bytes,
                                              key=m.key(), received=_arrival(m))
            if good:
                good = self._signed_rows(m, good, partition, offset)
            fresh = self._recent.unseen(good)
            if len(fresh) < len(good):
                self.stats.duplicates += len(good) - len(fresh)
                signals.duplicates_skipped.emit(len(good) - len(fresh), why="recent")
            self.buffers["events"].add_message(fresh, partition, offset)
            for rej in rejected:
                self._dead_letter(m, rej.reason, rej.raw)
            return
        try:
            key, line = self._row_makers[topic](m.value(), partition, offset)
        except ValueError as e:
            self._dead_letter(m, str(e), m.value() or b"")
            return
        if len(line) > self.settings.max_row_bytes:
            self._dead_letter(m, f"oversized: row is {len(line)} bytes, the limit is "
                                 f"{self.settings.max_row_bytes}", m.value() or b"")
            return
        self.buffers[self.topics[topic]].add(line, partition, offset, key)

    # --- host identity ---------------------------------------------------------------------------------
    def _signed_rows(self, m: Message, good: list[tuple[str, bytes]], partition: int,
                     offset: int) -> list[tuple[str, bytes]]:
        """The rows of hosts whose signature passes; each refused host's batch is dead-lettered once."""
        key = m.key()
        by_host: dict[str, list[tuple[str, bytes]]] = {}
        if key is not None:  # every row is that host's (the contract checked it)
            by_host[key.decode("utf-8", "replace")] = good
        else:
            for row in good:
                by_host.setdefault(str(orjson.loads(row[1])[3]), []).append(row)
        signature = verify(m.headers(), key, m.value())
        kept: list[tuple[str, bytes]] = []
        for host, rows in by_host.items():
            verdict = judge(host, signature, self._pins.get(host), self.settings.require_signatures,
                            self.settings.repin)
            if not verdict.accepted:
                self.stats.identity_refused += 1
                self._dead_letter(m, verdict.reason, m.value() or b"", cause="identity")
                continue
            if verdict.pin is not None:
                self._pins[host] = verdict.pin
                self._new_pins.append(orjson.dumps({
                    "host_id": host, "public_key": base64.b64encode(verdict.pin).decode(),
                    "fingerprint": fingerprint(verdict.pin), "pinned_at": time.time(),
                    "kafka_partition": partition, "kafka_offset": offset}))
            kept.extend(rows)
        return kept

    def _ensure_pins(self) -> None:
        """Read the pinned keys before any telemetry is judged; while the store is down, wait like an insert
        does (counted as a failed store call, consumption paused) and try again."""
        while True:
            try:
                self._load_pins()
                return
            except Exception as e:
                if self._stopping:
                    raise RuntimeError("stopped before the pinned host keys could be read from the store") from e
                self._store_failed(e)
                time.sleep(max(0.0, self._retry_at - time.monotonic()))

    def _load_pins(self) -> None:
        """Read the pinned keys (the insert thread must be idle: one client, one caller at a time)."""
        res = self.client.query("SELECT host_id, argMax(public_key, pinned_at) FROM host_keys GROUP BY host_id")
        pins = {str(host): base64.b64decode(key) for host, key in res.result_rows}
        for line in self._new_pins:  # pinned here, not stored yet
            row = orjson.loads(line)
            pins[row["host_id"]] = base64.b64decode(row["public_key"])
        self._pins = pins

    def _store_pins(self) -> None:
        """Store new pins before the offsets of the messages that made them are committed."""
        if self._new_pins:
            self.client.raw_insert("host_keys", list(orjson.loads(self._new_pins[0]).keys()),
                                   insert_block=b"\n".join(self._new_pins), fmt="JSONEachRow",
                                   settings=INSERT_SETTINGS)
            self._new_pins = []

    def _dead_letter(self, m: Message, reason: str, raw: bytes, cause: str | None = None) -> None:
        topic = m.topic() or ""
        value, headers = dead_letter_message(Rejected(reason, raw), topic, "sink")
        key = f"{topic}:{m.partition()}:{m.offset()}".encode()
        while True:
            try:
                self.producer.produce(self.deadletter_topic, value=value, key=key,
                                      headers=headers,  # type: ignore[arg-type]
                                      on_delivery=self._on_dl_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.stats.dead_lettered += 1
        signals.dead_lettered.emit(topic=topic, cause=cause or r.cause_of(reason))
        log.warning("dead-lettered %s:%s:%s: %s", topic, m.partition(), m.offset(), reason)

    def _on_dl_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._dl_errors.append(str(err))

    def _rows_buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def _has_pending(self) -> bool:
        return bool(self._pending) or self._inflight is not None

    def _due(self) -> bool:
        """A batch is stored when full, when its oldest row is batch_timeout old, or - holding at least
        a tenth of batch_size, enough for an efficient insert - as soon as everything available has
        been read: waiting for more would only delay it."""
        if not self._pending:
            return False
        rows = self._rows_buffered()
        if rows >= self.settings.batch_size:
            return True
        if self._batch_started is not None and \
                time.monotonic() - self._batch_started >= self.settings.batch_timeout:
            return True
        return rows >= self.settings.batch_size // 10 and self._caught_up()

    def _caught_up(self) -> bool:
        """Every assigned partition read up to the end the consumer last saw on the broker."""
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _, end = self.consumer.get_watermark_offsets(tp, cached=True)
                if end > 0 and tp.offset < end:  # offset < 0: nothing read from it yet
                    return False
        except KafkaException:  # not known yet (e.g. during a rebalance): wait for the timeout
            return False
        return True

    # --- storing -----------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Insert everything buffered, then commit. False (and consumption paused) if the store failed."""
        if not self._finish_inflight():
            return False
        if not self._pending:
            if self._paused:
                self._resume()
            return True
        try:
            self._load_skips()
            self._store_pins()
            for table, buf in self.buffers.items():
                if not len(buf):
                    continue
                self._drop_stored(buf)
                if not len(buf):
                    continue
                self._insert(buf)
                self._count_rows(table, len(buf))
                buf.clear()  # a later table failing must not insert this one again
        except Exception as e:  # the store is down or refused: keep the batch, pause, retry later
            self._store_failed(e)
            return False
        self._commit_batch(self._pending)
        self._pending = {}
        self._batch_started = None
        if self._paused:
            self._resume()
        return True

    def _flush_async(self) -> None:
        """Hand the batch to the insert thread and keep reading; its offsets are committed once it is
        stored (checked before the next batch is handed over). Decoding the next batch in this thread
        overlaps with the engine inserting the previous one."""
        if not self._finish_inflight() or not self._pending:
            return
        try:
            self._load_skips()
            self._store_pins()
            for buf in self.buffers.values():
                if len(buf):
                    self._drop_stored(buf)
        except Exception as e:
            self._store_failed(e)
            return
        batch = _Inflight({t: b for t, b in self.buffers.items() if len(b)}, self._pending)
        self.buffers = {t: r.TableRows(t) for t in self.buffers}
        self._pending = {}
        self._batch_started = None
        batch.thread = threading.Thread(target=self._insert_batch, args=(batch,), name="sink-insert",
                                        daemon=True)
        self._inflight = batch
        batch.thread.start()

    def _insert_batch(self, batch: _Inflight) -> None:
        try:
            for table in list(batch.tables):
                buf = batch.tables[table]
                self._insert(buf)
                batch.stored[table] = len(buf)
                del batch.tables[table]  # a later table failing must not insert this one again
        except Exception as e:
            batch.error = e

    def _finish_inflight(self) -> bool:
        """Wait for the batch being inserted; commit it, or put its unstored rows back and pause."""
        batch = self._inflight
        if batch is None:
            return True
        assert batch.thread is not None
        batch.thread.join()
        self._inflight = None
        for table, n in batch.stored.items():
            self._count_rows(table, n)
        if batch.error is not None:
            for table, rows in batch.tables.items():  # back in front of what was read since
                self.buffers[table].prepend(rows)
            for tp, offset in batch.offsets.items():
                self._pending[tp] = max(offset, self._pending.get(tp, 0))
            if self._batch_started is None:
                self._batch_started = time.monotonic()
            self._store_failed(batch.error)
            return False
        self._commit_batch(batch.offsets)
        return True

    def _count_rows(self, table: str, n: int) -> None:
        self.stats.rows += n
        signals.rows_inserted.emit(n, table=table)

    def _commit_batch(self, offsets: dict[tuple[str, int], int]) -> None:
        if self.producer.flush(30) or self._dl_errors:
            errors, self._dl_errors = self._dl_errors, []
            raise RuntimeError(f"dead-letter topic {self.deadletter_topic} unreachable ({errors[:1]}); "
                               "offsets are not committed, the batch will be read again on restart")
        self._commit(offsets)
        self.stats.batches += 1
        self.stats.last_flush_at = time.monotonic()
        signals.batches_inserted.emit()

    def _insert(self, buf: r.TableRows) -> None:
        if buf.table == "events":
            columns, fmt, settings = r.EVENT_COLUMNS, r.EVENTS_FORMAT, EVENTS_INSERT_SETTINGS
        else:
            columns = list(orjson.loads(buf.blocks[0].split(b"\n", 1)[0]).keys())
            fmt, settings = "JSONEachRow", INSERT_SETTINGS
        self.client.raw_insert(buf.table, columns, insert_block=buf.block(), fmt=fmt, settings=settings)
        self._inserts += 1
        if self.settings.fault_kill_after_inserts and self._inserts >= self.settings.fault_kill_after_inserts:
            log.warning("fault injection: killing the sink after insert %d, before the commit", self._inserts)
            os.kill(os.getpid(), signal.SIGKILL)

    def _commit(self, pending: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as e:  # rows are stored; a re-read after restart is deduplicated
            signals.commit_failed.emit()
            log.warning("offset commit failed (%s); stored rows will be skipped when re-read", e)
        for (t, p), o in pending.items():
            skip = self._skip.get((t, p))
            if skip is not None and skip.max_offset < o:
                del self._skip[(t, p)]

    def _load_skips(self) -> None:
        for tp in sorted(self._needs_skip & set(self._first_offset)):
            topic, partition = tp
            table = self.topics[topic]
            first = self._first_offset[tp]
            key = r.KEY_SQL[table]
            res = self.client.query(
                f"SELECT {key}, kafka_offset FROM {table} "
                "WHERE kafka_partition = {p:UInt16} AND kafka_offset >= {o:UInt64}",
                parameters={"p": partition, "o": first})
            rows = res.result_rows
            if rows:
                self._skip[tp] = _Skip({row[0] for row in rows}, max(row[1] for row in rows))
                log.info("partition %s[%d]: %d rows at offsets >= %d are already stored; they will be "
                         "skipped", topic, partition, len(rows), first)
            self._needs_skip.discard(tp)

    def _drop_stored(self, buf: r.TableRows) -> None:
        topic = next(t for t, tab in self.topics.items() if tab == buf.table)
        skips = {p: s for (t, p), s in self._skip.items() if t == topic}
        if not skips:
            return
        keep = r.TableRows(buf.table)
        dropped = 0
        for line, p, o, k in zip(buf.lines(), buf.partitions, buf.offsets, buf.keys, strict=True):
            s = skips.get(p)
            if s is not None and o <= s.max_offset and k in s.keys:
                dropped += 1
                continue
            keep.add(line, p, o, k)
        if dropped:
            self.stats.duplicates += dropped
            signals.duplicates_skipped.emit(dropped, why="already_stored")
            buf.blocks, buf.partitions, buf.offsets, buf.keys = keep.blocks, keep.partitions, keep.offsets, keep.keys

    # --- backpressure --------------------------------------------------------------------------------
    def _store_failed(self, e: Exception) -> None:
        self.stats.failed_inserts += 1
        signals.insert_failed.emit()
        log.warning("store unavailable (%s: %s); retrying in %.1fs with consumption paused",
                    type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "", self._backoff)
        if not self._paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
            self._paused = True
            self.stats.pauses += 1
            signals.paused.emit()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.settings.retry_max)

    def _wait_for_store(self) -> None:
        # keep polling (group membership, rebalances) while paused; nothing new is fetched
        while not self._stopping and time.monotonic() < self._retry_at:
            left = max(0.0, min(0.2, self._retry_at - time.monotonic()))  # never negative: that blocks
            messages = self.consumer.consume(num_messages=1000, timeout=left)
            if messages:
                self._take(messages)
        if self._paused and not self._stopping:
            self.flush()

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self._paused = False
        self._backoff = self.settings.retry_initial
        signals.resumed.emit()
        log.info("store is back; consumption resumed")

    # --- rebalancing ----------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True
        self._last_activity = time.monotonic()  # idleness counts from the (re)assignment
        if self._inflight is not None and self._inflight.thread is not None:
            self._inflight.thread.join()  # the client is free again (the batch is committed later)
        self._ensure_pins()  # pins another sink made while it owned these partitions
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._first_offset.pop(key, None)
            self._skip.pop(key, None)
            self._needs_skip.add(key)
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._has_pending() and not self.flush():
            # could not store: forget the batch; it was not committed, so it is read again
            log.warning("partitions revoked while the store is down: the unstored batch is dropped from "
                        "memory and will be re-read from the last committed offsets")
            for buf in self.buffers.values():
                buf.clear()
            self._pending.clear()
            self._recent.clear()
            self._batch_started = None
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._first_offset.pop(key, None)
            self._skip.pop(key, None)
            self._needs_skip.discard(key)


def _arrival(m: Message) -> datetime | None:
    kind, ms = m.timestamp()
    return arrival_time(ms, kind == TIMESTAMP_LOG_APPEND_TIME)
