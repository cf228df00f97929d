"""The Faust workarounds: ChangelogBuffer (Faust commits offsets only after every earlier table change is
acknowledged), and canaries that fail if the Faust internals or faults both workarounds rely on change.
OffsetGuard's own unit tests are in test_stream_offset_guard.py."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.producer import Producer, ProducerBuffer
from faust.types import TP as TopicPartition

from streams.faust_fixes import (
    ChangelogBuffer,
    ChangelogWriteFailed,
    OffsetGuard,
    Verdict,
    cap_commits,
    committed_offset,
)


def make_buffer() -> ChangelogBuffer:
    buffer = ChangelogBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    return buffer


def test_flush_waits_for_every_acknowledgement_even_when_slow() -> None:
    async def scenario() -> None:
        buffer = make_buffer()
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        buffer.put(first)
        buffer.put(second)
        flush = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0.3)  # longer than Faust's own flush waits for progress
        assert not flush.done()
        first.set_result("ok")
        await asyncio.sleep(0.05)
        assert not flush.done()
        later = loop.create_future()
        buffer.put(later)  # put after the flush began: not part of what it must wait for
        second.set_result("ok")
        await asyncio.wait_for(flush, 1.0)
        assert buffer.unacked == {later}

    asyncio.run(scenario())


def test_a_failed_changelog_write_stops_the_commit() -> None:
    async def scenario() -> None:
        buffer = make_buffer()
        fut = asyncio.get_running_loop().create_future()
        buffer.put(fut)
        fut.set_exception(ConnectionError("broker gone"))
        with pytest.raises(ChangelogWriteFailed, match="broker gone"):
            await buffer.flush()
        await buffer.flush()  # nothing outstanding any more

    asyncio.run(scenario())


def test_the_worker_app_uses_it(tmp_path: Path) -> None:
    from contract.settings import KafkaSettings
    from streams.app import build_app
    from streams.settings import WorkerSettings

    app = build_app(KafkaSettings(bootstrap="127.0.0.1:1"), WorkerSettings(app_id="t-buffer"), tmp_path)
    assert isinstance(app.producer.buffer, ChangelogBuffer)


# --- Canaries: the Faust internals the workarounds lean on, and the faulty behaviour they work around. ---
# If one of these fails after a Faust upgrade, re-read streams/faust_fixes.py before changing anything: the
# workaround may no longer be installed where Faust looks, or Faust may have fixed the fault itself.

T = TopicPartition("hw.telemetry", 0)


def worker_app(tmp_path: Path, name: str) -> Any:
    from contract.settings import KafkaSettings
    from streams.app import build_app
    from streams.settings import WorkerSettings

    return build_app(KafkaSettings(bootstrap="127.0.0.1:1"), WorkerSettings(app_id=name), tmp_path)


def test_canary_faust_version_is_the_checked_one() -> None:
    from importlib.metadata import version

    assert version("faust-streaming") == "0.15.3", "faust-streaming changed: re-check streams/faust_fixes.py"


def test_canary_producer_buffer_interface() -> None:
    assert list(inspect.signature(ProducerBuffer.put).parameters) == ["self", "fut"]
    assert list(inspect.signature(ProducerBuffer.flush).parameters) == ["self"]
    assert inspect.iscoroutinefunction(ProducerBuffer.flush)
    assert inspect.iscoroutinefunction(ProducerBuffer.on_stop)
    assert "self.buffer = ProducerBuffer(" in inspect.getsource(Producer.__init__)


def test_canary_faust_flush_gives_up_after_a_tenth_of_a_second() -> None:
    """The fault ChangelogBuffer exists for: Faust's own flush returns with changes not yet acknowledged."""

    class Fut(asyncio.Future):  # type: ignore[type-arg]
        message: Any

    async def scenario() -> None:
        handing_over = asyncio.Event()

        async def publish_message(fut: Any, wait: bool = False) -> None:
            await handing_over.wait()  # a busy producer: the hand-over to Kafka takes a while

        buffer = ProducerBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
        await buffer.start()
        try:
            futs = [Fut() for _ in range(3)]
            for f in futs:
                f.message = SimpleNamespace(channel=SimpleNamespace(publish_message=publish_message))
                buffer.put(f)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await asyncio.wait_for(buffer.flush(), 5.0)
            took = time.monotonic() - started
            assert took < 1.0, f"Faust's flush waited {took:.2f} s: did Faust fix its flush?"
            assert not any(f.done() for f in futs)  # returned with nothing acknowledged
        finally:
            handing_over.set()
            for _ in range(50):  # let the buffer's task hand over the rest before stopping it
                if buffer.size == 0:
                    break
                await asyncio.sleep(0.02)
            await buffer.stop()

    asyncio.run(scenario())


def test_canary_the_app_producer_flushes_through_the_changelog_buffer(tmp_path: Path) -> None:
    app = worker_app(tmp_path, "t-canary-flush")

    async def scenario() -> None:
        fut = asyncio.get_running_loop().create_future()
        app.producer.send_soon(fut)  # how a table write reaches the producer
        assert app.producer.buffer.unacked == {fut}
        flush = asyncio.ensure_future(app.producer.flush())
        await asyncio.sleep(0.3)
        assert not flush.done()
        fut.set_result("ok")
        await asyncio.wait_for(flush, 1.0)

    asyncio.run(scenario())


def test_canary_consumer_flushes_the_producer_before_committing_and_remembers_the_offset(tmp_path: Path) -> None:
    """Commit order (ChangelogBuffer) and Consumer._committed_offset (read by the OffsetGuard)."""
    app = worker_app(tmp_path, "t-canary-commit")
    consumer = app.consumer
    calls: list[str] = []

    async def flush() -> None:
        calls.append("flush")

    async def commit(offsets: Any) -> bool:
        calls.append(f"commit {dict(offsets)[T]}")
        return True

    app.producer.flush = flush
    consumer._commit = commit
    consumer.assignment = lambda: {T}
    assert committed_offset(app, T) is None
    asyncio.run(consumer._commit_offsets({T: 42}))
    assert calls == ["flush", "commit 42"]
    assert committed_offset(app, T) == 42


def test_canary_seek_resets_the_read_offset_and_lower_offsets_are_dropped(tmp_path: Path) -> None:
    """The fault OffsetGuard exists for: Faust silently drops fetched messages below its read offset and
    delivers a jump past it without complaint; a seek (what the guard's timer does) lowers the read offset."""

    async def scenario() -> list[int]:
        app = worker_app(tmp_path, "t-canary-drop")  # in the running loop: the consumer's tasks need it
        consumer = app.consumer
        assert inspect.iscoroutinefunction(consumer.seek) and inspect.iscoroutinefunction(consumer.position)
        assert callable(consumer.assignment) and callable(consumer.highwater)
        assert hasattr(app, "on_partitions_assigned") and hasattr(app, "on_partitions_revoked")
        delivered: list[int] = []
        fetcher = SimpleNamespace(_stopped=asyncio.Event())

        async def getmany(timeout: float) -> Any:
            for offset in (5, 3, 6, 9):
                yield T, SimpleNamespace(offset=offset, topic=T.topic, key=b"k", value=b"v")
            fetcher._stopped.set()

        async def callback(message: Any) -> None:
            delivered.append(message.offset)

        async def seek(tp: Any, offset: int) -> None:
            pass

        consumer.getmany = getmany
        consumer.callback = callback
        consumer._seek = seek
        await consumer.seek(T, 4)
        assert consumer._read_offset[T] == 4
        await asyncio.wait_for(consumer._drain_messages(fetcher), 10.0)
        return delivered

    assert asyncio.run(scenario()) == [5, 6, 9]


def test_canary_faust_commits_past_one_message_it_never_delivered_and_the_cap_stops_it(tmp_path: Path) -> None:
    """Faust's _new_offset treats the committed offset as the last one handled (it is the next one to
    read): a single message missing right after it is committed past. cap_commits holds the commit."""
    app = worker_app(tmp_path, "t-canary-gap")
    consumer = app.consumer
    consumer._committed_offset[T] = 31
    consumer._acked[T] = [32, 33, 34, 35, 36, 37]  # 31 was never delivered: the guard skips 32-37 meanwhile
    assert consumer._filter_committable_offsets([T]) == {T: 38}  # the fault

    guard = OffsetGuard()
    assert guard.admit(T, 32, 31) is Verdict.LOST
    cap_commits(consumer, guard)
    cap_commits(consumer, guard)  # once per consumer
    consumer._acked[T] = [32, 33, 34, 35, 36, 37]
    assert consumer._filter_committable_offsets([T]) == {}  # nothing past 31 is handled
    for o in range(31, 38):  # the re-fetch delivers 31 and what came after it again
        guard.admit(T, o, 31)
    consumer._acked[T] = list(range(31, 38))
    assert consumer._filter_committable_offsets([T]) == {T: 38}


def test_the_worker_app_caps_its_commits_once_partitions_are_assigned(tmp_path: Path) -> None:
    from contract.settings import KafkaSettings

    app = worker_app(tmp_path, "t-cap")
    TELEMETRY = TopicPartition(KafkaSettings(bootstrap="127.0.0.1:1").topics.telemetry, 0)

    async def earliest_offsets(*tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, 3)

    async def scenario() -> Any:
        app.consumer.earliest_offsets = earliest_offsets
        await app.on_partitions_assigned.send({TELEMETRY, TopicPartition("elsewhere", 0)})
        return app.consumer

    consumer = asyncio.run(scenario())
    guard = consumer._herdwatch_capped_by
    assert isinstance(guard, OffsetGuard)
    assert guard.start == {TELEMETRY: 3}  # its source partitions' log starts
    consumer._acked[T] = [5, 6]
    assert consumer._filter_committable_offsets([T]) == {}  # the app's guard has handled nothing
