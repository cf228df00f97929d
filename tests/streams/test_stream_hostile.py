"""The host and cohort stages against valid-but-adversarial input: generated event sequences (random order,
duplicate seqs, boot changes, seq jumps up to 2**63-1, goodbyes mid-batch, huge inventories, many tiny
batches, identical or far-apart times, hosts switching image, payload extras of the wrong type) are run
through `process_host_batch` with the state threaded through JSON exactly like the Faust tables keep it,
and the resulting observations through a `FamilyEngine` per family. Nothing raises; seq never goes
backwards within a boot; an event already applied is counted as a duplicate and never applied again; the
state always round-trips through JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from contract.events import MAX_SEQ, Event, Kind, decode_batch, encode_batch
from detectors import FamilyEngine, HostState
from streams import codec
from streams.hosts import HostResult, HostSeq, process_host_batch

EXAMPLES = 500
ENGINE_EXAMPLES = 200  # each runs every detector of a fresh engine per family
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
HOSTS = ["i-0aaa", "i-0bbb", "i-0ccc"]
IMAGES = ["ami-1", "ami-2", "ami-3"]
FAMILIES = {"ami-1": "web", "ami-2": "web", "ami-3": "api"}
BOOTS = ["boot-a", "boot-b", "boot-c", "boot-d"]

odd_value = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
                      st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2))
hostile_text = st.one_of(st.text(max_size=40), st.sampled_from(["", "\x00", "\x1b[31m", "\u202e", "/tmp/.x/xmrig",
                                                                "a" * 5000]))


@st.composite
def extras(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    """Optional fields the contract does not check, with values of any type."""
    return {n: draw(odd_value) for n in draw(st.lists(st.sampled_from(names), max_size=3, unique=True))}


@st.composite
def proc(draw: st.DrawFn) -> dict[str, Any]:
    p = {"pid": draw(st.integers(0, 50)), "exe": draw(st.sampled_from(["/usr/sbin/nginx", "/bin/sh", "/tmp/x", ""])),
         "cmdline": draw(hostile_text), "user": draw(st.sampled_from(["root", "www-data", ""]))}
    return {**p, **draw(extras(["ppid", "name", "parents", "start_time"]))}


@st.composite
def sock(draw: st.DrawFn) -> dict[str, Any]:
    s = {"state": draw(st.sampled_from(["listen", "established", "weird"])),
         "proto": draw(st.sampled_from(["tcp", "udp6", "", "666"])), "laddr": draw(st.sampled_from(["0.0.0.0", "::"])),
         "lport": draw(st.integers(-1, 70000))}
    return {**s, **draw(extras(["raddr", "rport", "pid", "exe"]))}


def big_inventory(kind: Kind, n: int) -> dict[str, Any]:
    """A snapshot of n items (built, not drawn: thousands of items per example stay cheap)."""
    if kind == Kind.PROCESS_INVENTORY:
        return {"items": [{"pid": i, "exe": f"/opt/p{i}", "cmdline": f"p{i} --x", "user": "root"} for i in range(n)]}
    if kind == Kind.NET_INVENTORY:
        return {"items": [{"state": "established", "proto": "tcp", "laddr": "10.0.0.1", "lport": 40000 + i % 20000,
                           "raddr": f"203.0.113.{i % 250}", "rport": 1 + i} for i in range(n)]}
    return {"items": {f"key{i}": f"v{i}" for i in range(n)}}


@st.composite
def payload(draw: st.DrawFn, kind: Kind) -> dict[str, Any]:
    if kind in (Kind.PROCESS_INVENTORY, Kind.NET_INVENTORY, Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY,
                Kind.MODULE_INVENTORY) and draw(st.integers(0, 9)) == 0:
        return big_inventory(kind, draw(st.sampled_from([0, 1, 4000, 6000])))
    if kind == Kind.HELLO:
        return {"agent_version": "1.0", "boot_time": draw(st.integers(0, 2**40)), **draw(extras(["shed", "os"]))}
    if kind == Kind.HEARTBEAT:
        return {"events_sent": draw(st.integers(-5, 2**63 - 1)), "events_dropped": 0,
                **draw(extras(["shed", "cpu_pct"]))}
    if kind == Kind.GOODBYE:
        return {"reason": draw(hostile_text)}
    if kind in (Kind.PROCESS_START, Kind.PROCESS_EXIT):
        return draw(proc())
    if kind == Kind.PROCESS_INVENTORY:
        return {"items": draw(st.lists(proc(), max_size=6))}
    if kind in (Kind.NET_OPEN, Kind.NET_CLOSE):
        return draw(sock())
    if kind == Kind.NET_INVENTORY:
        return {"items": draw(st.lists(sock(), max_size=6))}
    if kind == Kind.LOGIN_INVENTORY:
        item = st.fixed_dictionaries({"user": st.sampled_from(["root", "bob", ""])},
                                     optional={"terminal": odd_value, "host": odd_value, "started": odd_value})
        return {"items": draw(st.lists(item, max_size=4))}
    if kind == Kind.AUTH_ATTEMPT:
        return {"user": draw(hostile_text), "outcome": draw(st.sampled_from(["success", "failure", "?"]))}
    if kind == Kind.METRICS:
        return {"values": draw(st.dictionaries(st.sampled_from(["cpu_pct", "mem_pct", "load1", "x", ""]),
                                               st.one_of(st.integers(-(2**63), 2**63 - 1),
                                                         st.floats(allow_nan=False, allow_infinity=False)),
                                               max_size=4))}
    if kind in (Kind.CONFIG_INVENTORY, Kind.PACKAGE_INVENTORY, Kind.MODULE_INVENTORY):
        values = st.one_of(st.none(), hostile_text) if kind == Kind.CONFIG_INVENTORY else hostile_text
        return {"items": draw(st.dictionaries(hostile_text, values, max_size=4))}
    return {"key": draw(hostile_text), "before": draw(st.one_of(st.none(), hostile_text)),
            "after": draw(st.one_of(st.none(), hostile_text))}


seqs = st.one_of(st.integers(0, 20), st.integers(0, MAX_SEQ), st.sampled_from([MAX_SEQ, MAX_SEQ - 1, 2**62]))
times = st.one_of(st.just(T0), st.integers(-10, 600).map(lambda s: T0 + timedelta(seconds=s)),
                  st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2199, 12, 30),
                               timezones=st.just(UTC)))


@st.composite
def event(draw: st.DrawFn, host: str) -> Event:
    kind = draw(st.sampled_from(list(Kind)))
    image = draw(st.sampled_from(IMAGES))
    return Event(kind=kind, time=draw(times), host_id=host, boot_id=draw(st.sampled_from(BOOTS)), image_id=image,
                 image_family=FAMILIES[image], seq=draw(seqs), payload=draw(payload(kind)),
                 tags={"cloud.region": "eu-west-1"}, event_id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))))


@st.composite
def host_batches(draw: st.DrawFn) -> list[list[Event]]:
    """Batches of one or several hosts, as the host stage sees them: each one host's, in message order."""
    batches: list[list[Event]] = []
    for _ in range(draw(st.integers(1, 12))):
        host = draw(st.sampled_from(HOSTS))
        evs = draw(st.lists(event(host), min_size=1, max_size=draw(st.sampled_from([1, 3, 12]))))
        replay: bool = draw(st.booleans())
        if batches and replay:  # a replay of an earlier batch of this host, or a mix of it
            old = [e for e in draw(st.sampled_from(batches)) if e.host_id == host]
            evs = draw(st.permutations(old + evs))
        batches.append(evs)
    return batches


def through_contract(events: list[Event]) -> list[Event]:
    """The events exactly as the worker decodes them from a message keyed by their host."""
    decoded, rejected = decode_batch(encode_batch(events), key=events[0].host_id)
    assert rejected == [], rejected
    return decoded


def json_round_trip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


class Model:
    """What the stage must do with seqs: per host and boot, the last seq applied."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, int]] = {}
        self.current: dict[str, str] = {}

    def expect(self, events: list[Event]) -> int:
        """Duplicates expected in this batch of one host (an event at or below its boot's last seq)."""
        dups = 0
        for e in events:
            boots = self.last.setdefault(e.host_id, {})
            if e.boot_id in boots and e.seq <= boots[e.boot_id]:
                dups += 1
                continue
            boots[e.boot_id] = e.seq
            self.current[e.host_id] = e.boot_id
        return dups


def run_host_stage(batches: list[list[Event]]) -> list[HostResult]:
    """Drive the host stage like the agent does, the tables as JSON between messages."""
    host_seq: dict[str, Any] = {}
    host_state: dict[str, Any] = {}
    model = Model()
    results = []
    for batch in batches:
        evs = through_contract(batch)
        host = evs[0].host_id
        stored = host_seq.get(host)
        old = HostSeq.from_json(stored) if stored else None
        res = process_host_batch(evs, old, host_state.get(host), 300.0, 30.0)
        expected_dups = model.expect(evs)
        assert res.duplicates == expected_dups
        if res.seq is not None:
            assert HostSeq.from_json(json_round_trip(res.seq.to_json())) == res.seq
            if old is not None and res.seq.boot_id == old.boot_id:
                assert res.seq.seq >= old.seq, "seq went backwards within a boot"
            assert res.seq.boot_id == model.current[host]
            assert res.seq.seq == model.last[host][res.seq.boot_id]
            assert res.seq.first_seen <= res.seq.last_seen
            host_seq[host] = json_round_trip(res.seq.to_json())
        else:
            assert expected_dups == len(evs)
        if expected_dups == len(evs):
            assert res.state is None and res.observations == [] and res.findings == []
        if res.state is not None:
            stored_state = json_round_trip(res.state)
            assert HostState.from_dict(stored_state).to_dict() == stored_state
            host_state[host] = stored_state
        for o in res.observations:
            assert o.host_id == host
        note(f"duplicates in a batch: {bool(res.duplicates)}")
        note(f"an event rejected by the detectors: {bool(res.rejected)}")
        note(f"data loss found: {res.lost > 0}")
        results.append(res)
    return results


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(host_batches())
def test_host_stage_never_raises_and_keeps_its_seq_invariants(batches: list[list[Event]]) -> None:
    run_host_stage(batches)


@settings(max_examples=ENGINE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(host_batches(), st.lists(st.integers(0, 10**7), max_size=3))
def test_cohort_engine_takes_whatever_the_host_stage_sends(batches: list[list[Event]], ticks: list[int]) -> None:
    engines: dict[str, FamilyEngine] = {}
    for res in run_host_stage(batches):
        if not res.observations:
            continue
        observations, tick = codec.decode(codec.encode_observations(res.observations))
        assert tick is None and len(observations) == len(res.observations)
        for o in observations:
            engines.setdefault(o.image_family, FamilyEngine()).process(o)
    for t in ticks:
        for engine in engines.values():
            engine.tick(T0.timestamp() + t)


def test_replay_across_a_reboot_is_counted_not_applied() -> None:
    """Found by the property above: a batch of the previous boot replayed after the host rebooted (a crash
    between the tables' changelog and the offset commit) was applied a second time."""
    def ev(boot: str, seq: int, pid: int) -> Event:
        return Event(kind=Kind.PROCESS_START, time=T0 + timedelta(seconds=seq), host_id="i-0aaa", boot_id=boot,
                     image_id="ami-1", image_family="web", seq=seq,
                     payload={"pid": pid, "exe": f"/bin/p{pid}", "cmdline": "p", "user": "root"})

    first = [ev("boot-a", s, s) for s in range(1, 4)]
    second = [ev("boot-b", s, 100 + s) for s in range(0, 3)]
    a = process_host_batch(first, None, None, 300, 30)
    b = process_host_batch(second, a.seq, a.state, 300, 30)
    replay_a = process_host_batch(first, b.seq, b.state or a.state, 300, 30)
    assert replay_a.duplicates == 3 and replay_a.state is None and replay_a.observations == []
    assert replay_a.seq == b.seq


def test_a_payload_extra_of_the_wrong_type_costs_that_event_only() -> None:
    """Found by the property above: fields the contract does not check (`parents`, `rport`) of a type the
    detectors did not expect made the whole batch fail. Now only that event is rejected, with a reason."""
    base = {"pid": 7, "exe": "/bin/sh", "cmdline": "sh", "user": "root"}
    events = [Event(kind=Kind.PROCESS_START, time=T0, host_id="i-0aaa", boot_id="b", image_id="ami-1",
                    image_family="web", seq=1, payload={**base, "parents": 5}),
              Event(kind=Kind.NET_OPEN, time=T0, host_id="i-0aaa", boot_id="b", image_id="ami-1", image_family="web",
                    seq=2, payload={"state": "established", "proto": "tcp", "laddr": "10.0.0.1", "lport": 40000,
                                    "raddr": "203.0.113.9", "rport": "https"}),
              Event(kind=Kind.PROCESS_START, time=T0, host_id="i-0aaa", boot_id="b", image_id="ami-1",
                    image_family="web", seq=3, payload={**base, "pid": 8, "exe": "/tmp/.x/xmrig"})]
    res = process_host_batch(through_contract(events), None, None, 300, 30)
    assert [(e.seq, "detectors failed" in why) for e, why in res.rejected] == [(1, True), (2, True)]
    assert res.seq is not None and res.seq.seq == 3
    assert any("/tmp/.x/xmrig" in f for o in res.observations for f in o.added)
