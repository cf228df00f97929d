"""docker-compose.yml cannot run here (no Docker engine), so check it against the CLI instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from herdwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def herdwatch_commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in compose()["services"].items():
        cmd = svc.get("command")
        if cmd and cmd[0] == "herdwatch":
            out.append((name, cmd))
    return out


def test_compose_has_the_stack_with_health_checks() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    for name in ("kafka", "clickhouse"):
        assert "healthcheck" in services[name], f"{name} needs a health check"
    assert {n for n, _ in herdwatch_commands()} >= {"worker", "sink", "collector"}


@pytest.mark.parametrize(("service", "command"), herdwatch_commands())
def test_every_compose_command_parses_with_the_real_cli(service: str, command: list[str]) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(command[1:])
    except SystemExit as e:  # argparse exits on unknown commands or options
        pytest.fail(f"service {service}: `{' '.join(command)}` is not a valid herdwatch command ({e})")
    assert callable(args.func)


def test_compose_points_services_at_the_server_dsn() -> None:
    env = compose()["x-herdwatch"]["environment"]
    assert env["HERDWATCH_STORAGE_DSN"].startswith("http://")
    assert env["HERDWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
