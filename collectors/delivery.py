"""Getting batches to Kafka without losing them: spool first, then send from the spool in order.

- `submit(events)` encodes one cycle's events as one message value and appends it to the spool (if the
  disk is full it waits in a bounded memory queue, and is written as soon as the disk allows).
- `pump()` hands spooled records to the idempotent producer, at most `max_inflight` at a time and
  rate-limited (token bucket, messages/s and bytes/s) so a backlog replays without flooding a recovering
  backend. The spool cursor advances only on the broker's acknowledgement.
- Messages never time out inside the client (message.timeout.ms=0): while the broker is down they wait
  and the idempotent producer delivers them in order once it is back. A permanent rejection rewinds to
  the first unacknowledged record and retries with backoff; after `max_attempts` a record is dropped and
  counted (reason "rejected") so one poison message cannot stall a host forever.
- Each record is signed with the host key when it is handed to the producer (collectors/hostkey.py): the
  spool keeps only the value. The signed `herdwatch-written` header announces the highest seq spooled at
  that moment, so a host that dies while replaying a backlog leaves the stream an exact count of what it
  never delivered (contract/signing.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message

from collectors import signals
from collectors.own_traffic import STATS_INTERVAL_MS, KafkaTraffic
from collectors.publisher import Publisher, Signer
from collectors.spool import Record, Spool
from contract.events import Event, encode_batch, encode_event

if TYPE_CHECKING:
    from collectors.settings import AgentKafkaSettings
    from contract.settings import KafkaSettings

log = logging.getLogger("herdwatch.collector")

UNREACHABLE_LOG_S = 60.0
"""While Kafka stays unreachable, "Kafka unreachable since T, N events spooled" is logged at most this often."""
STALL_S = 10.0
"""Records handed to the client and unacknowledged for this long with no acknowledgement at all: unreachable
(a silent partition may never produce a client error)."""

MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
"""Bytes handed to the client and not yet acknowledged; half its queue (queue.buffering.max.kbytes), so
producing never blocks, even with the broker down."""

PRODUCER_OVERRIDES: dict[str, Any] = {
    "message.timeout.ms": 0,            # never give up inside the client; the spool bounds what waits
    "queue.buffering.max.kbytes": 32768,
    # A silent partition (packets dropped, no RST) must cost no CPU: connection attempts give up after 10 s,
    # a connection whose requests get no answer is closed after 30 s, and reconnects back off to one every
    # 10 s (jittered), so the client sleeps between attempts; once the network heals the next attempt (at
    # most 10 s later) succeeds and the spool replays.
    # The idempotent producer's broker thread spins (40-60% of a core measured, librdkafka 2.16) while requests
    # are in flight to a silently unreachable broker with more than one in flight per connection; with one
    # it sleeps. One request carries a whole batch of spool records, so throughput barely changes.
    "max.in.flight.requests.per.connection": 1,
    "socket.connection.setup.timeout.ms": 10000,
    "socket.timeout.ms": 30000,
    "socket.keepalive.enable": True,    # the kernel notices a dead peer of an idle connection
    "reconnect.backoff.ms": 500,
    "reconnect.backoff.max.ms": 10000,
    "retry.backoff.ms": 500,
    "retry.backoff.max.ms": 5000,
    "topic.metadata.refresh.interval.ms": 60000,
    "log_level": 2,                     # connection failures are reported once through error_cb
    "log.connection.close": False,
    "linger.ms": 5,
}


def split_batches(events: list[Event], max_bytes: int) -> list[tuple[list[Event], bytes]]:
    """Encode events as one message, or several in seq order when one would be too big."""
    value = encode_batch(events)
    if len(value) <= max_bytes or len(events) == 1:
        return [(events, value)]
    mid = len(events) // 2
    return split_batches(events[:mid], max_bytes) + split_batches(events[mid:], max_bytes)


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.t = time.monotonic()

    def take(self, n: float) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        n = min(n, self.burst)  # a batch larger than the burst waits for a full bucket, then goes
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def refund(self, n: float) -> None:
        self.tokens = min(self.burst, self.tokens + min(n, self.burst))


class Delivery:
    def __init__(self, kafka: KafkaSettings | AgentKafkaSettings, spool: Spool, key: bytes,
                 max_inflight: int = 64,
                 rate_msgs: float = 50.0,
                 rate_bytes: float = 2_000_000.0, max_message_bytes: int = 900_000,
                 memory_bytes: int = 8 * 1024 * 1024, max_attempts: int = 5, signer: Signer | None = None) -> None:
        self.kafka = kafka
        self.signer = signer
        self.spool = spool
        self.key = key
        self.max_inflight = max_inflight
        self.max_message_bytes = max_message_bytes
        self.memory_bytes = memory_bytes
        self.max_attempts = max_attempts
        self.msg_bucket = TokenBucket(rate_msgs, max(rate_msgs, 1.0))
        self.byte_bucket = TokenBucket(rate_bytes, max(rate_bytes, float(max_message_bytes)))
        self.inflight: deque[Record] = deque()
        self.memory: deque[tuple[bytes, int, int]] = deque()
        self.sent = 0
        self.dropped: dict[str, int] = {}
        self.first_ack_at: float | None = None
        self.broker_up: bool | None = None
        self.unreachable_since: float | None = None
        """Wall time Kafka became unreachable (None: reachable or not yet known)."""
        self._unreachable_logged = 0.0
        self._last_progress = time.monotonic()
        """Monotonic time of the last acknowledgement, or of the moment the client had nothing in flight."""
        self._failed: KafkaError | None = None
        self._attempts: dict[tuple[int, int], int] = {}
        self._retry_at = 0.0
        self._backoff = 0.5
        self._cursor_dirty = False
        self._cursor_saved_at = 0.0
        self.traffic = KafkaTraffic()
        """The agent's own bytes to and from Kafka (collectors/own_traffic.py)."""
        self.publisher = self._new_publisher()

    def _new_publisher(self) -> Publisher:
        return Publisher(self.kafka, self.signer, error_cb=self._on_error, stats_cb=self.traffic.on_stats,
                         **{"statistics.interval.ms": STATS_INTERVAL_MS, **PRODUCER_OVERRIDES})

    # -- callbacks (run inside producer.poll/flush, on this thread) --------------------------------
    def _on_error(self, err: KafkaError) -> None:
        code = err.name() if hasattr(err, "name") else str(err)
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self.broker_up is not False:
                log.warning("Kafka unreachable at %s (%s); spooling to %s", self.kafka.bootstrap, err.str(),
                            self.spool.dir)
            self.broker_up = False
            self._mark_unreachable()
        signals.broker_errors.emit(code=code)
        if err.fatal():
            self._failed = err

    def _on_delivery(self, err: KafkaError | None, msg: Message, record: Record) -> None:
        if err is not None:
            if self._failed is None:
                self._failed = err
            return
        if self.broker_up is False or self.unreachable_since is not None:
            since = self.unreachable_since
            log.warning("Kafka is back%s; replaying %d spooled events",
                        "" if since is None else f" after {time.time() - since:.1f} s", self.spool.pending_events)
        self.broker_up = True
        self.unreachable_since = None
        self._last_progress = time.monotonic()
        signals.kafka_unreachable_since.set(0)
        self._backoff = 0.5
        if self.inflight and self.inflight[0] is record:
            self.inflight.popleft()
        self.spool.ack(record)
        self._attempts.pop((record.seg, record.offset), None)
        self._cursor_dirty = True
        self.sent += record.count
        signals.events_sent.emit(record.count)
        if self.first_ack_at is None:
            self.first_ack_at = time.monotonic()

    # -- API -----------------------------------------------------------------------------------------
    def submit(self, events: list[Event]) -> None:
        try:
            batches = split_batches(events, self.max_message_bytes)
        except orjson.JSONEncodeError:  # a payload JSON cannot carry: send the rest, count the loss
            good = []
            for event in events:
                try:
                    encode_event(event)
                    good.append(event)
                except orjson.JSONEncodeError as e:
                    log.error("cannot encode a %s event (%s); dropping it", event.kind.value, e)
                    self._drop(1, "unencodable")
            runs: list[list[Event]] = []  # a spool record holds consecutive seqs: split at the gaps
            for event in good:
                if runs and runs[-1][-1].seq + 1 == event.seq:
                    runs[-1].append(event)
                else:
                    runs.append([event])
            batches = [b for run in runs for b in split_batches(run, self.max_message_bytes)]
        for batch, value in batches:
            self._store(value, batch[0].seq, len(batch))

    def _store(self, value: bytes, first_seq: int, count: int) -> None:
        self._drain_memory()
        if not self.memory:
            try:
                self.spool.append(value, first_seq, count)
                signals.events_spooled.emit(count)
                return
            except OSError as e:
                signals.spool_write_errors.emit()
                log.warning("spool write failed (%s); holding events in memory (bound %d bytes)",
                            e, self.memory_bytes)
        self.memory.append((value, first_seq, count))
        while sum(len(v) for v, _, _ in self.memory) > self.memory_bytes and len(self.memory) > 1:
            _, _, lost = self.memory.popleft()
            self._drop(lost, "disk_full")

    def _drain_memory(self) -> None:
        while self.memory:
            value, first_seq, count = self.memory[0]
            try:
                self.spool.append(value, first_seq, count)
            except OSError:
                return
            self.memory.popleft()
            signals.events_spooled.emit(count)

    def _drop(self, count: int, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        signals.events_dropped.emit(count, reason=reason)

    def _callback(self, record: Record) -> Callable[[KafkaError | None, Message], None]:
        return lambda err, msg: self._on_delivery(err, msg, record)

    def _mark_unreachable(self) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            self._unreachable_logged = 0.0
            signals.kafka_unreachable_since.set(self.unreachable_since)

    def _report_unreachable(self) -> None:
        """Once Kafka is unreachable: one line right away, then at most every UNREACHABLE_LOG_S."""
        if self.inflight and self.broker_up is not False and time.monotonic() - self._last_progress >= STALL_S:
            self._mark_unreachable()  # nothing acknowledged for STALL_S: a silent partition
        if self.unreachable_since is None:
            return
        now = time.monotonic()
        if now - self._unreachable_logged >= UNREACHABLE_LOG_S:
            self._unreachable_logged = now
            since = datetime.fromtimestamp(self.unreachable_since, UTC).isoformat(timespec="seconds")
            signals.kafka_unreachable.emit()
            log.warning("Kafka unreachable since %s, %d events spooled", since, self.pending)

    @property
    def pending(self) -> int:
        return self.spool.pending_events + sum(c for _, _, c in self.memory)

    def pump(self) -> None:
        """Serve delivery reports, handle failures, and hand more spooled records to the producer."""
        producer = self.publisher.producer
        producer.poll(0)
        if self._failed is not None:
            self._recover()
        if self.memory:
            self._drain_memory()
        now = time.monotonic()
        if now >= self._retry_at:
            inflight_bytes = sum(len(r.value) for r in self.inflight)
            while len(self.inflight) < self.max_inflight:
                record = self.spool.next_record()
                if record is None:
                    break
                inflight_bytes += len(record.value)
                if self.inflight and inflight_bytes > MAX_INFLIGHT_BYTES:  # stay below the client's queue
                    self.spool.read_pos = (record.seg, record.offset)
                    break
                if not (self.msg_bucket.take(1) and self.byte_bucket.take(len(record.value))):
                    self.spool.read_pos = (record.seg, record.offset)  # not now: rate limit
                    break
                self.inflight.append(record)
                try:
                    self.publisher.publish_value(record.value, self.key, on_delivery=self._callback(record),
                                                 written=self.spool.last_seq)
                except KafkaException as e:  # refused by the client itself, e.g. above message.max.bytes
                    self.inflight.pop()
                    self.msg_bucket.refund(1)
                    self.byte_bucket.refund(len(record.value))
                    log.error("Kafka client refused a batch of %d events (%s); dropping it", record.count, e)
                    self.spool.ack(record)
                    self._drop(record.count, "rejected")
        if self._cursor_dirty and now - self._cursor_saved_at >= 1.0:
            self.spool.save_cursor()
            self._cursor_dirty, self._cursor_saved_at = False, now
        if not self.inflight:
            self._last_progress = now
        self._report_unreachable()
        signals.spool_pending_events.set(self.pending)
        signals.spool_bytes.set(self.spool.total_bytes)

    def _recover(self) -> None:
        err, self._failed = self._failed, None
        assert err is not None
        head = self.inflight[0] if self.inflight else None
        log.warning("Kafka delivery failed (%s); re-sending from the first unacknowledged record", err.str())
        signals.delivery_retries.emit(len(self.inflight))
        self.publisher.producer.purge()
        self.publisher.producer.flush(1)  # serves the purge reports of the old producer
        self._failed = None
        self.publisher = self._new_publisher()
        lost = sum(r.count for r in self.inflight if self.spool.evicted(r))
        if lost:  # their segment was deleted by the size bound while they were in flight
            self.spool.count_lost(lost)
        self.inflight.clear()
        if head is not None:
            key = (head.seg, head.offset)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            if self._attempts[key] >= self.max_attempts and not err.retriable():
                log.error("Kafka rejected a batch of %d events %d times (%s); dropping it", head.count,
                          self._attempts[key], err.str())
                self.spool.ack(head)
                self._drop(head.count, "rejected")
        self.spool.rewind()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    def flush(self, timeout: float) -> int:
        """Send what can be sent within `timeout` seconds; returns the events still pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.pending or self.inflight):
            self.pump()
            self.publisher.producer.poll(0.05)
        self.spool.save_cursor()
        return self.pending

    def close(self) -> None:
        self.spool.close()
