"""The simulated fleet: telemetry exactly in the contract, reproducible, with normal life and injected
scenarios visible where (and only where) the ground truth says."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
import yaml

from contract.events import Event, Kind, decode_batch, encode_batch
from contract.ids import event_id_time_ms
from simulator import Fleet
from simulator.scenarios import SCENARIO_DIR, parse_scenario


@pytest.fixture(scope="module")
def ci() -> tuple[Fleet, list[tuple[str, list[Event]]]]:
    fleet = Fleet.from_scenario("ci")
    return fleet, list(fleet.batches())


def by_host(batches: list[tuple[str, list[Event]]]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for _host, events in batches:
        out[events[0].host_id].extend(events)
    return out


def test_every_batch_is_one_hosts_valid_contract_message(ci) -> None:  # type: ignore[no-untyped-def]
    _, batches = ci
    for host_id, events in batches:
        decoded, rejected = decode_batch(encode_batch(events))
        assert rejected == []
        assert {e.host_id for e in decoded} == {host_id}
        assert [e.to_dict() for e in decoded] == [e.to_dict() for e in events]


def test_seq_starts_at_zero_and_has_no_gaps_per_host(ci) -> None:  # type: ignore[no-untyped-def]
    _, batches = ci
    for host_id, events in by_host(batches).items():
        assert [e.seq for e in events] == list(range(len(events))), host_id


def test_event_ids_are_unique_uuid7_carrying_the_event_time(ci) -> None:  # type: ignore[no-untyped-def]
    _, batches = ci
    events = [e for _, evs in batches for e in evs]
    assert len({e.event_id for e in events}) == len(events)
    for e in events[:2000]:
        u = uuid.UUID(e.event_id)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert event_id_time_ms(e.event_id) == int(e.time.timestamp() * 1000)


def test_batches_come_in_event_time_order(ci) -> None:  # type: ignore[no-untyped-def]
    _, batches = ci
    sample_times = [events[-1].time for _, events in batches]
    assert sample_times == sorted(sample_times)
    for events in by_host(batches).values():
        times = [e.time for e in events]
        assert times == sorted(times)


def test_hosts_say_hello_then_send_inventories_metrics_and_heartbeats(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    for host_id, events in by_host(batches).items():
        kinds = [e.kind for e in events]
        assert kinds[0] == Kind.HELLO
        first_batch = next(evs for h, evs in batches if h == host_id)
        assert {
            Kind.PROCESS_INVENTORY,
            Kind.NET_INVENTORY,
            Kind.CONFIG_INVENTORY,
            Kind.PACKAGE_INVENTORY,
            Kind.MODULE_INVENTORY,
            Kind.METRICS,
        } <= {e.kind for e in first_batch}
        n_batches = sum(1 for h, _ in batches if h == host_id)
        assert kinds.count(Kind.METRICS) == n_batches  # metrics every cycle
        if n_batches > 2 * fleet.scenario.heartbeat_every:
            assert Kind.HEARTBEAT in kinds


def test_identity_looks_like_the_cloud(ci) -> None:  # type: ignore[no-untyped-def]
    _, batches = ci
    for _, events in batches:
        e = events[0]
        assert e.host_id.startswith("i-0") and len(e.host_id) == 19
        assert e.image_id.startswith("ami-0")
        assert e.image_family in {"web", "app", "api", "cache", "batch"}
        assert e.tags["cloud.provider"] == "aws" and "cloud.region" in e.tags


def test_same_seed_same_bytes_other_seed_other_fleet() -> None:
    a = [encode_batch(evs) for _, evs in Fleet.from_scenario("ci").batches()]
    b = [encode_batch(evs) for _, evs in Fleet.from_scenario("ci").batches()]
    c = [encode_batch(evs) for _, evs in Fleet.from_scenario("ci", seed=12345).batches()]
    assert a == b
    assert a != c


def test_ephemeral_hosts_come_and_go_some_without_goodbye(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    hosts = by_host(batches)
    batch_hosts = [p for p in fleet.plans.values() if p.cohort == "batch"]
    assert len(batch_hosts) > 3  # replaced as they die
    ended = [p for p in batch_hosts if p.end is not None]
    silent = [p for p in ended if p.goodbye is None]
    polite = [p for p in ended if p.goodbye is not None]
    assert silent and polite
    for p in polite:
        assert hosts[p.host_id][-1].kind == Kind.GOODBYE
    for p in silent:
        assert Kind.GOODBYE not in {e.kind for e in hosts[p.host_id]}
        assert hosts[p.host_id][-1].time < fleet.scenario.start + timedelta(seconds=p.end or 0)


def test_web_clones_see_ssh_guessing_and_client_connections(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    hosts = by_host(batches)
    for host_id in fleet.initial["web"]:
        kinds = Counter(e.kind for e in hosts[host_id])
        assert kinds[Kind.AUTH_ATTEMPT] > 10
        assert kinds[Kind.NET_OPEN] > 20
        failed = [e for e in hosts[host_id] if e.kind == Kind.AUTH_ATTEMPT]
        assert all(e.payload["outcome"] == "failure" for e in failed)
        inbound = [e.payload for e in hosts[host_id] if e.kind == Kind.NET_OPEN and e.payload["lport"] == 443]
        assert len({p["raddr"] for p in inbound}) > 10


def test_config_management_restarts_the_service(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    java = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    restarted = 0
    for host_id in fleet.initial["app"]:
        events = by_host(batches)[host_id]
        exits = [e for e in events if e.kind == Kind.PROCESS_EXIT and e.payload["exe"] == java]
        starts = [e for e in events if e.kind == Kind.PROCESS_START and e.payload["exe"] == java]
        assert len(exits) == len(starts)
        restarted += bool(starts)
        for e in starts:
            assert e.payload["parents"] == ["/usr/lib/systemd/systemd"]
    assert restarted >= len(fleet.initial["app"]) // 2


def test_config_push_reaches_every_live_host(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    push = next(e for e in fleet.scenario.events if e.kind == "config_push")
    at = fleet.scenario.start + timedelta(seconds=push.at)
    hosts = by_host(batches)
    live_at_push = [
        h
        for h, evs in hosts.items()
        if evs[0].time < at
        and evs[-1].time > at + timedelta(seconds=push.duration + fleet.cycle)
        and evs[-1].kind != Kind.GOODBYE
    ]
    assert live_at_push
    for h in live_at_push:
        changes = [e for e in hosts[h] if e.kind == Kind.CONFIG_CHANGE and e.payload["key"] == push.key]
        assert [c.payload["after"] for c in changes] == [push.value], h


def test_compromise_shows_only_on_its_host_inside_its_window(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    miner = next(g for g in fleet.ground_truth if g.attack == "cryptominer")
    starts = [
        (e.host_id, e.time)
        for _, evs in batches
        for e in evs
        if e.kind == Kind.PROCESS_START and "xmrig" in e.payload["exe"]
    ]
    assert [h for h, _ in starts] == [miner.host_id]
    assert miner.start <= starts[0][1] <= miner.start + timedelta(seconds=fleet.cycle)
    exits = [e.time for _, evs in batches for e in evs if e.kind == Kind.PROCESS_EXIT and "xmrig" in e.payload["exe"]]
    assert len(exits) == 1 and miner.end <= exits[0] <= miner.end + timedelta(seconds=fleet.cycle)
    cpu = [
        e.payload["values"]["cpu_pct"]
        for e in by_host(batches)[miner.host_id]
        if e.kind == Kind.METRICS and miner.start + timedelta(seconds=fleet.cycle) < e.time < miner.end
    ]
    assert cpu and min(cpu) > 80


@pytest.mark.parametrize(
    ("attack", "check"),
    [
        ("reverse_shell", lambda e: e.kind == Kind.NET_OPEN and e.payload["rport"] == 4444),
        ("backdoor_port", lambda e: e.kind == Kind.NET_OPEN and e.payload["state"] == "listen"),
        (
            "sshd_tamper",
            lambda e: e.kind == Kind.CONFIG_CHANGE and e.payload["key"] == "sshd.permitrootlogin",
        ),
        (
            "authorized_key",
            lambda e: e.kind == Kind.CONFIG_CHANGE and e.payload["key"] == "authorized_keys:root",
        ),
    ],
)
def test_each_attack_reaches_the_telemetry_of_its_host(ci, attack, check) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    g = next(g for g in fleet.ground_truth if g.attack == attack)
    hits = [e for _, evs in batches for e in evs if check(e)]
    assert hits and {e.host_id for e in hits} == {g.host_id}
    assert g.start <= hits[0].time <= g.start + timedelta(seconds=fleet.cycle)


def test_exfiltration_multiplies_bytes_out(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    g = next(g for g in fleet.ground_truth if g.attack == "exfiltration")
    hosts = by_host(batches)

    def out_bytes(host: str, inside: bool) -> list[float]:
        return [
            e.payload["values"]["net_bytes_out"]
            for e in hosts[host]
            if e.kind == Kind.METRICS
            and (g.start < e.time < g.end) == inside
            and e.time > fleet.scenario.start + timedelta(seconds=30)
        ]

    peer = next(h for h in fleet.initial["web"] if h != g.host_id and h not in {x.host_id for x in fleet.ground_truth})
    assert min(out_bytes(g.host_id, True)) > 5 * max(out_bytes(peer, True))
    assert max(out_bytes(g.host_id, False)) < 2 * max(out_bytes(peer, False))


def test_rollout_replaces_the_whole_cohort_and_leaves_the_stale_host(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    ro = next(g for g in fleet.ground_truth if g.kind == "rollout")
    stale = next(g for g in fleet.ground_truth if g.kind == "stale_image")
    new_image = ro.details["new_image"]
    last_image: dict[str, str] = {}
    for _, evs in batches:
        for e in evs:
            if e.image_family == "api" and e.kind != Kind.GOODBYE:
                last_image[e.host_id] = e.image_id
    final = {h: im for h, im in last_image.items() if h in ro.hosts or h == stale.host_id}
    assert sorted(h for h, im in final.items() if im == new_image) == sorted(ro.hosts)
    assert final[stale.host_id] == ro.details["old_image"]
    assert len(ro.hosts) == len(fleet.initial["api"]) and ro.details["replaced"] == ro.details["of"]
    assert stale.host_id in fleet.initial["api-legacy"] and stale.start == ro.end
    new_procs = {
        p["exe"]
        for _, evs in batches
        for e in evs
        if e.host_id in ro.hosts and e.kind == Kind.PROCESS_INVENTORY
        for p in e.payload["items"]
    }
    assert "/opt/api/releases/v43/bin/node" in new_procs and "/opt/api/releases/v42/bin/node" not in new_procs


def test_rollback_returns_the_cohort_to_the_old_image(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, batches = ci
    rb = next(g for g in fleet.ground_truth if g.kind == "rollback")
    images_at_end = {e.image_id for _, evs in batches[-len(fleet.plans) :] for e in evs if e.image_family == "cache"}
    assert images_at_end == {rb.details["old_image"]}
    assert 0 < rb.details["peak_share"] < 1


def test_ground_truth_is_json_ready_and_names_planned_hosts(ci) -> None:  # type: ignore[no-untyped-def]
    fleet, _ = ci
    kinds = Counter(g.kind for g in fleet.ground_truth)
    assert kinds == {
        "compromise": 6,
        "stale_image": 1,
        "rollout": 1,
        "rollback": 1,
        "traffic_spike": 1,
        "config_push": 1,
    }
    for d in fleet.ground_truth_dicts():
        assert d["start"].endswith("Z") and d["end"] >= d["start"]
        if d["host_id"]:
            assert d["host_id"] in fleet.plans
    assert {h["host_id"] for h in fleet.host_table()} == set(fleet.plans)


def test_injecting_a_scenario_changes_only_its_host() -> None:
    raw = yaml.safe_load((SCENARIO_DIR / "ci.yaml").read_text())
    with_miner = Fleet(parse_scenario(raw))
    without = Fleet(parse_scenario({**raw, "scenarios": [s for s in raw["scenarios"] if s["name"] != "miner"]}))
    miner = next(g.host_id for g in with_miner.ground_truth if g.scenario == "miner")

    def messages(fleet: Fleet) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = defaultdict(list)
        for host_id, events in fleet.batches():
            out[host_id].append(encode_batch(events))
        return out

    a, b = messages(with_miner), messages(without)
    assert set(a) == set(b)
    assert [h for h in a if a[h] != b[h]] == [miner]
