"""Kafka security settings reach Faust; worker settings come from the environment; anomaly filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.settings import KafkaSettings
from streams.follow import AnomalyFilter, render
from streams.settings import WorkerSettings, faust_broker_kwargs


def test_plaintext_has_no_credentials() -> None:
    kw = faust_broker_kwargs(KafkaSettings(bootstrap="k1:9092,k2:9092"))
    assert kw == {"broker": "kafka://k1:9092,kafka://k2:9092"}


def test_sasl_scram_over_tls_maps_to_faust_credentials() -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="hw",
                          sasl_password="s3cret")  # type: ignore[arg-type]
    creds = faust_broker_kwargs(kafka)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "hw" and auth["sasl_plain_password"] == "s3cret"
    assert auth["ssl_context"] is not None
    assert "s3cret" not in repr(kafka)


def test_sasl_plaintext_and_tls_only() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    sasl = faust_broker_kwargs(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                                             sasl_username="u", sasl_password="p"))  # type: ignore[arg-type]
    auth = credentials_to_aiokafka_auth(sasl["broker_credentials"])
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None
    tls = faust_broker_kwargs(KafkaSettings(security_protocol="SSL"))
    assert credentials_to_aiokafka_auth(tls["broker_credentials"])["security_protocol"] == "SSL"


def test_sasl_without_mechanism_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SASL_MECHANISM"):
        faust_broker_kwargs(KafkaSettings(security_protocol="SASL_SSL"))


def test_worker_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDWATCH_WORKER_APP_ID", "prod-streams")
    monkeypatch.setenv("HERDWATCH_WORKER_HOST_TIMEOUT_S", "120")
    monkeypatch.setenv("HERDWATCH_WORKER_ENGINE", '{"min_hosts": 5}')
    ws = WorkerSettings()
    assert (ws.app_id, ws.host_timeout_s, ws.engine, ws.web_port) == ("prod-streams", 120.0, {"min_hosts": 5}, 0)


def test_anomaly_filter() -> None:
    f = {"kind": "rare_feature", "host_id": "h1", "image_id": "ami-1", "image_family": "web",
         "severity": "high", "time": "t", "explanation": "process x seen on 1 of 9 hosts"}
    assert AnomalyFilter().matches(f)
    assert AnomalyFilter(hosts={"h1"}, kinds={"rare_feature"}, min_severity="high").matches(f)
    assert not AnomalyFilter(min_severity="critical").matches(f)
    assert not AnomalyFilter(images={"ami-2"}).matches(f)
    assert not AnomalyFilter(families={"db"}).matches(f)
    assert "HIGH" in render(f) and "h1 (ami-1): process x" in render(f)


def test_worker_settings_reject_an_unknown_engine_knob_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDWATCH_WORKER_ENGINE", '{"min_host": 5}')
    with pytest.raises(ValueError, match="unknown engine setting 'min_host' \\(did you mean min_hosts\\?\\)"):
        WorkerSettings()
    monkeypatch.setenv("HERDWATCH_WORKER_ENGINE", '{"rare_fraction": 2}')
    with pytest.raises(ValueError, match="rare_fraction must be a number > 0 and <= 1, got 2"):
        WorkerSettings()


def test_worker_engine_settings_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors import EngineConfig

    knobs = {"min_hosts": 5, "confirm_s": 60.0, "peer_min_abs": {"cpu_pct": 40.0}, "mv_enabled": False}
    monkeypatch.setenv("HERDWATCH_WORKER_ENGINE", json.dumps(knobs))
    ws = WorkerSettings()
    assert ws.engine == knobs
    config = EngineConfig.from_mapping(ws.engine)
    assert (config.min_hosts, config.confirm_s, config.mv_enabled) == (5, 60.0, False)
    monkeypatch.setenv("HERDWATCH_WORKER_ENGINE", json.dumps(config.to_dict()))
    assert EngineConfig.from_mapping(WorkerSettings().engine) == config


def test_standby_replicas_reach_the_faust_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streams.app import build_app

    assert WorkerSettings().standby_replicas == 1  # Faust's default, as before the setting existed
    monkeypatch.setenv("HERDWATCH_WORKER_STANDBY_REPLICAS", "0")
    ws = WorkerSettings(app_id="t-standby")
    app = build_app(KafkaSettings(bootstrap="127.0.0.1:1"), ws, tmp_path)
    assert ws.standby_replicas == 0 and app.conf.table_standby_replicas == 0
