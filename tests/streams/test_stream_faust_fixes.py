"""ChangelogBuffer: Faust commits offsets only after every earlier table change is acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from streams.faust_fixes import ChangelogBuffer, ChangelogWriteFailed


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
