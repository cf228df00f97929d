import csv
import json
from pathlib import Path

import orjson
import pytest

from contract.events import Event
from detectors import EngineConfig, FamilyEngine, FindingKind
from detectors.backtest import EVENT_COLUMNS, BadLine, FamilyEngines, Replay, parse_lines, replay, row_to_envelope
from detectors.types import Observation
from herdwatch.cli import main
from simulator import presets


def small_fleet(duration_s: float = 900.0) -> presets.Run:
    """Ten web clones; in runs longer than five minutes a miner starts on host 4 at 5m and runs to the end."""
    miner = [presets.attack("cryptominer", "web", 4, 300.0, exe="/tmp/.x/xmrig")] if duration_s > 300 else []
    return presets.run(presets.fleet({"web": 10}, duration=duration_s, scenarios=miner))


def test_parse_lines_accepts_envelopes_and_arrays_and_reports_bad_lines() -> None:
    fleet = small_fleet(60)
    e0, e1 = fleet.events[0].to_dict(), fleet.events[1].to_dict()
    lines = [
        orjson.dumps(e0),
        b"",
        b"# comment",
        orjson.dumps([e1, e0]),
        b"{not json",
        orjson.dumps({**e0, "kind": "nope"}),
    ]
    got = list(parse_lines(lines, "f.jsonl"))
    events = [x for x in got if isinstance(x, Event)]
    bad = [x for x in got if isinstance(x, BadLine)]
    assert len(events) == 3
    assert [b.where for b in bad] == ["f.jsonl:5", "f.jsonl:6"] and "unknown kind" in bad[1].reason


def test_replay_finds_the_miner_and_scores_every_observation() -> None:
    fleet = small_fleet()
    scores: list[dict] = []
    result = replay(fleet.events, FamilyEngine(), on_scores=scores.append)
    hosts = {f.host_id for f in result.findings}
    assert hosts == {fleet.truth[0]["host_id"]}
    assert {f.kind for f in result.findings} >= {FindingKind.RARE_FEATURE}
    assert len(scores) == result.observations > 0
    top = max(scores, key=lambda r: r["rarity"])
    assert top["host_id"] == fleet.truth[0]["host_id"]


class CallRecorder:
    """A model that only records what the replay asks of it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def process(self, obs: Observation) -> list:
        self.calls.append(("process", obs.time.timestamp()))
        return []

    def tick(self, now: float) -> list:
        self.calls.append(("tick", float(now)))
        return []


def test_replay_ticks_every_tick_s_of_event_time_and_once_at_the_end() -> None:
    fleet = small_fleet(120)
    model = CallRecorder()
    replay(fleet.events, model, tick_s=30.0)
    t0 = fleet.events[0].time.timestamp()
    ticks = [t for what, t in model.calls if what == "tick"]
    assert ticks == [t0 + 30.0 * k for k in range(1, len(ticks) + 1)]
    assert model.calls[-1][0] == "tick" and ticks[-1] > max(t for what, t in model.calls if what == "process")
    for i, (what, t) in enumerate(model.calls):  # every observation is processed after the ticks due before it
        if what == "process":
            assert all(u > t for w, u in model.calls[i + 1 :] if w == "tick")


def test_replay_driven_by_the_caller_ticks_only_when_told() -> None:
    fleet = small_fleet(60)
    model = CallRecorder()
    run = Replay(model)
    half = len(fleet.events) // 2
    for e in fleet.events[:half]:
        run.feed(e)
    run.tick(1.0)
    for e in fleet.events[half:]:
        run.feed(e)
    result = run.finish()
    assert [c for c in model.calls if c[0] == "tick"] == [("tick", 1.0)]
    assert result.events == len(fleet.events) and result.observations == len(model.calls) - 1


def test_replay_records_each_hosts_first_and_last_event() -> None:
    fleet = small_fleet(120)
    result = replay(fleet.events)
    times: dict[str, list] = {}
    for e in fleet.events:
        times.setdefault(e.host_id, []).append(e.time)
    assert {h: (s.first, s.last) for h, s in result.seen.items()} == {h: (min(t), max(t)) for h, t in times.items()}
    assert result.hosts == len(times) and set(result.family_of_host.values()) == {"web"}
    span_s = sum((max(t) - min(t)).total_seconds() for t in times.values())
    assert result.host_hours == pytest.approx(span_s / 3600.0)


def test_family_engines_keep_each_family_apart_and_report_its_scores() -> None:
    fleet = presets.run(presets.fleet({"web": 6, "app": 4}, duration=300))
    engines = FamilyEngines(EngineConfig(confirm_s=60))
    scores: list[dict] = []
    result = replay(fleet.events, engines, on_scores=scores.append)
    assert set(engines.engines) == {"web", "app"}
    for family, engine in engines.engines.items():
        assert engine.confirm_s == 60 and engine.record_scores
        assert {rec.family for rec in engine.baseline.hosts.values()} == {family}
        assert len(engine.baseline.hosts) == (6 if family == "web" else 4)
    assert len(scores) == result.observations > 0
    assert all(set(r) >= {"host_id", "image_family", "rarity", "peers"} for r in scores)


def test_backtest_command_on_jsonl_writes_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = small_fleet()
    data = tmp_path / "events.jsonl"
    fleet.write_jsonl(data)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(fleet.truth))
    assert main(["backtest", str(data), "--scores", str(tmp_path / "s.csv"), "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    miner = fleet.truth[0]["host_id"]
    assert f"{miner}: process /tmp/.x/xmrig" in out
    assert "compromises found" in out and "1/1" in out
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert rows and set(rows[0]) >= {"host_id", "rarity", "peers", "drift", "policy", "multivariate"}
    assert main(["backtest", str(data), "--json", "--scores", str(tmp_path / "s.jsonl"), "--set", "confirm_s=5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert any(x["type"] == "finding" and x["host_id"] == miner for x in lines)
    assert json.loads((tmp_path / "s.jsonl").open().readline())["host_id"]


def test_backtest_needs_input() -> None:
    assert main(["backtest"]) == 1


@pytest.mark.integration
def test_backtest_from_a_clickhouse_query(storage_settings, monkeypatch, capsys) -> None:
    from contract.ids import new_event_id
    from storage.client import connect
    from storage.schema import migrate

    client = connect(storage_settings)
    migrate(client)
    fleet = small_fleet()
    rows = []
    for i, e in enumerate(fleet.events):
        rows.append(
            [
                new_event_id(),
                e.kind.value,
                e.time,
                e.host_id,
                e.boot_id,
                e.image_id,
                e.image_family,
                e.seq,
                e.tags,
                orjson.dumps(e.payload).decode(),
                1,
                0,
                i,
            ]
        )
    client.insert(
        "events",
        rows,
        column_names=[*EVENT_COLUMNS, "kafka_partition", "kafka_offset"],
    )
    monkeypatch.setenv("HERDWATCH_STORAGE_DSN", storage_settings.resolved_dsn())
    monkeypatch.setenv("HERDWATCH_STORAGE_DATABASE", storage_settings.database)
    miner = fleet.truth[0]["host_id"]
    assert main(["backtest", "--from-storage", "--where", "image_family = 'web'"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert " 0 bad lines" in out, captured.err[:500]
    assert f"{miner}: process /tmp/.x/xmrig" in out and f"replayed {len(fleet.events)} events" in out
    sql = (
        "SELECT event_id, kind, time, host_id, boot_id, image_id, image_family, seq, tags, payload, "
        f"schema_version FROM events WHERE host_id = '{miner}' ORDER BY time, seq"
    )
    assert main(["backtest", "--query", sql]) == 0
    assert "replayed" in capsys.readouterr().out
    row = client.query(sql + " LIMIT 1").named_results().__next__()
    assert row_to_envelope(row)["host_id"] == miner


def test_unknown_knob_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "events.jsonl"
    small_fleet(30).write_jsonl(data)
    assert main(["backtest", str(data), "--set", "confirm_seconds=5"]) == 1
    err = capsys.readouterr().err
    assert "unknown engine setting 'confirm_seconds' (did you mean confirm_s?)" in err
    assert "known settings: rare_fraction, min_hosts" in err
