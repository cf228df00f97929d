"""The contract's fast path (`contract.events._fast_time`) accepts exactly what the full check accepts.

Every envelope is judged twice, by `check_envelope` (fast path first) and by `_check_envelope_full` (every
check in order): same verdict, same reason, same time, same re-timing. Mutations cover every field and the
payload checks, and run after valid envelopes have filled the fast path's memory of checked values.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contract import events as ev
from contract.events import ContractError, Event, HostIdentity, Kind, check_envelope

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOST = HostIdentity("i-0abc", "boot-1", "ami-web-1", "web", tags={"cloud.region": "eu-west-1"})

VALID: list[dict[str, Any]] = [
    Event.new(HOST, Kind.NET_OPEN, 1, {"state": "established", "proto": "tcp", "laddr": "10.0.0.1", "lport": 443,
                                       "raddr": "10.0.0.9", "rport": 51000}, NOW).to_dict(),
    Event.new(HOST, Kind.METRICS, 2, {"values": {"cpu_pct": 12.5, "load1": 0.3}}, NOW).to_dict(),
    Event.new(HOST, Kind.PROCESS_INVENTORY, 3, {"items": [{"pid": 1, "exe": "/sbin/init", "cmdline": "init",
                                                           "user": "root", "parents": ["x"]}]}, NOW).to_dict(),
    Event.new(HOST, Kind.PACKAGE_INVENTORY, 4, {"items": {"openssl": "3.0.13"}}, NOW).to_dict(),
    Event.new(HOST, Kind.CONFIG_CHANGE, 5, {"key": "sysctl.vm.swappiness", "before": None, "after": "10"},
              NOW).to_dict(),
    Event.new(HOST, Kind.HEARTBEAT, 6, {"events_sent": 3, "events_dropped": 0, "seq_written": 6}, NOW).to_dict(),
]


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def mutations(base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def with_(path: tuple[str, ...], value: Any, delete: bool = False) -> None:
        obj = copy.deepcopy(base)
        target = obj
        for part in path[:-1]:
            target = target[part]
        if delete:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
        out.append(obj)

    for name in ev.ENVELOPE_FIELDS:
        with_((name,), None, delete=True)
        with_((name,), True)
        with_((name,), 1.5)
        with_((name,), [])
    for name in ("host_id", "boot_id", "image_id", "image_family"):
        for bad in ("", "-x", "a b", "x" * 257, "ok\u202e", "x" * 256):
            with_((name,), bad)
    with_(("schema_version",), 2)
    with_(("kind",), "process.teleport")
    with_(("event_id",), "not-a-uuid")
    with_(("seq",), -1)
    with_(("seq",), 2**63)
    with_(("time",), "yesterday")
    with_(("time",), "2026-03-02T12:00:00")
    with_(("time",), (NOW - timedelta(days=40)).isoformat())
    with_(("time",), (NOW + timedelta(hours=1)).isoformat())
    with_(("time",), "1990-01-01T00:00:00Z")
    with_(("tags",), {f"k{i}": "v" for i in range(65)})
    with_(("tags", "bad key!"), "v")
    with_(("tags", "cloud.zone"), 5)
    with_(("tags", "cloud.zone"), "x" * 1025)
    with_(("tags", "cloud.zone"), "a\x07b")
    with_(("tags", "cloud.zone"), "eu-west-1a")
    for name in ev.PAYLOAD_FIELDS[Kind(base["kind"])]:
        with_(("payload", name), None, delete=True)
        with_(("payload", name), object.__class__.__name__)
        with_(("payload", name), 1.5)
    with_(("payload", "extra"), _deep(7))
    with_(("payload", "extra"), _deep(8))
    with_(("payload", "extra"), [[[[[[[[1]]]]]]]])
    with_(("payload", "extra"), {"a": [1, 2]})
    if base["kind"] == Kind.METRICS.value:
        with_(("payload", "values", "cpu_pct"), "high")
        with_(("payload", "values", "cpu_pct"), float("nan"))
    if base["kind"] == Kind.PROCESS_INVENTORY.value:
        with_(("payload", "items"), [1])
        with_(("payload", "items"), [{"pid": "1"}])
    if base["kind"] == Kind.PACKAGE_INVENTORY.value:
        with_(("payload", "items", "openssl"), 3)
    return out


def verdict(check: Any, obj: Any, key: str | None, received: datetime | None) -> tuple[Any, ...]:
    obj = copy.deepcopy(obj)
    try:
        t = check(obj, key=key, received=received) if check is check_envelope else check(obj, key, received)
    except ContractError as e:
        return ("rejected", str(e))
    return ("ok", t, obj)


@pytest.mark.parametrize("received", [None, NOW])
@pytest.mark.parametrize("key", [None, "i-0abc", "i-0other"])
def test_fast_path_agrees_with_every_check(key: str | None, received: datetime | None) -> None:
    for valid in VALID:  # fill the fast path's memory of checked identifiers and tags first
        verdict(check_envelope, valid, key, received)
    cases: list[Any] = [obj for valid in VALID for obj in [valid, *mutations(valid)]] + [[], "x", None, 3]
    for obj in cases:
        assert verdict(check_envelope, obj, key, received) == verdict(ev._check_envelope_full, obj, key, received), obj


def test_remembered_values_stay_bounded() -> None:
    for i in range(ev._MAX_KNOWN + 10):
        ev._remember(ev._known_ids, f"host-{i}")
    assert len(ev._known_ids) <= ev._MAX_KNOWN


def test_valid_envelopes_take_the_fast_path() -> None:
    for valid in VALID:
        assert ev._fast_time(copy.deepcopy(valid), "i-0abc", NOW) == NOW
    late = copy.deepcopy(VALID[0])
    late["time"] = (NOW - timedelta(days=40)).isoformat()
    assert ev._fast_time(late, "i-0abc", NOW) is None  # re-timed by the full check


@pytest.mark.parametrize("received", [None, NOW])
@pytest.mark.parametrize("key", [None, "i-0abc"])
def test_one_message_memory_agrees_with_every_check(key: str | None, received: datetime | None) -> None:
    """Within one message the fast path skips the identity and tag checks of an envelope equal in both to
    the last one that passed: every broken envelope that follows a valid one is still judged like the
    full check judges it, and so is a valid one that follows a broken one."""
    for valid in VALID:
        for bad in mutations(valid):
            same: list[Any] = [None]
            message = [copy.deepcopy(valid), copy.deepcopy(bad), copy.deepcopy(valid)]
            got = []
            for obj in message:
                try:
                    got.append(("ok", check_envelope(obj, key=key, received=received, same=same), obj))
                except ContractError as e:
                    got.append(("rejected", str(e)))
            want = [verdict(ev._check_envelope_full, obj, key, received) for obj in (valid, bad, valid)]
            assert got == want, bad


def test_map_checks_decide_like_the_value_by_value_check() -> None:
    """The C-level shortcut of the metrics and inventory map checks gives the per-value check's verdict."""
    numbers = ev.ITEM_CHECKS[Kind.METRICS.value][1]
    for values in ({}, {"a": 1}, {"a": 1.5, "b": -2}, {"a": 1e308, "b": 1e308}, {"a": float("inf")},
                   {"a": float("nan")}, {"a": True}, {"a": "1"}, {"a": None}, {"a": 1, "b": [1]}):
        assert numbers(values) == ev._str_map(values, ev._is_num), values
    config = ev.ITEM_CHECKS[Kind.CONFIG_INVENTORY.value][1]
    packages = ev.ITEM_CHECKS[Kind.PACKAGE_INVENTORY.value][1]
    for values in ({}, {"a": "x"}, {"a": None}, {"a": 1}, {"a": "x", "b": False}, {"a": ["x"]}):
        assert config(values) == ev._str_map(values, lambda x: x is None or type(x) is str), values
        assert packages(values) == ev._str_map(values, lambda x: type(x) is str), values


def test_uuid_shortcut_decides_like_the_pattern() -> None:
    import random

    rng = random.Random(3)
    good = "01a205b4-453b-70ee-9d01-f4bc7f6530ba"
    alphabet = "0123456789abcdefABCDEFgG-xé٣ \n"
    cases = [good, good.upper(), good[:-1], good + "0", good.replace("-", ""), "-" * 36, good[:8] + "x" + good[9:],
             good[:35] + "\n", "٣" + good[1:], ""]
    for _ in range(5000):
        chars = list(good)
        for _ in range(rng.randrange(1, 4)):
            chars[rng.randrange(36)] = rng.choice(alphabet)
        cases.append("".join(chars))
    for text in cases:
        assert ev._is_uuid(text) == bool(ev.UUID.fullmatch(text)), text
