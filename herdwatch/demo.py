"""The main job: a simulated clone fleet through real Kafka, a Faust worker and the ClickHouse sink.

Steps: start Kafka (unless it runs), start `herdwatch worker` and `herdwatch sink` as child processes,
publish a scenario's fleet through the collector's producer path, wait until both have caught up (consumer
lag 0), then report: anomalies with explanations, rollout events, the detection report against the
ground truth, and forensic answers about destroyed hosts from ClickHouse. Everything started is stopped;
the data stays in ./var.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from contract.kafka_admin import ensure_topics, group_lag
from contract.settings import KafkaSettings, StorageSettings
from herdwatch.kafka_local import LocalKafka, free_port, port_holder, port_taken

Say = Callable[[str], None]


@dataclass
class DemoOptions:
    scenario: str = "demo"
    seed: int | None = None
    var_dir: Path = field(default_factory=lambda: Path.cwd() / "var")
    kafka_port: int | None = None
    """Local Kafka's client port (None: the one a previous run used, else 9092, else a free one)."""
    controller_port: int | None = None
    bootstrap: str | None = None
    """Use this Kafka instead of starting the local one (default: HERDWATCH_KAFKA_BOOTSTRAP when set)."""
    speed: float | None = 20.0
    """Fleet seconds per wall-clock second (None: as fast as possible). Pacing keeps event-time skew
    between partitions small, as in a live fleet; flat out, the worker replays a backlog instead."""
    drain_timeout_s: float = 180.0
    keep_running: bool = False


@dataclass
class Child:
    """A pipeline process (worker or sink) with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    _out: IO[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return int(self.proc.returncode or 0)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text[-lines:])


def start_child(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    exe = shutil.which("herdwatch", path=str(Path(sys.executable).parent)) or "herdwatch"
    log = logs / f"{name}.log"
    out = open(log, "wb")  # noqa: SIM115 - closed by Child.stop
    proc = subprocess.Popen([exe, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Child(name, proc, log, out)


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> list[bytes]:
    """Every message currently in `topic`, all partitions, oldest first per partition."""
    conf = settings.confluent_config()
    conf.update({"group.id": f"{settings.deployment}-demo-reader-{os.getpid()}", "enable.auto.commit": False,
                 "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        pending = set()
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            if high > low:
                pending.add(tp.partition)
        consumer.assign(parts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                continue
            out.append(m.value() or b"")
        return out
    finally:
        consumer.close()


def wait_for_drain(settings: KafkaSettings, groups: dict[str, list[str]], children: list[Child],
                   say: Say, timeout: float) -> bool:
    """Wait until every consumer group has committed everything in its topics, twice in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    last_report = 0.0
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"the {child.name} exited early (code {child.proc.returncode}); "
                                   f"its log {child.log} ends with:\n{child.tail()}")
        lags = {g: group_lag(settings, g, topics) for g, topics in groups.items()}
        if all(v == 0 for v in lags.values()):
            quiet += 1
            if quiet >= 3:
                return True
        else:
            quiet = 0
        if time.monotonic() - last_report > 5:
            say("  waiting for the pipeline to catch up: " +
                ", ".join(f"{g} lag {'?' if v < 0 else v}" for g, v in lags.items()))
            last_report = time.monotonic()
        time.sleep(1.0)
    return False


def local_broker(root: Path, port: int | None, controller_port: int | None, say: Say) -> LocalKafka:
    """The demo's local broker: the ports a previous run used (or the ones asked for, or 9092/9093) when they
    are free; taken by something else, free ones instead (said, with who holds the usual ones)."""
    broker = LocalKafka.from_root(root, port or 9092, controller_port or 9093)
    if port is not None:
        broker.port = port
    if controller_port is not None:
        broker.controller_port = controller_port
    if broker.is_running():
        return broker
    for attr in ("port", "controller_port"):
        wanted = getattr(broker, attr)
        if port_taken(wanted):
            chosen = free_port()
            say(f"  port {wanted} is taken by {port_holder(wanted)}; Kafka uses {chosen} instead")
            setattr(broker, attr, chosen)
    return broker


def reset_store(storage: StorageSettings, env: dict[str, str]) -> None:
    """Drop the demo database in a child process (this process must not open the embedded store)."""
    code = ("from contract.settings import StorageSettings; from storage.client import connect; "
            "s = StorageSettings(); c = connect(s); c.command(f'DROP DATABASE IF EXISTS {s.database}')")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def run_demo(opts: DemoOptions, say: Say = print) -> dict[str, Any]:
    """Run the whole demo; returns the report dict (also written to var/demo/report.json)."""
    from collectors.publisher import Publisher
    from contract.events import Kind
    from contract.findings import Finding, RolloutEvent
    from herdwatch.evaluation.chart import render_html
    from herdwatch.evaluation.decay import ConfigHistory
    from herdwatch.evaluation.report import RunInfo, build_report
    from herdwatch.evaluation.runner import DetectionRun, HostSeen
    from herdwatch.evaluation.text import report_lines
    from simulator.clock import SimClock
    from simulator.fleet import Cycle, Fleet
    from simulator.keys import SIMULATED
    from simulator.publish import PublishStats, publish_fleet
    from simulator.scenarios import load_scenario
    from storage.query_client import open_query_client

    t_start = time.monotonic()
    var = opts.var_dir.resolve()
    logs = var / "demo"
    logs.mkdir(parents=True, exist_ok=True)

    broker: LocalKafka | None = None
    if opts.bootstrap is None and os.environ.get("HERDWATCH_KAFKA_BOOTSTRAP"):
        opts.bootstrap = os.environ["HERDWATCH_KAFKA_BOOTSTRAP"]
    if opts.bootstrap is None:
        broker = local_broker(var / "kafka", opts.kafka_port, opts.controller_port, say)
        started_broker = not broker.is_running()
        say(f"[1/6] starting Kafka (KRaft, plain java) on {broker.bootstrap} ..." if started_broker
            else f"[1/6] Kafka already running on {broker.bootstrap}")
        broker.start()
        bootstrap = broker.bootstrap
    else:
        started_broker = False
        bootstrap = opts.bootstrap
        say(f"[1/6] using Kafka at {bootstrap}")

    run_id = datetime.now(UTC).strftime("demo%Y%m%d%H%M%S")
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=run_id)
    storage = StorageSettings(var_dir=var)
    env = {**{k: v for k, v in os.environ.items() if k != "HERDWATCH_KAFKA_TOPIC_PREFIX"},
           "HERDWATCH_KAFKA_BOOTSTRAP": bootstrap,
           "HERDWATCH_DEPLOYMENT": run_id,
           "HERDWATCH_STORAGE_VAR_DIR": str(var),
           "HERDWATCH_WORKER_APP_ID": f"{run_id}-streams",
           "HERDWATCH_WORKER_DATA_DIR": str(var / "streams"),
           "HERDWATCH_SINK_GROUP_ID": f"{run_id}-sink"}
    if storage.dsn is None:
        env["HERDWATCH_STORAGE_DSN"] = storage.resolved_dsn()
    ensure_topics(kafka)
    say(f"[2/6] fresh store {storage.resolved_dsn()} (database {storage.database}); topics {run_id}.*")
    reset_store(storage, env)

    children: list[Child] = []
    try:
        children.append(start_child("worker", ["worker"], env, logs))
        children.append(start_child("sink", ["sink"], env, logs))
        say(f"[3/6] started the stream worker and the ClickHouse sink (logs in {logs})")

        sc = load_scenario(opts.scenario, seed=opts.seed)
        # Put the simulated fleet's life in the recent past, so it ends about now.
        start = (datetime.now(UTC) - timedelta(seconds=sc.duration)).replace(microsecond=0)
        sc = load_scenario(opts.scenario, seed=opts.seed, start=start)
        fleet = Fleet(sc)
        hosts: dict[str, HostSeen] = {}
        total_cycles = int(sc.duration // sc.cycle)
        say(f"[4/6] simulating scenario '{sc.name}' (seed {sc.seed}): {len(fleet.plans)} hosts, "
            f"{sc.duration / 60:.0f} min of fleet time in {sc.cycle:.0f} s cycles, "
            f"{'as fast as possible' if not opts.speed else f'{opts.speed:g}x real time'}")

        config, goodbyes = ConfigHistory(), {}  # for the report's hardening decay

        def progress(cycle: Cycle, stats: PublishStats) -> None:
            for host_id, events in cycle.batches:
                for event in events:
                    config.add(event)
                    if event.kind == Kind.GOODBYE:
                        goodbyes[host_id] = event.time
                e = events[0]
                seen = hosts.get(host_id)
                if seen is None:
                    hosts[host_id] = HostSeen(host_id, e.image_id, e.image_family, e.time, events[-1].time)
                else:
                    seen.last = events[-1].time
                    seen.image_id = e.image_id
            if stats.cycles % max(1, total_cycles // 10) == 0:
                say(f"  fleet time {cycle.time:%H:%M:%S}: {stats.events:,} events in "
                    f"{stats.messages:,} messages published")

        clock = SimClock(sc.start, opts.speed) if opts.speed else None
        stats = publish_fleet(fleet, Publisher(kafka, SIMULATED), clock=clock, on_cycle=progress)
        say(f"  published {stats.events:,} events ({stats.messages:,} messages) in {stats.seconds:.1f} s; "
            f"{stats.failed} not acknowledged")

        t = kafka.topics
        worker_group, sink_group = env["HERDWATCH_WORKER_APP_ID"], env["HERDWATCH_SINK_GROUP_ID"]
        say("[5/6] waiting for the worker to score and the sink to store everything ...")
        drained = wait_for_drain(
            kafka,
            {worker_group: [t.telemetry, t.observations],
             sink_group: [t.telemetry, t.anomalies, t.rollouts, t.lifecycle]},
            children, say, opts.drain_timeout_s)
        if not drained:
            say("  the pipeline did not catch up in time; the report covers what was processed")

        findings = [Finding.from_dict(json.loads(v)) for v in read_topic(kafka, t.anomalies)]
        rollouts = [RolloutEvent.from_dict(json.loads(v)) for v in read_topic(kafka, t.rollouts)]
        run = DetectionRun(findings=findings, rollouts=rollouts, hosts=hosts, events=stats.events,
                           batches=stats.messages, cycles=stats.cycles, seconds=round(stats.seconds, 1),
                           start=sc.start, end=sc.end, config=config, goodbyes=goodbyes)
        host_cohort = {p.host_id: p.cohort for p in fleet.plans.values()}
        info = RunInfo(scenario=sc.name, seed=sc.seed, start=sc.start, end=sc.end,
                       warmup_end=sc.start + timedelta(seconds=sc.warmup), cycle_s=sc.cycle,
                       host_cohort=host_cohort)
        report = build_report(run, fleet.ground_truth, info)

        say("[6/6] results")
        print_findings(findings, rollouts, say)
        for line in report_lines(report):
            say(line)
        report["forensics"] = forensics(open_query_client(storage), fleet, say)
        (logs / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (logs / "report.html").write_text(render_html(report, host_cohort))
        (logs / "ground_truth.json").write_text(json.dumps(fleet.ground_truth_dicts(), indent=2))
        say(f"\nreport: {logs / 'report.json'}, chart: {logs / 'report.html'}")
        say_next_steps(fleet, say)
        say(f"demo finished in {time.monotonic() - t_start:.0f} s")
        return report
    finally:
        for child in reversed(children):
            child.stop()
        if broker is not None and started_broker and not opts.keep_running:
            broker.stop()
            say("stopped the sink, the worker and Kafka; the data stays in ./var "
                "(`herdwatch sql ...` queries it, `herdwatch kafka start` brings the topics back)")


def print_findings(findings: list[Any], rollouts: list[Any], say: Say, limit: int = 25) -> None:
    host_findings = [f for f in findings if f.details.get("scope") != "image"]
    image_findings = [f for f in findings if f.details.get("scope") == "image"]
    say(f"\nAnomalies on the topic: {len(host_findings)} about hosts, {len(image_findings)} about images")
    for f in sorted(host_findings, key=lambda f: f.time)[:limit]:
        say(f"  {f.time:%H:%M:%S} {f.severity.value:<8} {f.kind.value:<20} {f.host_id:<20} {f.explanation}")
    if len(host_findings) > limit:
        say(f"  ... and {len(host_findings) - limit} more (herdwatch sql \"SELECT * FROM anomalies\")")
    for f in image_findings[:5]:
        say(f"  image    {f.severity.value:<8} {f.kind.value:<20} {f.image_id:<20} {f.explanation}")
    say(f"\nRollout events: {len(rollouts)}")
    for r in sorted(rollouts, key=lambda r: r.time):
        say(f"  {r.time:%H:%M:%S} {r.status.value:<12} {r.image_family:<8} {r.old_image} -> {r.new_image} "
            f"({r.share:.0%}): {r.explanation}")


def say_next_steps(fleet: Any, say: Say) -> None:
    """Ready-made forensic commands about this run's compromised hosts."""
    truth = [g for g in fleet.ground_truth if g.host_id and g.kind == "compromise"]
    if not truth:
        return
    g = truth[0]
    at = (g.start + (g.end - g.start) / 2).strftime("%Y-%m-%dT%H:%M:%SZ")
    say("keep asking the store (it stays in ./var):")
    say(f"  .venv/bin/herdwatch host {g.host_id} --at {at}      # state during '{g.scenario}'")
    say(f"  .venv/bin/herdwatch timeline {g.host_id} --limit 40")
    say("  .venv/bin/herdwatch sql \"SELECT kind, host_id, explanation FROM anomalies ORDER BY time\"")


def forensics(client: Any, fleet: Any, say: Say) -> list[dict[str, Any]]:
    """Three questions about hosts that no longer exist, answered from ClickHouse."""
    truth = [g for g in fleet.ground_truth if g.host_id and g.kind == "compromise"]
    miner = next((g for g in truth if "crypto" in g.scenario), truth[0] if truth else None)
    gone = client.query(
        "SELECT host_id, image_id, min(time) AS first_seen, max(time) AS last_seen, count() AS events "
        "FROM events GROUP BY host_id, image_id HAVING countIf(kind = 'agent.goodbye') > 0 "
        "ORDER BY last_seen DESC LIMIT 5")
    questions: list[tuple[str, str, dict[str, Any]]] = [
        ("Which destroyed hosts existed, and for how long?",
         "SELECT host_id, image_id, min(time) AS first_seen, max(time) AS last_seen, "
         "dateDiff('second', min(time), max(time)) AS lived_s FROM events GROUP BY host_id, image_id "
         "HAVING countIf(kind = 'agent.goodbye') > 0 ORDER BY first_seen LIMIT 8", {}),
    ]
    if miner is not None:
        questions.append((
            f"Which hosts ever ran a process like the one on {miner.host_id} ({miner.scenario})?",
            "SELECT host_id, image_id, JSONExtractString(payload, 'exe') AS exe, min(time) AS first_run "
            "FROM events WHERE kind = 'process.start' AND exe IN (SELECT JSONExtractString(payload, 'exe') "
            "FROM events WHERE host_id = {host:String} AND kind = 'process.start' "
            "AND time >= {start:DateTime64(6, 'UTC')}) GROUP BY host_id, image_id, exe ORDER BY first_run",
            {"host": miner.host_id, "start": miner.start.strftime("%Y-%m-%d %H:%M:%S")}))
    if gone.rows:
        host = gone.rows[-1][0]
        questions.append((
            f"Everything destroyed host {host} did, by kind",
            "SELECT kind, count() AS events, min(time) AS first, max(time) AS last FROM events "
            "WHERE host_id = {host:String} GROUP BY kind ORDER BY first", {"host": host}))
    answers = []
    for question, sql, params in questions:
        result = client.query(sql, params)
        say(f"\nQ: {question}")
        say("  " + " | ".join(result.columns))
        for row in result.rows[:12]:
            say("  " + " | ".join(str(v) for v in row))
        answers.append({"question": question, "sql": sql, "params": {k: str(v) for k, v in params.items()},
                        "rows": result.rows[:12]})
    return answers
