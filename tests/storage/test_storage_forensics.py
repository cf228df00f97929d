"""Point-in-time state, the named queries and the forensics CLI, on the real embedded engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import fleet

from contract.events import Kind
from herdwatch.cli import main
from simulator.presets import image_id
from storage.client import connect
from storage.load import load_events
from storage.queries import QUERIES, run_named
from storage.query_client import DirectQueryClient
from storage.readonly import UnsafeQuery
from storage.schema import migrate

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(storage_settings, tmp_path, monkeypatch):
    """A store holding a 6-host fleet whose host 0 was compromised half way through the run, then scaled in."""
    client = connect(storage_settings)
    migrate(client)
    hosts = fleet(6, START, minutes=14)
    load_events(client, [e for h in hosts for e in h.events])
    monkeypatch.setenv("HERDWATCH_STORAGE_DSN", storage_settings.resolved_dsn())
    monkeypatch.setenv("HERDWATCH_STORAGE_DATABASE", storage_settings.database)
    monkeypatch.setenv("HERDWATCH_STORAGE_VAR_DIR", str(tmp_path / "var"))
    return client, hosts


def _time_of(events, kind, pred=lambda e: True):
    return next(e.time for e in events if e.kind == kind and pred(e))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_point_in_time_state_of_a_destroyed_host(store, capsys):
    _, hosts = store
    bad = hosts[0]
    miner_at = _time_of(bad.events, Kind.PROCESS_START, lambda e: e.payload["exe"] == "/tmp/.x/xmrig")
    before = _time_of(bad.events, Kind.AUTH_ATTEMPT) - timedelta(seconds=1)  # just before the break-in
    after = miner_at + timedelta(seconds=2)
    code, out, _ = _cli(capsys, "host", bad.host_id, "--at", after.isoformat(), "--format", "json")
    assert code == 0
    s = json.loads(out)
    exes = {p["exe"] for p in s["processes"]}
    assert "/tmp/.x/xmrig" in exes and "/usr/sbin/sshd" in exes
    assert "/usr/bin/python3" not in exes  # the task process of that minute exited with the miner's start
    assert {(c["raddr"], c["rport"]) for c in s["sockets"] if c["state"] == "established"} == \
        {("203.0.113.50", 4444)}
    assert {c["lport"] for c in s["sockets"] if c["state"] == "listen"} == {22, 53, 8000}
    assert {c["key"]: c["value"] for c in s["config"]}["sshd.permitrootlogin"] == "yes"
    assert {c["key"]: c["value"] for c in s["packages"]}["netcat"] == "1.10-47"
    assert [u["user"] for u in s["logins"]] == ["root"]

    code, out, _ = _cli(capsys, "host", bad.host_id, "--at", before.isoformat(), "--format", "json")
    s = json.loads(out)
    assert "/tmp/.x/xmrig" not in {p["exe"] for p in s["processes"]}
    assert {c["key"]: c["value"] for c in s["config"]}["sshd.permitrootlogin"] == "no"
    assert "netcat" not in {c["key"] for c in s["packages"]}
    assert s["logins"] == []  # the empty login snapshot counts

    # a worker is running between its start and exit
    worker = next(e for e in bad.events if e.kind == Kind.PROCESS_START and e.payload["exe"] == "/usr/bin/python3")
    code, out, _ = _cli(capsys, "host", bad.host_id, "--at", worker.time.isoformat(), "--format", "json")
    assert worker.payload["pid"] in {p["pid"] for p in json.loads(out)["processes"]}

    # after its goodbye the host is gone, but its history stays
    code, out, _ = _cli(capsys, "host", bad.host_id, "--at", (bad.last + timedelta(hours=1)).isoformat())
    assert code == 0 and "NOT ALIVE" in out and "terminated" in out


def test_hosts_filters(store, capsys):
    _, hosts = store
    bad = hosts[0].host_id
    end = max(h.last for h in hosts) + timedelta(minutes=1)

    def ids(*argv: str) -> list[str]:
        code, out, err = _cli(capsys, "hosts", *argv, "--format", "json")
        assert code == 0, err
        return [r["host_id"] for r in json.loads(out)]

    assert ids("--ran", "/tmp/.x/xmrig", "--since", "2026-02-27", "--until", end.isoformat()) == [bad]
    assert ids("--connected-to", "203.0.113.50", "--since", "2026-02-27", "--until", end.isoformat()) == [bad]
    assert ids("--config", "sshd.permitrootlogin=yes", "--config-at", hosts[0].last.isoformat()) == [bad]
    assert ids("--config", "sshd.permitrootlogin=yes", "--config-at", START.isoformat()) == []
    assert ids("--ran", "/tmp/.x/xmrig", "--since", "2026-03-02", "--until", "2026-03-09") == []
    assert sorted(ids("--image", image_id("worker"))) == sorted(h.host_id for h in hosts)
    mid = START + timedelta(minutes=12)  # after host 0 was scaled in
    alive = {h.host_id for h in hosts if h.first <= mid <= h.last}
    assert bad not in alive and len(alive) == len(hosts) - 1
    assert set(ids("--alive-at", mid.isoformat())) == alive


def test_cli_filters_cannot_inject_sql(store, capsys):
    client, _ = store
    before = client.query("SELECT count() FROM events").result_rows[0][0]
    for evil in ["x' OR 1=1 --", "'; DROP TABLE events; --", "/tmp/.x/xmrig' OR '1'='1"]:
        code, out, _ = _cli(capsys, "hosts", "--ran", evil, "--since", "2026-01-01", "--format", "json")
        assert code == 0 and json.loads(out) == []
        code, out, _ = _cli(capsys, "timeline", evil, "--format", "json")
        assert code == 0 and json.loads(out) == []
    assert client.query("SELECT count() FROM events").result_rows[0][0] == before


def test_sql_is_read_only(store, capsys):
    client, _ = store
    code, out, _ = _cli(capsys, "sql", "SELECT kind, count() AS n FROM events GROUP BY kind ORDER BY kind",
                        "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "kind,n" and "process.start," in out
    for write in ["DROP TABLE events", "INSERT INTO anomalies (finding_id) VALUES ('x')",
                  "SELECT 1; DROP TABLE events", "ALTER TABLE events DELETE WHERE 1",
                  "CREATE TABLE x (a UInt8) ENGINE = Memory", "SYSTEM DROP MARK CACHE"]:
        code, _, err = _cli(capsys, "sql", write)
        assert code == 2, write
        assert err
    assert client.query("SELECT count() FROM events").result_rows[0][0] > 0
    with pytest.raises(UnsafeQuery, match="only one statement"):
        DirectQueryClient(client).query("SELECT 1 # x\n; DROP TABLE events")
    # a ';' inside a comment belongs to the comment, as the engine parses it: one SELECT, nothing dropped
    assert DirectQueryClient(client).query("SELECT 1 -- ; DROP TABLE events").rows == [[1]]
    assert client.query("EXISTS TABLE events").result_rows[0][0] == 1
    # the session stays writable for the sink after a read-only query
    client.command("CREATE TABLE IF NOT EXISTS scratch (a UInt8) ENGINE = Memory")


def test_timeline_and_named_queries(store, capsys):
    client, hosts = store
    bad = hosts[0]
    code, out, _ = _cli(capsys, "timeline", bad.host_id, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == len(bad.events)
    assert [r["seq"] for r in rows] == list(range(len(bad.events)))
    assert any(r["kind"] == "config.change" and r["what"] == "sshd.permitrootlogin: no -> yes" for r in rows)
    code, out, _ = _cli(capsys, "timeline", bad.host_id, "--kinds", "process.start", "--format", "json")
    assert {r["kind"] for r in json.loads(out)} == {"process.start"}

    q = DirectQueryClient(client)
    life = run_named(q, "host_lifecycle", host=bad.host_id).dicts()[0]
    assert life["lifetime_s"] == int((bad.last - bad.first).total_seconds())
    assert run_named(q, "sequence_gaps", host=bad.host_id).rows == []
    rare = run_named(q, "rare_executables", image=image_id("worker"), since=START - timedelta(days=1),
                     until=START + timedelta(days=1), max_hosts=1)
    assert [r["exe"] for r in rare.dicts()] == ["/tmp/.x/xmrig"]
    assert set(QUERIES) >= {"hosts_ran_exe", "hosts_with_config", "host_timeline", "hosts_alive_at"}


def test_sequence_gap_is_found(storage_settings):
    client = connect(storage_settings)
    migrate(client)
    h = fleet(1, START, minutes=3)[0]
    load_events(client, h.events[:10] + h.events[13:])
    gaps = run_named(DirectQueryClient(client), "sequence_gaps", host=h.host_id).dicts()
    assert [(g["first_missing"], g["last_missing"], g["missing"]) for g in gaps] == [(10, 12, 3)]
