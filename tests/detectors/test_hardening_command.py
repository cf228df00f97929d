"""`herdwatch hardening`'s assessment from stored rows: image results, compliance by host age, drifted hosts
(destroyed hosts included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detectors.features import split_state
from herdwatch.cli import build_parser
from herdwatch.commands.hardening import assess, text
from tests.fixtures.hardening.roots import host_features

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def inventory(host: str, t: datetime, features: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for f in features:
        kind, key, value = split_state(f)
        rows.append({"host_id": host, "image_id": "img-1", "image_family": "web", "time": t, "seq": 1,
                     "family": "config" if kind == "cfg" else "package", "key": key, "snapshot": 1, "value": value})
    return rows


def change(host: str, t: datetime, key: str, value: str | None) -> dict[str, Any]:
    return {"host_id": host, "image_id": "img-1", "image_family": "web", "time": t, "seq": 9, "family": "config",
            "key": key, "snapshot": 0, "value": value}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    return host_features(tmp_path_factory.mktemp("good"))


def test_compliance_by_age_and_drifted_hosts_destroyed_ones_included(good: tuple[str, ...]) -> None:
    rows = []
    for i in range(4):
        rows += inventory(f"h{i}", T0 + timedelta(seconds=i), good)
    rows.append(change("h1", T0 + timedelta(hours=2), "sshd.permitrootlogin", "yes"))  # drifts on day one
    rows.append(change("h2", T0 + timedelta(minutes=10), "sudoers.nopasswd", "3"))  # drifts, then destroyed
    rows.append(change("h3", T0 + timedelta(days=3), "sshd.maxauthtries", "9"))  # drifts late
    life = [{"host_id": f"h{i}", "first_seen": T0 + timedelta(seconds=i), "last_seen": T0 + timedelta(days=9),
             "gone_at": None} for i in range(4)]
    life[2].update(last_seen=T0 + timedelta(minutes=30), gone_at=T0 + timedelta(minutes=30))
    [r] = assess(rows, life, until=T0 + timedelta(days=10))
    assert (r["image_id"], r["hosts"], r["gone"], r["failing"]) == ("img-1", 4, 1, [])
    assert r["compliance"] == {"1h": (3, 3), "1d": (2, 3), "1w": (1, 3)}  # h2 lived 30 minutes only
    drifted = {d["host_id"]: d for d in r["drifted"]}
    assert drifted["h1"]["checks"] == ["ssh-root-login"]
    assert drifted["h2"] == {"host_id": "h2", "gone": True, "checks": ["sudo-nopasswd"]}
    assert drifted["h3"]["checks"] == ["ssh-max-auth-tries"]
    shown = text([r], detail=True)
    assert "h2 (gone): sudo-nopasswd" in shown and "2/3" in shown


def test_an_image_failing_checks_and_the_command_is_registered(good: tuple[str, ...], tmp_path: Path) -> None:
    weak = tuple("cfg:sshd.permitrootlogin=yes" if f == "cfg:sshd.permitrootlogin=no" else f for f in good)
    rows = inventory("w0", T0, weak) + inventory("w1", T0, weak)
    [r] = assess(rows, [], until=T0 + timedelta(hours=1))
    assert r["failing"] == ["ssh-root-login"] and r["drifted"] == []
    args = build_parser().parse_args(["hardening", "--image", "img-1", "--format", "json"])
    assert args.command == "hardening" and args.image == "img-1"


def test_the_command_on_real_storage(good: tuple[str, ...], storage_settings: Any, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from contract.events import Event, Kind
    from herdwatch.cli import main
    from storage.client import connect
    from storage.load import load_events
    from storage.schema import migrate

    client = connect(storage_settings)
    migrate(client)
    cfg = {split_state(f)[1]: split_state(f)[2] for f in good if f.startswith("cfg:")}
    pkg = {split_state(f)[1]: split_state(f)[2] for f in good if f.startswith("pkg:")}
    events = []
    for i in range(4):
        host = dict(host_id=f"i-{i}", boot_id="b1", image_id="img-1", image_family="web")
        events += [Event(kind=Kind.CONFIG_INVENTORY, time=T0, seq=1, payload={"items": cfg}, **host),
                   Event(kind=Kind.PACKAGE_INVENTORY, time=T0, seq=2, payload={"items": pkg, "manager": "dpkg"},
                         **host)]

    def ev(host: str, kind: Kind, at: timedelta, seq: int, payload: dict[str, Any]) -> Event:
        return Event(kind=kind, time=T0 + at, seq=seq, host_id=host, boot_id="b1", image_id="img-1",
                     image_family="web", payload=payload)

    events += [ev("i-2", Kind.CONFIG_CHANGE, timedelta(hours=3), 3,
                  {"key": "sshd.permitrootlogin", "before": "no", "after": "yes"}),  # drifts on day one
               ev("i-3", Kind.CONFIG_CHANGE, timedelta(minutes=10), 3,
                  {"key": "sshd.maxauthtries", "before": "4", "after": "9"}),  # drifts, then is destroyed
               ev("i-3", Kind.GOODBYE, timedelta(minutes=30), 4, {"reason": "terminated: scale-in"})]
    events += [ev(f"i-{i}", Kind.HEARTBEAT, timedelta(days=2), 9, {"events_sent": 9, "events_dropped": 0})
               for i in range(3)]
    load_events(client, events)
    monkeypatch.setenv("HERDWATCH_STORAGE_DSN", storage_settings.resolved_dsn())
    monkeypatch.setenv("HERDWATCH_STORAGE_DATABASE", storage_settings.database)
    monkeypatch.setenv("HERDWATCH_STORAGE_VAR_DIR", str(tmp_path / "var"))
    assert main(["hardening", "--family", "web", "--format", "json"]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert (r["image_id"], r["hosts"], r["gone"], r["failing"]) == ("img-1", 4, 1, [])
    assert r["compliance"] == {"1h": [3, 3], "1d": [2, 3], "1w": [0, 0]}  # i-3 lived 30 minutes
    assert r["drifted"] == [{"host_id": "i-2", "gone": False, "checks": ["ssh-root-login"]},
                            {"host_id": "i-3", "gone": True, "checks": ["ssh-max-auth-tries"]}]
    assert main(["hardening", "--image", "img-1"]) == 0
    shown = capsys.readouterr().out
    assert "i-2: ssh-root-login" in shown and "i-3 (gone): ssh-max-auth-tries" in shown and "2/3" in shown
