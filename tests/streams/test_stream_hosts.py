"""The host stage's logic (pure): replays, sequence gaps, rejoin after a timeout, keep-alives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from simulator.presets import Clones
from streams.hosts import process_host_batch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_first_batch_makes_a_first_observation_and_state() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    res = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    assert res.observations and res.observations[0].first
    assert any(f.startswith("proc:/usr/sbin/nginx") for f in res.observations[0].added)
    assert res.state is not None and res.seq is not None
    assert (res.seq.boot_id, res.seq.seq) == (h.boot_id, h.seq - 1)
    assert res.findings == [] and res.duplicates == 0


def test_replayed_events_are_skipped_and_change_nothing() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    first = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    fleet.attack(h, "cryptominer")
    batch = fleet.step(h, T0 + timedelta(seconds=10))
    once = process_host_batch(batch, first.seq, first.state, 300, 30)
    assert once.observations and "xmrig" in " ".join(once.observations[0].added)
    again = process_host_batch(batch, once.seq, once.state, 300, 30)  # a replay after a crash
    assert again.duplicates == len(batch) and again.observations == [] and again.state is None
    assert again.seq == once.seq


def test_sequence_gap_is_a_data_loss_finding() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    first = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    h.seq += 5
    res = process_host_batch(fleet.step(h, T0 + timedelta(seconds=10)), first.seq, first.state, 300, 30)
    assert res.lost == 5
    [f] = res.findings
    assert f.kind == "data_loss" and f.host_id == h.host_id and "5 event(s)" in f.explanation


def test_host_back_after_timeout_rejoins_with_its_whole_state() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    first = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    later = T0 + timedelta(seconds=900)
    res = process_host_batch(fleet.step(h, later), first.seq, first.state, 300, 30)
    rejoin = res.observations[0]
    assert rejoin.first and rejoin.time == later
    assert set(first.observations[0].added) <= set(rejoin.added)


def test_quiet_host_sends_keepalive_only_every_touch_interval() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    res = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    seq, state = res.seq, res.state
    sent = []
    for i in range(1, 10):  # heartbeats every 10 s: nothing changes
        hb = fleet.heartbeat(h, T0 + timedelta(seconds=10 * i))
        r = process_host_batch(hb, seq, state, 300, 30)
        seq, state = r.seq, r.state or state
        sent.append(len(r.observations))
    assert sent == [0, 0, 1, 0, 0, 1, 0, 0, 1]


def test_goodbye_makes_a_gone_observation() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    first = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    res = process_host_batch(fleet.goodbye(h, T0 + timedelta(seconds=5)), first.seq, first.state, 300, 30)
    [obs] = res.observations
    assert obs.gone and set(obs.removed) == set(first.observations[0].added)


def test_merge_cancels_features_added_and_removed_within_a_batch() -> None:
    from detectors.types import Observation
    from streams.hosts import merge

    def o(seconds: int, **kw: object) -> Observation:
        return Observation("h", "ami-1", "web", T0 + timedelta(seconds=seconds), **kw)  # type: ignore[arg-type]

    merged = merge([o(0, first=True, added=("a", "b")), o(1, removed=("b",), metrics={"cpu": 1.0}),
                    o(2, added=("c",), metrics={"cpu": 2.0}), o(3, gone=True, removed=("a", "c")),
                    o(4, first=True, added=("a",))])
    assert [(m.added, m.removed, m.metrics, m.first, m.gone) for m in merged] == [
        (("a", "c"), (), {"cpu": 2.0}, True, False), ((), ("a", "c"), {}, False, True),
        (("a",), (), {}, True, False)]
    assert merged[0].time == T0 + timedelta(seconds=2)


def test_a_host_with_a_wrong_clock_gets_one_clock_skew_finding_an_hour() -> None:
    import orjson

    from contract.events import decode_batch, encode_batch
    from contract.findings import FindingKind
    from streams.hosts import HostSeq

    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    arrival = T0 + timedelta(days=200)  # the host's clock is 200 days behind the broker's
    seq, state = None, None
    found = []
    for minute in (0, 10, 50, 70):
        batch = fleet.step(h, T0 + timedelta(minutes=minute))
        events, rejected = decode_batch(encode_batch(batch), key=h.host_id,
                                        received=arrival + timedelta(minutes=minute))
        assert rejected == [] and all(e.time == arrival + timedelta(minutes=minute) for e in events)
        res = process_host_batch(events, seq, state, 300, 30)
        seq, state = res.seq, res.state or state
        found += [f.time - arrival for f in res.findings if f.kind == FindingKind.CLOCK_SKEW]
    assert found == [timedelta(0), timedelta(minutes=70)]  # once, then again after an hour
    assert seq is not None and HostSeq.from_json(orjson.loads(orjson.dumps(seq.to_json()))) == seq


def test_a_message_that_only_moves_the_newest_event_time_writes_no_host_state() -> None:
    fleet = Clones(1, start=T0)
    h = fleet.hosts[0]
    first = process_host_batch(fleet.step(h, T0), None, None, 300, 30)
    assert first.state is not None
    quiet = process_host_batch(fleet.heartbeat(h, T0 + timedelta(seconds=10)), first.seq, first.state, 300, 30)
    assert quiet.state is None  # only `t` moved: host_seq's last_seen has it
    assert quiet.seq is not None and quiet.seq.last_seen == (T0 + timedelta(seconds=10)).timestamp()
    fleet.attack(h, "cryptominer")
    changed = process_host_batch(fleet.step(h, T0 + timedelta(seconds=20)), quiet.seq, first.state, 300, 30)
    assert changed.state is not None and changed.state["t"] == (T0 + timedelta(seconds=20)).timestamp()
    assert changed.state["p"] != first.state["p"]  # the miner's process is written
