"""Running one stream worker: create missing topics, start metrics, run the Faust app until stopped.

SIGTERM or Ctrl-C stops it gracefully: agents finish the message in hand, offsets are committed and the
group rebalances to the remaining workers, which recover the tables from their changelog topics.
"""

from __future__ import annotations

import logging
import shutil
import time

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from contract import topics as t
from contract.kafka_admin import ensure_topics
from contract.observability import serve_metrics
from contract.settings import KafkaSettings
from streams.app import build_app
from streams.settings import WorkerSettings
from streams.topology import COHORT_TABLES, HOST_TABLES, STREAM_TOPICS, changelog_topic

log = logging.getLogger("herdwatch.streams")


def _ensure_changelogs(kafka: KafkaSettings, app_id: str, partitions: dict[str, int]) -> None:
    """Create the tables' compacted changelog topics up front, partitioned like their source topics.

    Faust can declare them itself, but a worker that writes before its metadata shows the new topic's
    partitions fails with PartitionsMismatch; creating them first avoids that race.
    """
    admin = AdminClient(kafka.confluent_config())
    new = [NewTopic(changelog_topic(app_id, table), num_partitions=n, replication_factor=1,
                    config={"cleanup.policy": "compact"})
           for tables, n in ((HOST_TABLES, partitions[kafka.topics.telemetry]),
                             (COHORT_TABLES, partitions[kafka.topics.observations]))
           for table in tables]
    for name, fut in admin.create_topics(new, request_timeout=30).items():
        try:
            fut.result(30)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create changelog topic {name}: {e}") from e


def prepare_topics(kafka: KafkaSettings, ws: WorkerSettings) -> dict[str, int]:
    """Create missing topics (ws.partitions each; dead letters 1) and return every topic's partitions."""
    ensure_topics(kafka, STREAM_TOPICS, partitions=ws.partitions)
    ensure_topics(kafka, (t.DEADLETTER,))
    if ws.ocsf:
        ensure_topics(kafka, (t.OCSF,), partitions=ws.partitions)
    names = kafka.topics
    wanted = {names.name(spec) for spec in (*STREAM_TOPICS, t.DEADLETTER)}
    admin = AdminClient(kafka.confluent_config())
    deadline = time.monotonic() + 30
    while True:  # new topics take a moment to show up in metadata
        meta = admin.list_topics(timeout=30)
        parts = {name: len(meta.topics[name].partitions) for name in wanted
                 if name in meta.topics and meta.topics[name].partitions}
        if len(parts) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = wanted - set(parts)
    if missing:
        raise RuntimeError(f"topics {sorted(missing)} did not appear on {kafka.bootstrap}; check the broker log")
    if parts.get(names.telemetry) != parts.get(names.observations):
        log.warning("telemetry has %s partitions and observations %s: fine, but scale-out is bounded by the "
                    "smaller", parts.get(names.telemetry), parts.get(names.observations))
    _ensure_changelogs(kafka, ws.app_id, parts)
    return parts


LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}


def quiet_framework_logs(loglevel: str) -> None:
    """Faust, aiokafka and mode log at `loglevel`; herdwatch's own loggers keep the CLI's level."""
    level = LEVELS.get(loglevel.lower(), logging.WARNING)
    for name in ("faust", "aiokafka", "mode"):
        logging.getLogger(name).setLevel(level)
    # "producer buffer full" is Faust's normal back-pressure at high throughput, not a problem
    logging.getLogger("faust.transport.producer").setLevel(max(level, logging.ERROR))


def run_worker(kafka: KafkaSettings, ws: WorkerSettings) -> int:
    if ws.engine.get("mv_enabled", True):
        # The multivariate detector imports scikit-learn on its first fit; doing that here keeps a
        # multi-second import from stalling the first tick under live traffic.
        import sklearn.ensemble  # noqa: F401
    quiet_framework_logs(ws.loglevel)
    serve_metrics(ws.metrics_port, ws.metrics_addr)
    parts = prepare_topics(kafka, ws)
    datadir = ws.worker_dir()
    datadir.mkdir(parents=True, exist_ok=True)
    app = build_app(kafka, ws, datadir, parts)
    worker = faust.Worker(app, loglevel=ws.loglevel, quiet=True, override_logging=False,
                          redirect_stdouts=False)
    log.info("worker %s consuming %s (%d partitions), publishing to %s", ws.app_id,
             kafka.topics.telemetry, parts.get(kafka.topics.telemetry, 0), kafka.topics.anomalies)
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    return 0
