"""The worker's Faust app, glued together from its parts:

    topology.py      topics and tables, declared once
    host_agent.py    the host stage's agent        (logic: hosts.py)
    cohort_agent.py  the cohort stage's agent and its tick timer  (logic: cohorts.py)
    osquery_stage.py the osquery stage, when on: result logs in, telemetry out  (logic: osquery_map.py)
    stage_loop.py    the loop both agents run; outputs.py what they send
    faust_fixes.py   the workarounds for Faust behaviours that broke the crash guarantees
    metrics.py       gauges and their timer

`build_app` makes a fresh app per call (tests run several in one process); `herdwatch worker` runs one.
"""

from __future__ import annotations

from pathlib import Path

import faust

from contract.settings import KafkaSettings
from streams import faust_fixes, metrics, osquery_stage, topology
from streams.cohort_agent import add_cohort_agent
from streams.host_agent import add_host_agent
from streams.outputs import Outputs
from streams.settings import WorkerSettings, faust_broker_kwargs


def build_app(kafka: KafkaSettings, ws: WorkerSettings, datadir: Path,
              partitions: dict[str, int] | None = None) -> faust.App:
    """The worker's Faust app. `partitions` maps topic name -> partition count when the topics exist."""
    app = faust.App(
        ws.app_id,
        **faust_broker_kwargs(kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=bool(ws.web_port),
        web_port=ws.web_port or 6066,
        web_bind="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=ws.partitions,
        broker_session_timeout=ws.session_timeout_s,
        broker_heartbeat_interval=min(3.0, ws.session_timeout_s / 3),
        broker_commit_interval=1.0,
        table_standby_replicas=ws.standby_replicas,
        producer_linger=0.02,
        producer_max_batch_size=1_000_000,
        producer_compression_type="lz4",
        consumer_auto_offset_reset="earliest",
    )
    faust_fixes.install_changelog_buffer(app)  # crash guarantees Faust alone does not give
    if ws.osquery:  # osquery result logs as telemetry (docs/osquery.md)
        osquery_stage.check_settings(ws)
        partitions = {**(partitions or {}), **osquery_stage.prepare(kafka, ws)}
    topo = topology.declare(app, kafka, ws, partitions)
    outputs = Outputs(topo)
    guard = faust_fixes.OffsetGuard()
    add_host_agent(app, topo, outputs, ws, guard)
    add_cohort_agent(app, topo, outputs, ws, guard)
    if ws.osquery:
        osquery_stage.add_osquery_agent(app, topo, outputs, ws, guard)
    faust_fixes.add_refetch_timer(app, guard, topo.sources)
    metrics.add_gauges_timer(app, topo.tables, topo.sources)
    return app
