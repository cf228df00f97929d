"""The host stage's identity check (streams/host_keys.py through the hosts agent, no broker): a host's key is
pinned on first use; a forged huge-seq batch and a forged goodbye from another producer are dead-lettered with
an identity_conflict finding (at most one per host per hour) and change nothing; the real host's later events
are processed normally; unsigned batches are refused unless the setting allows them, and then only for hosts
that never signed; the pin is the table's typed record; an operator's re-pin admits exactly the named key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from stream_fakes import FakeApp, FakeTopic

from contract.events import Event, encode_batch
from contract.signing import fingerprint
from simulator.keys import SimulatedKeys
from simulator.presets import Clones
from streams import signals
from streams.faust_fixes import OffsetGuard
from streams.host_agent import add_host_agent
from streams.host_keys import CONFLICT_REPEAT_S, HostKey
from streams.hosts import HostSeq
from streams.outputs import Outputs
from streams.settings import WorkerSettings
from streams.topology import Topology

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REAL = SimulatedKeys(b"the real fleet")
FORGER = SimulatedKeys(b"somebody else")


class Stage:
    """The hosts agent over in-memory tables; `feed` runs messages through it in order, like Faust would."""

    def __init__(self, **settings: Any) -> None:
        self.app = FakeApp()
        self.topo = Topology(FakeTopic("t.telemetry"), FakeTopic("t.observations"), FakeTopic("t.anomalies"),
                             FakeTopic("t.rollouts"), FakeTopic("t.lifecycle"), FakeTopic("t.deadletter", 1),
                             host_seq={}, host_state={}, baselines={}, rollout_state={}, members={}, host_keys={})
        add_host_agent(self.app, self.topo, Outputs(self.topo), WorkerSettings(app_id="t", **settings),
                       OffsetGuard())
        self.offset = 0

    def feed(self, *messages: tuple[bytes, bytes, list[tuple[str, bytes]] | None, float]) -> None:
        items = []
        for key, value, headers, ts in messages:
            items.append(SimpleNamespace(value=value, key=key, message=SimpleNamespace(
                tp=("t.telemetry", 0), topic="t.telemetry", partition=0, offset=self.offset, timestamp=ts,
                timestamp_type=0, headers=headers)))
            self.offset += 1

        class Stream:
            async def events(self) -> AsyncIterator[Any]:
                for item in items:
                    yield item

        asyncio.run(self.app.agents["hosts"](Stream()))

    def seq(self, host: str) -> HostSeq:
        return HostSeq.from_json(self.topo.host_seq[host])

    def findings(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in (orjson.loads(m["value"]) for m in self.topo.anomalies.sent) if f["kind"] == kind]

    def dead_reasons(self) -> list[str]:
        return [dict(m["headers"])["reason"].decode() for m in self.topo.deadletter.sent]

    def observed(self) -> list[dict[str, Any]]:
        return [o for m in self.topo.observations.sent for o in orjson.loads(m["value"]).get("obs", [])]


def signed(events: list[Event], keys: SimulatedKeys | None, ts: float) -> tuple[bytes, bytes, Any, float]:
    key, value = events[0].host_id.encode(), encode_batch(events)
    return key, value, keys.headers(key, value) if keys is not None else None, ts


def fleet() -> tuple[Clones, Any]:
    clones = Clones(2, start=T0)
    return clones, clones.hosts[0]


def test_first_signed_batch_pins_the_key_in_the_typed_record() -> None:
    clones, h = fleet()
    stage = Stage()
    stage.feed(signed(clones.step(h, T0), REAL, T0.timestamp()))
    pin = HostKey.from_json(orjson.loads(orjson.dumps(stage.topo.host_keys[h.host_id])))  # through JSON
    assert pin == HostKey(REAL.key_for(h.host_id.encode()).public, T0.timestamp(), None)
    assert stage.topo.deadletter.sent == [] and h.host_id in stage.topo.host_seq


def test_forged_huge_seq_and_forged_goodbye_are_dead_lettered_and_change_nothing() -> None:
    clones, h = fleet()
    stage = Stage()
    first = clones.step(h, T0)
    stage.feed(signed(first, REAL, T0.timestamp()))
    before_seq, before_state = stage.seq(h.host_id), stage.topo.host_state[h.host_id]
    observed = len(stage.observed())
    dead_before = signals.events_dead_lettered.value(reason="identity conflict")

    # another producer claims the host: a batch with a huge seq, then a goodbye, signed with its own key
    real_seq = h.seq
    forged_seq = clones.step(h, T0 + timedelta(seconds=10))
    forged_seq = [e.replace(seq=2**62 + i) for i, e in enumerate(forged_seq)]
    forged_bye = clones.goodbye(h, T0 + timedelta(seconds=11))
    h.seq = real_seq  # the real host's own sequence goes on where it was
    stage.feed(signed(forged_seq, FORGER, T0.timestamp() + 10), signed(forged_bye, FORGER, T0.timestamp() + 11))

    assert stage.seq(h.host_id) == before_seq and stage.topo.host_state[h.host_id] == before_state
    assert len(stage.observed()) == observed  # nothing went on to the cohort stage (no "gone")
    reasons = stage.dead_reasons()
    assert len(reasons) == 2 and all(r.startswith("identity conflict") for r in reasons), reasons
    real_fp, forged_fp = fingerprint(REAL.key_for(h.host_id.encode()).public), \
        fingerprint(FORGER.key_for(h.host_id.encode()).public)
    assert all(real_fp in r and forged_fp in r for r in reasons)
    assert signals.events_dead_lettered.value(reason="identity conflict") == dead_before + 2
    [conflict] = stage.findings("identity_conflict")  # one finding for both: at most one per hour
    assert conflict["host_id"] == h.host_id and conflict["image_id"] == first[0].image_id
    assert conflict["details"]["pinned"] == real_fp and conflict["details"]["offered"] == forged_fp
    assert real_fp in conflict["explanation"] and forged_fp in conflict["explanation"]

    # the real host goes on: its next events are applied normally (not duplicates of the forged seq)
    real_next = clones.step(h, T0 + timedelta(seconds=20))
    stage.feed(signed(real_next, REAL, T0.timestamp() + 20))
    after = stage.seq(h.host_id)
    assert after.seq == real_next[-1].seq and after.seq < 2**62
    assert len(stage.dead_reasons()) == 2 and stage.findings("data_loss") == []
    assert len(stage.observed()) > observed and not any(o.get("gone") for o in stage.observed())

    # an hour later a new forgery is reported again
    stage.feed(signed(clones.goodbye(h, T0 + timedelta(hours=1)), FORGER,
                      T0.timestamp() + 10 + CONFLICT_REPEAT_S))
    assert len(stage.findings("identity_conflict")) == 2


def test_an_unsigned_batch_is_refused_when_signatures_are_required() -> None:
    clones, h = fleet()
    stage = Stage()
    stage.feed(signed(clones.step(h, T0), None, T0.timestamp()))
    assert h.host_id not in stage.topo.host_seq
    [reason] = stage.dead_reasons()
    assert reason.startswith("identity conflict: unsigned batch")
    [conflict] = stage.findings("identity_conflict")
    assert conflict["details"] == {"pinned": "none", "offered": "none", "reason": reason}
    assert HostKey.from_json(stage.topo.host_keys[h.host_id]).key is None  # only the report time is kept


def test_without_required_signatures_unsigned_hosts_pass_but_a_signing_host_must_go_on_signing() -> None:
    clones, h = fleet()
    other = clones.hosts[1]
    stage = Stage(require_signatures=False)
    stage.feed(signed(clones.step(other, T0), None, T0.timestamp()),  # a third-party producer
               signed(clones.step(h, T0), REAL, T0.timestamp()))
    assert other.host_id in stage.topo.host_seq and other.host_id not in stage.topo.host_keys
    assert h.host_id in stage.topo.host_keys
    before = stage.seq(h.host_id)
    stage.feed(signed([e.replace(seq=2**62) for e in clones.goodbye(h, T0 + timedelta(seconds=5))], None,
                      T0.timestamp() + 5))  # unsigned forgery of a signing host
    assert stage.seq(h.host_id) == before
    expected = f"identity conflict: unsigned batch for host {h.host_id}"
    assert [r.split(",")[0] for r in stage.dead_reasons()] == [expected]
    assert len(stage.findings("identity_conflict")) == 1
    # a signature that does not verify is refused too (here: the value changed after signing)
    key, value, headers, ts = signed(clones.step(h, T0 + timedelta(seconds=6)), REAL, T0.timestamp() + 6)
    stage.feed((key, value.replace(b'"seq":', b'"seq": '), headers, ts))
    assert "bad signature" in stage.dead_reasons()[-1]


def test_an_operator_repin_admits_exactly_the_new_key() -> None:
    clones, h = fleet()
    reimaged = SimulatedKeys(b"after the re-image")
    new_fp = fingerprint(reimaged.key_for(h.host_id.encode()).public)
    stage = Stage(repin={h.host_id: new_fp})
    stage.feed(signed(clones.step(h, T0), REAL, T0.timestamp()),
               signed(clones.step(h, T0 + timedelta(seconds=10)), FORGER, T0.timestamp() + 10),
               signed(clones.step(h, T0 + timedelta(seconds=20)), reimaged, T0.timestamp() + 20),
               signed(clones.step(h, T0 + timedelta(seconds=30)), REAL, T0.timestamp() + 30))
    pin = HostKey.from_json(stage.topo.host_keys[h.host_id])
    assert pin.key == reimaged.key_for(h.host_id.encode()).public
    reasons = stage.dead_reasons()
    assert len(reasons) == 2  # the forger's key, and afterwards the old key, are refused
    assert fingerprint(FORGER.key_for(h.host_id.encode()).public) in reasons[0]
    assert fingerprint(REAL.key_for(h.host_id.encode()).public) in reasons[1] and new_fp in reasons[1]
