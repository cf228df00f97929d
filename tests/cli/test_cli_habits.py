"""CLI habits without a store: one time syntax for every option (a leading minus included), port checks that
name who holds a port, the deployment name, quiet and plain logs, OCSF events that satisfy the class."""

from __future__ import annotations

import argparse
import json
import logging
import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.observability import JsonFormatter, PlainFormatter, RepeatFilter
from contract.settings import KafkaSettings
from contract.topics import TopicNames
from herdwatch.cli import build_parser, join_time_values, time_options
from herdwatch.kafka_local import KafkaLocalError, LocalKafka, check_ports, free_port, port_holder, role_acls
from storage.when import parse_when

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("-30d", NOW - timedelta(days=30)),
    ("30d ago", NOW - timedelta(days=30)),
    ("2h ago", NOW - timedelta(hours=2)),
    ("2 hours ago", NOW - timedelta(hours=2)),
    ("-90m", NOW - timedelta(minutes=90)),
    ("-1w", NOW - timedelta(weeks=1)),
    ("yesterday", datetime(2026, 3, 9, tzinfo=UTC)),
    ("today", datetime(2026, 3, 10, tzinfo=UTC)),
    ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("2026-03-01 12:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("2026-03-01T13:00:00+01:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("1772366400", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("1772366400000", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("1772366400.5", datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
])
def test_every_time_form(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("bad", ["last tuesday", "-3 fortnights", "12:00 tomorrow", ""])
def test_an_unreadable_time_names_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=r"ISO-8601|unit"):
        parse_when(bad, NOW)


@given(st.integers(min_value=1_000_000_000, max_value=4_000_000_000))
def test_epoch_seconds_and_milliseconds_agree(seconds: int) -> None:
    assert parse_when(str(seconds), NOW) == parse_when(str(seconds * 1000), NOW)


def test_every_time_option_of_every_command_takes_a_leading_minus() -> None:
    parser = build_parser()
    options = time_options(parser)
    assert {"--since", "--until", "--at", "--alive-at", "--config-at"} <= options
    cases = [["hosts", "--ran", "/tmp/x", "--since", "-30d"], ["host", "i-1", "--at", "-2m"],
             ["timeline", "i-1", "--since", "-2h", "--until", "-1h"], ["rollouts", "--since", "-7d"],
             ["hosts", "--alive-at", "-1d", "--config", "a=b", "--config-at", "-3h"]]
    for argv in cases:
        args = parser.parse_args(join_time_values(argv, options))
        assert args.command == argv[0]
    args = parser.parse_args(join_time_values(["hosts", "--since", "-30d"], options))
    assert args.since == "-30d"
    # a value that is no relative time is left alone (argparse reports the missing value as usual)
    assert join_time_values(["hosts", "--since", "-v"], options) == ["hosts", "--since", "-v"]
    assert join_time_values(["sql", "--", "--since", "-3d"], options) == ["sql", "--", "--since", "-3d"]


def test_a_bad_time_is_a_usage_error_naming_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["hosts", "--since", "last tuesday"])
    assert e.value.code == 2
    assert "ISO-8601" in capsys.readouterr().err


def test_listing_commands_offer_formats() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("hosts", "host", "timeline", "anomalies", "rollouts", "sql"):
        fmt = next(a for a in sub.choices[name]._actions if "--format" in a.option_strings)
        assert {"table", "json", "csv"} <= set(fmt.choices or ()), name
    fmt = next(a for a in sub.choices["anomalies"]._actions if "--format" in a.option_strings)
    assert "ocsf" in (fmt.choices or ())


# --- deployment name ---------------------------------------------------------------------------------------
def test_one_deployment_name_prefixes_topics_groups_and_app_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.settings import SinkSettings
    from streams.settings import WorkerSettings

    for var in ("HERDWATCH_DEPLOYMENT", "HERDWATCH_KAFKA_TOPIC_PREFIX", "HERDWATCH_WORKER_APP_ID",
                "HERDWATCH_SINK_GROUP_ID"):
        monkeypatch.delenv(var, raising=False)
    # the defaults are today's names
    assert KafkaSettings().deployment == "herdwatch"
    assert WorkerSettings().app_id == "herdwatch-streams" and SinkSettings().group_id == "herdwatch-sink"
    monkeypatch.setenv("HERDWATCH_KAFKA_TOPIC_PREFIX", "old")  # the former name still works
    assert KafkaSettings().topics.telemetry == "old.telemetry"
    monkeypatch.setenv("HERDWATCH_DEPLOYMENT", "blue")  # and the new one wins
    k = KafkaSettings()
    assert k.topics.telemetry == "blue.telemetry" and k.topics.ocsf == "blue.findings.ocsf"
    assert WorkerSettings().app_id == "blue-streams" and SinkSettings().group_id == "blue-sink"
    assert KafkaSettings(topic_prefix="green").topics.anomalies == "green.anomalies"
    # the secure broker's ACLs grant exactly those groups
    groups = {(s.role, s.name) for s in role_acls("blue") if s.resource == "group"}
    assert groups == {("worker", "blue-streams"), ("sink", "blue-sink"), ("subscriber", "blue-anomalies-")}
    assert TopicNames("blue").owns("blue-streams-host-seq-changelog") and not TopicNames("blue").owns("blueish.x")
    monkeypatch.setenv("HERDWATCH_DEPLOYMENT", "a.b")
    with pytest.raises(ValueError):
        KafkaSettings()


# --- ports -----------------------------------------------------------------------------------------------
def test_a_taken_port_is_named_with_its_holder(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        holder = port_holder(port)
        assert holder.startswith("pid ") and "python" in holder, holder
        with pytest.raises(KafkaLocalError, match=rf"port {port} .*taken by pid \d+ .*--port"):
            check_ports({"Kafka client": port})
        broker = LocalKafka(tmp_path, port=free_port(), controller_port=port)
        with pytest.raises(KafkaLocalError, match=rf"KRaft controller port {port}"):
            broker.check_ports()
    check_ports({"Kafka client": port})  # free again


# --- logs ------------------------------------------------------------------------------------------------
def _record(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeated_connection_lines_are_held_back_with_a_count() -> None:
    now = [0.0]
    f = RepeatFilter(interval=60.0, clock=lambda: now[0])
    passed = []
    for i in range(500):
        now[0] = i * 0.2  # 100 s of a line every 200 ms
        r = _record("aiokafka.conn", "Unable to connect to %s:%d (attempt %d)", "127.0.0.1", 9092, i)
        if f.filter(r):
            passed.append(r.getMessage())
    assert len(passed) == 2, passed
    assert "similar line(s) held back" in passed[1]
    # herdwatch's own lines are never held back
    assert all(f.filter(_record("herdwatch.sink", "stored %d rows", i)) for i in range(10))


def test_log_lines_are_plain_or_json_without_terminal_codes() -> None:
    r = _record("faust.worker", "\x1b[31mred\x1b[0m and a bell \x07")
    plain = PlainFormatter("%(levelname)s %(name)s: %(message)s").format(r)
    assert "\x1b" not in plain and "\x07" not in plain and "\\x1b[31mred" in plain
    line = JsonFormatter().format(r)
    assert "\x1b" not in line
    assert json.loads(line)["message"].startswith("\x1b[31mred")
    assert json.loads(line)["logger"] == "faust.worker"


def test_osquery_acls_are_granted_only_when_asked() -> None:
    plain = {(s.role, s.name, op) for s in role_acls("blue") for op in s.operations}
    with_osquery = {(s.role, s.name, op) for s in role_acls("blue", osquery=True) for op in s.operations}
    added = with_osquery - plain
    assert added == {("agent", "blue.osquery.results", "WRITE"), ("agent", "blue.osquery.results", "DESCRIBE"),
                     ("worker", "blue.osquery.results", "READ"), ("worker", "blue.osquery.results", "DESCRIBE"),
                     ("worker", "blue.osquery.results", "CREATE"), ("worker", "blue.telemetry", "WRITE")}
    assert not any("osquery" in name for _, name, _ in plain)
