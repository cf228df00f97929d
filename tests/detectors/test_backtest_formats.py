"""`herdwatch backtest` reads metrics users already keep: a wide CSV and a Prometheus range-query export."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from contract.events import Event
from detectors.backtest import BadLine, FormatError, parse_prometheus, parse_wide_csv
from herdwatch.cli import main


def test_wide_csv_rows_become_metrics_events_and_bad_rows_are_reported() -> None:
    lines = [
        "time,host,image,cpu_pct,mem_pct\n",
        "2026-03-02T09:00:00Z,web-1,ami-web,12.5,40\n",
        "1772442060,web-1,ami-web,13,\n",  # epoch seconds, a missing value
        "2026-03-02 09:02:00,web-2,,14,41\n",  # naive time is UTC; no image: the default
        "yesterday,web-1,ami-web,1,2\n",
        "2026-03-02T09:03:00Z,web-1,ami-web,lots,2\n",
        "2026-03-02T09:03:00Z,web-1\n",
    ]
    got = list(parse_wide_csv(lines, "m.csv", image="fleet"))
    events = [x for x in got if isinstance(x, Event)]
    bad = [x for x in got if isinstance(x, BadLine)]
    assert [(e.host_id, e.image_id, e.seq, e.payload["values"]) for e in events] == [
        ("web-1", "ami-web", 0, {"cpu_pct": 12.5, "mem_pct": 40.0}),
        ("web-1", "ami-web", 1, {"cpu_pct": 13.0}),
        ("web-2", "fleet", 0, {"cpu_pct": 14.0, "mem_pct": 41.0}),
    ]
    assert events[1].time.isoformat() == "2026-03-02T09:01:00+00:00" and events[2].time.tzinfo is not None
    assert [b.where for b in bad] == ["m.csv:5", "m.csv:6", "m.csv:7"]
    assert "neither ISO-8601" in bad[0].reason and "not a number" in bad[1].reason and "fields" in bad[2].reason


def test_wide_csv_without_time_or_host_is_refused_clearly() -> None:
    with pytest.raises(FormatError, match="needs a 'time' and a 'host' column"):
        list(parse_wide_csv(["when,cpu\n", "1,2\n"], "x.csv"))
    with pytest.raises(FormatError, match="empty file"):
        list(parse_wide_csv([], "x.csv"))


def prometheus_doc() -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {
                    "metric": {"__name__": "node_load1", "instance": "web-1:9100", "job": "web"},
                    "values": [[1772442000, "0.5"], [1772442060, "0.7"], [1772442120, "NaN"]],
                },
                {
                    "metric": {"__name__": "cpu", "mode": "user", "instance": "web-1:9100", "job": "web"},
                    "values": [[1772442000, "12"], [1772442060, "13"]],
                },
                {"metric": {"__name__": "node_load1", "instance": "db-1:9100"}, "values": [[1772442000, "2"]]},
            ],
        },
    }


def test_prometheus_matrix_becomes_one_event_per_host_and_time() -> None:
    events = parse_prometheus(json.dumps(prometheus_doc()), "p.json", image_label="job", image="other")
    web = [e for e in events if e.host_id == "web-1:9100"]
    assert [e.payload["values"] for e in web] == [
        {"node_load1": 0.5, "cpu{mode=user}": 12.0},
        {"node_load1": 0.7, "cpu{mode=user}": 13.0},
    ]
    assert {e.image_id for e in web} == {"web"} and [e.seq for e in web] == [0, 1]
    (db,) = [e for e in events if e.host_id == "db-1:9100"]
    assert db.image_id == "other" and db.time.timestamp() == 1772442000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope", "not JSON"),
        ('{"status": "error", "error": "bad query"}', '"status": "success"'),
        ('{"status": "success", "data": {"resultType": "vector", "result": []}}', "range query"),
        ('{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": []}]}}',
         "no 'instance' label"),
        ('{"status": "success", "data": {"resultType": "matrix", "result": '
         '[{"metric": {"instance": "a"}, "values": [[1, "x"]]}]}}', "not \\[time"),
    ],
)
def test_malformed_prometheus_exports_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_prometheus(text, "p.json")


def test_backtest_command_reads_both_formats_and_scores_the_new_detectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["time,host,cpu_pct"]
    for k in range(1200):  # one lone host, five-minute reports for about four days, then a spike
        cpu = 30 + 10 * math.sin(k / 12 * math.pi / 12) + (k % 7) * 0.3
        rows.append(f"{1772442000 + 300 * k},solo,{65.0 if k >= 1197 else cpu:.2f}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.json").write_text(json.dumps(prometheus_doc()))
    scores = tmp_path / "scores.csv"
    assert main(["backtest", str(tmp_path / "m.csv"), str(tmp_path / "p.json"), "--image-label", "job",
                 "--scores", str(scores)]) == 0
    out = capsys.readouterr().out
    assert "replayed 1203 events from 3 hosts" in out
    with scores.open() as f:
        records = list(csv.DictReader(f))
    assert {"history", "metric", "peers"} <= set(records[0])
    solo = [r for r in records if r["host_id"] == "solo"]
    assert float(solo[-1]["history"]) > 0.5 and float(solo[-10]["history"]) < 0.5
    assert "metric_deviation" in out and "its own usual" in out


def test_backtest_command_reports_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.json").write_text('{"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}')
    assert main(["backtest", str(tmp_path / "p.json")]) == 1
    assert "export a range query" in capsys.readouterr().err
