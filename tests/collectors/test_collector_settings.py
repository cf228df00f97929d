"""The agent's typed settings without pydantic: values from the environment, a YAML file and code are
converted to each field's type or refused naming the variable; the agent's Kafka settings read
HERDWATCH_KAFKA_* exactly as contract.settings.KafkaSettings does; and `herdwatch collect` runs without
importing pydantic at all."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.settings import AgentKafkaSettings, CollectorSettings, load_settings
from contract.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ without any HERDWATCH_* variable, plus `values`; restored afterwards."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.upper().startswith("HERDWATCH_")]:
            del os.environ[name]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_values_from_the_environment_are_typed() -> None:
    with environment({"HERDWATCH_COLLECTOR_PROCESS_INTERVAL_S": "2", "HERDWATCH_COLLECTOR_JOURNAL": "No",
                      "HERDWATCH_COLLECTOR_DISABLED_PROBES": '["modules", "packages"]',
                      "HERDWATCH_COLLECTOR_PROBE_TIMEOUTS": '{"packages": 30}',
                      "herdwatch_collector_max_sockets": "77", "HERDWATCH_COLLECTOR_HOST_KEY": "rel/key"}):
        s = CollectorSettings()
    assert s.process_interval_s == 2.0 and isinstance(s.process_interval_s, float)
    assert s.journal is False and s.max_sockets == 77
    assert s.disabled_probes == ["modules", "packages"] and s.probe_timeouts == {"packages": 30.0}
    assert s.host_key == Path.cwd() / "rel/key"  # made absolute when loaded
    assert s.network_source == "auto" and s.state_dir.is_absolute()


@pytest.mark.parametrize(("name", "value", "says"), [
    ("PROCESS_INTERVAL_S", "fast", "a number"),
    ("JOURNAL", "maybe", "true or false"),
    ("NETWORK_SOURCE", "ebpf", "one of 'auto', 'netlink', 'proc'"),
    ("AUTH_LOGS", "/var/log/auth.log", "a JSON list of a path"),
    ("MAX_SOCKETS", "1.5", "a whole number"),
])
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with environment({f"HERDWATCH_COLLECTOR_{name}": value}), pytest.raises(ValueError) as e:
        CollectorSettings()
    assert f"HERDWATCH_COLLECTOR_{name}" in str(e.value) and says in str(e.value) and repr(value) in str(e.value)


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text("collector:\n  host_id: from-file\n  image_id: img-file\n  metrics_port: 9100\n"
                      "  some_future_key: 1\n")
    with environment({"HERDWATCH_COLLECTOR_IMAGE_ID": "img-env"}):
        s = load_settings(config, metrics_port=9200)
    assert (s.host_id, s.image_id, s.metrics_port) == ("from-file", "img-env", 9200)
    config.write_text("collector:\n  metrics_port: many\n")
    with environment({}), pytest.raises(ValueError, match="metrics_port: 'many' is not a whole number"):
        load_settings(config)


def test_copy_changes_only_what_it_is_given(tmp_path: Path) -> None:
    with environment({}):
        s = CollectorSettings(state_dir=tmp_path, host_id="h")
    with environment({"HERDWATCH_COLLECTOR_HOST_ID": "from-env"}):
        c = s.copy(heartbeat_interval_s=2)
    assert c.host_id == "h" and c.heartbeat_interval_s == 2.0 and c.state_dir == tmp_path
    assert s.heartbeat_interval_s == 60
    with pytest.raises(TypeError, match="unknown CollectorSettings field"):
        s.copy(heartbeet_interval_s=2)


KAFKA_ENV = st.fixed_dictionaries({}, optional={
    "HERDWATCH_KAFKA_BOOTSTRAP": st.sampled_from(["broker:9093", "10.0.0.1:9092,10.0.0.2:9092", ""]),
    "HERDWATCH_DEPLOYMENT": st.sampled_from(["prod", "eu_west", "bad-name", "_x", ""]),
    "HERDWATCH_KAFKA_TOPIC_PREFIX": st.sampled_from(["old", "also bad"]),
    "HERDWATCH_KAFKA_SECURITY_PROTOCOL": st.sampled_from(["PLAINTEXT", "SASL_SSL", "SSL", "sasl_ssl", "TLS"]),
    "HERDWATCH_KAFKA_SASL_MECHANISM": st.sampled_from(["PLAIN", "SCRAM-SHA-512", "scram", ""]),
    "HERDWATCH_KAFKA_SASL_USERNAME": st.sampled_from(["agent", "", "null"]),
    "HERDWATCH_KAFKA_SASL_PASSWORD": st.text(max_size=12).filter(lambda t: "\0" not in t),
    "HERDWATCH_KAFKA_SSL_CAFILE": st.sampled_from(["/etc/herdwatch/ca.pem", "ca.pem"]),
    "HERDWATCH_KAFKA_SSL_CERTFILE": st.just("/etc/herdwatch/agent.pem"),
    "herdwatch_kafka_ssl_keyfile": st.just("/etc/herdwatch/agent.key"),
})


@settings(max_examples=150, deadline=None)
@given(KAFKA_ENV)
def test_agent_kafka_settings_read_the_environment_as_the_contract_does(env: dict[str, str]) -> None:
    cwd = os.getcwd()
    os.chdir(Path(__file__).parent)  # no .env here; the agent never reads one
    try:
        with environment(env):
            try:
                theirs = KafkaSettings()
            except ValueError:
                with pytest.raises(ValueError):
                    AgentKafkaSettings()
                return
            ours = AgentKafkaSettings()
    finally:
        os.chdir(cwd)
    assert ours.confluent_config(quiet=False) == theirs.confluent_config(quiet=False)
    assert ours.confluent_config().keys() == theirs.confluent_config().keys()
    assert ours.topics == theirs.topics and ours.deployment == theirs.deployment
    assert "sasl_password" not in repr(ours)


def test_both_kafka_settings_know_the_same_fields() -> None:
    assert {f.name for f in dataclasses.fields(AgentKafkaSettings)} == set(KafkaSettings.model_fields)


def test_herdwatch_collect_imports_no_pydantic(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERDWATCH_")},
           "HERDWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HERDWATCH_COLLECTOR_STATE_DIR": str(tmp_path / "state"),
           "HERDWATCH_COLLECTOR_CLOUD_METADATA": "false", "HERDWATCH_COLLECTOR_JOURNAL": "false",
           "HERDWATCH_COLLECTOR_SHUTDOWN_FLUSH_S": "0.5", "HERDWATCH_COLLECTOR_HOST_ID": "no-pydantic",
           "HERDWATCH_COLLECTOR_IMAGE_ID": "ami-x", "HERDWATCH_COLLECTOR_IMAGE_FAMILY": "x"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "herdwatch.cli", "collect", "--duration", "2"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stopped (duration)" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")]
    assert "collectors.agent" in imported and "collectors.probes.sock_diag" in imported
    assert not [m for m in imported if m.startswith(("pydantic", "dotenv", "yaml"))]  # yaml: only with --config


def test_the_allocator_limits_are_applied_where_glibc_runs() -> None:
    from collectors import allocator

    assert allocator.limit_arenas(0) is False  # 0: the allocator's default is left alone
    if allocator._libc() is not None:  # glibc (musl has neither call)
        assert allocator.limit_arenas(2) is True
    allocator.trim()


def test_a_settings_file_that_is_not_yaml_is_refused_with_a_fix(tmp_path: Path) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text("collector: [unclosed\n")
    with environment({}), pytest.raises(ValueError, match=r"(?s)not valid YAML.*fix it or leave out --config"):
        load_settings(config)
