"""The on-disk spool and the delivery queue in front of it: order, restarts, torn writes, damaged
records, the size bound (loss counted, never silent) and a full disk."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from collectors import signals
from collectors.delivery import Delivery, split_batches
from collectors.spool import Spool
from contract.events import Event, HostIdentity, Kind
from contract.settings import KafkaSettings

HOST = HostIdentity("h1", "b1", "ami-1", "fam")
UNREACHABLE = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit")


def drain(spool: Spool) -> list[tuple[int, int]]:
    out = []
    while (r := spool.next_record()) is not None:
        out.append((r.first_seq, r.count))
    return out


def test_records_come_back_in_order_and_acks_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(f"batch{i}".encode(), first_seq=i * 2, count=2)
    first, second = spool.next_record(), spool.next_record()
    assert first is not None and second is not None and first.value == b"batch0"
    spool.ack(first)
    spool.ack(second)
    spool.close()

    again = Spool(tmp_path)
    assert again.pending_events == 2 and again.last_seq == 5
    assert drain(again) == [(4, 2)]


def test_unacknowledged_records_are_resent_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"a", 0, 1)
    spool.append(b"b", 1, 1)
    assert drain(spool) == [(0, 1), (1, 1)]  # handed out, never acknowledged
    spool.close()
    assert drain(Spool(tmp_path)) == [(0, 1), (1, 1)]


def test_torn_write_at_the_tail_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"good", 0, 1)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    with open(segment, "ab") as f:
        f.write(b"HW\x99\x00\x00")  # a crash in the middle of the next header
    before = signals.spool_corrupt.value()
    reopened = Spool(tmp_path)
    assert signals.spool_corrupt.value() == before + 1
    assert drain(reopened) == [(0, 1)]
    reopened.append(b"next", 1, 1)
    assert drain(reopened) == [(1, 1)]


def test_damaged_record_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100_000, segment_bytes=4096)
    for i in range(40):
        spool.append(b"x" * 200, i, 1)
    first_segment = min(tmp_path.glob("*.seg"))
    data = bytearray(first_segment.read_bytes())
    data[30] ^= 0xFF  # flip a byte inside the first record's value
    first_segment.write_bytes(bytes(data))
    before = signals.spool_corrupt.value()
    got = drain(spool)
    assert signals.spool_corrupt.value() == before + 1
    assert got and got[0][0] > 0 and [s for s, _ in got] == list(range(got[0][0], 40))


def test_size_bound_sheds_oldest_and_counts_the_loss(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=20_000, segment_bytes=4096)
    dropped_before = signals.events_dropped.value(reason="spool_full")
    for i in range(200):
        spool.append(b"y" * 500, first_seq=i * 3, count=3)
    assert spool.total_bytes <= 20_000 + 4096
    remaining = drain(spool)
    assert spool.dropped > 0 and spool.dropped + sum(c for _, c in remaining) == 600
    assert signals.events_dropped.value(reason="spool_full") - dropped_before == spool.dropped
    seqs = [s for s, _ in remaining]
    assert seqs == list(range(seqs[0], 600, 3)) and remaining[-1] == (597, 3)  # newest kept, in order


def events(first: int, n: int) -> list[Event]:
    now = datetime.now(UTC)
    return [Event.new(HOST, Kind.METRICS, first + i, {"values": {"x": float(i)}}, time=now) for i in range(n)]


@contextmanager
def disk_full(limit: int) -> Iterator[None]:
    """Writes beyond `limit` bytes per file fail with EFBIG, as on a full disk (RLIMIT_FSIZE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_full_disk_holds_events_in_memory_then_writes_them_in_order(tmp_path: Path) -> None:
    delivery = Delivery(UNREACHABLE, Spool(tmp_path), b"h1", memory_bytes=1_000_000)
    delivery.submit(events(0, 5))
    size = next(tmp_path.glob("*.seg")).stat().st_size
    errors = signals.spool_write_errors.value()
    with disk_full(size + 10):
        delivery.submit(events(5, 5))
        delivery.submit(events(10, 5))
    assert signals.spool_write_errors.value() == errors + 1  # then it waits in memory, no retry storm
    assert len(delivery.memory) == 2 and delivery.pending == 15
    delivery.submit(events(15, 5))  # space again: memory first, then the new batch
    assert not delivery.memory
    assert drain(delivery.spool) == [(0, 5), (5, 5), (10, 5), (15, 5)]
    delivery.close()


def test_full_disk_for_long_sheds_oldest_from_memory_and_counts_it(tmp_path: Path) -> None:
    delivery = Delivery(UNREACHABLE, Spool(tmp_path), b"h1", memory_bytes=3000)
    with disk_full(0):
        for i in range(20):
            delivery.submit(events(i * 5, 5))
    assert delivery.dropped["disk_full"] > 0
    assert delivery.dropped["disk_full"] + delivery.pending == 100
    assert delivery.memory[-1][1] == 95  # the newest batch is kept
    delivery.close()


def test_oversized_cycle_is_split_into_messages_in_seq_order() -> None:
    batch = events(0, 100)
    parts = split_batches(batch, max_bytes=5000)
    assert len(parts) > 1 and all(len(value) <= 5000 for _, value in parts)
    assert [e.seq for part, _ in parts for e in part] == list(range(100))


def test_replay_is_rate_limited(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(100):
        spool.append(b"[]", i, 1)
    delivery = Delivery(UNREACHABLE, spool, b"h1", max_inflight=1000, rate_msgs=10.0)
    delivery.pump()
    delivery.pump()
    assert 10 <= len(delivery.inflight) <= 11  # one burst, not the whole backlog
    assert [r.first_seq for r in delivery.inflight] == list(range(len(delivery.inflight)))
    delivery.close()


def test_batch_the_client_refuses_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"x" * 5_000_000, 0, 1)  # above the producer's message.max.bytes
    spool.append(b"[]", 1, 1)
    delivery = Delivery(UNREACHABLE, spool, b"h1")
    delivery.pump()
    assert delivery.dropped == {"rejected": 1}
    assert [r.first_seq for r in delivery.inflight] == [1]  # the next batch still goes out
    delivery.close()


def test_event_json_cannot_carry_is_dropped_and_counted(tmp_path: Path) -> None:
    delivery = Delivery(UNREACHABLE, Spool(tmp_path), b"h1")
    batch = events(0, 3)
    batch[1] = batch[1].replace(payload={"values": {"x": 2**70}})  # beyond 64-bit JSON integers
    delivery.submit(batch)
    assert delivery.dropped == {"unencodable": 1} and delivery.spool.last_seq == 2
    assert drain(delivery.spool) == [(0, 1), (2, 1)]  # the gap in seq shows the loss downstream
    delivery.close()


def test_bytes_in_flight_stay_bounded_while_the_broker_is_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9, segment_bytes=64 * 1024 * 1024)
    for i in range(40):
        spool.append(b"[" + b" " * 890_000 + b"]", i, 1)
    delivery = Delivery(UNREACHABLE, spool, b"h1", rate_bytes=10**9)
    delivery.pump()  # must return: handing 40 x 0.9 MB to the client would fill its queue and block
    assert 0 < sum(len(r.value) for r in delivery.inflight) <= 16 * 1024 * 1024
    delivery.close()
