"""Stream worker benchmark on the simulator's own traffic, against a real Kafka broker.

    .venv/bin/python benchmarks/bench_streams.py [--events 300000] [--code DIR ...] [--only PARTS]
        [--profile DIR] [--fleet-hosts 2000 --fleet-minutes 10]

Traffic is what `herdwatch simulate` sends for `simulator/scenarios/normal.yaml`: its cohorts (web, app,
api, cache and ephemeral batch hosts, 5 image families), one message per host per collector cycle at the
agent's default rates (metrics every 30 s, heartbeat every other cycle, full inventories every 10 minutes),
so about 8-9 events per message (connections opened and closed, SSH guessing, metrics, heartbeats, a few
short-lived processes). The scenario's one-off events (traffic spikes, config pushes, its rollout) are left
out; the latency part injects its own misbehaviour. Messages are signed with the simulator's host keys.

Starts its own broker (herdwatch.kafka_local) unless HERDWATCH_KAFKA_BOOTSTRAP is set, and runs
`herdwatch worker` (and for the fleet cost `storage.sink.Sink`) as subprocesses. `--code DIR` (repeatable)
runs each part once per checkout DIR (its packages first on PYTHONPATH), so before and after are measured in
the same run on the same messages. Parts (`--only`, comma separated):

  decode    CPU per event of contract.events.decode_batch alone, per checkout
  one       throughput of one worker on a backlog: messages/s, events/s, observations/s, CPU per event
  ceiling   a bare confluent-kafka consume -> decode_batch -> produce loop on the same messages (once)
  two       two workers on the same backlog: ratio to one
  latency   live traffic at half of one worker's throughput, misbehaving hosts injected; event time ->
            finding on the anomaly topic, per finding kind (host stage: data_loss; cohort stage: the rest)
  fleet     fleet cost: `--fleet-hosts` hosts for `--fleet-minutes` of fleet time through one worker and
            one sink (embedded ClickHouse); CPU seconds per 1,000 host-hours and peak RSS of each process
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from collectors.publisher import producer_config
from contract.events import Event, decode_batch, encode_batch
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port
from simulator.fleet import Fleet
from simulator.keys import SIMULATED
from streams.settings import WorkerSettings
from streams.worker import prepare_topics

PARTITIONS = 8
ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "simulator" / "scenarios" / "normal.yaml"
HOST_STAGE_KINDS = {"data_loss", "clock_skew", "identity_conflict"}
"""Finding kinds the host stage emits; every other kind comes from the cohort stage."""

BROKER_PID: list[int] = []
"""The broker's process when this script started it (its CPU is printed beside the workers')."""

Message = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]
"""key, value, headers (signed like a simulated host's)."""


# --- traffic ------------------------------------------------------------------------------------------

def fleet(scale: float, duration_s: float, start: datetime, attacks: list[dict[str, Any]] | None = None,
          seed: int | None = None) -> Fleet:
    """normal.yaml with its cohorts scaled by `scale`, its one-off events left out, `attacks` injected."""
    raw = yaml.safe_load(SCENARIO.read_text())
    for c in raw["cohorts"]:
        if "hosts" in c:
            c["hosts"] = max(1, round(c["hosts"] * scale))
        if "ephemeral" in c:
            c["ephemeral"]["concurrent"] = max(1, round(c["ephemeral"]["concurrent"] * scale))
    raw.update(duration=duration_s, warmup=0, events=[], scenarios=list(attacks or []))
    return Fleet.from_dict(raw, seed=seed, start=start)


def signed(host: str, events: list[Event]) -> Message:
    key, value = host.encode(), encode_batch(events)
    return key, value, list(SIMULATED.headers(key, value, events[-1].seq))


def traffic(fl: Fleet, events: int) -> tuple[list[Message], list[Message], int]:
    """The first cycle (every host's hello and inventories: the warm-up), then whole cycles up to `events`."""
    warm: list[Message] = []
    backlog: list[Message] = []
    n = 0
    for cycle in fl.cycles():
        if cycle.index == 0:
            warm = [signed(h, evs) for h, evs in cycle.batches if evs]
            continue
        for h, evs in cycle.batches:
            if evs:
                backlog.append(signed(h, evs))
                n += len(evs)
        if n >= events:
            break
    return warm, backlog, n


def count_events(messages: list[Message]) -> int:
    return sum(len(orjson.loads(v)) for _, v, _ in messages)


def produce(kafka: KafkaSettings, topic: str, messages: list[Message]) -> None:
    p = Producer(producer_config(kafka))
    for key, value, headers in messages:
        while True:
            try:
                p.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


# --- processes ----------------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def records_by_topic(kafka: KafkaSettings) -> dict[str, int]:
    """Records in every topic of this run's prefix (its own topics and its app's changelogs), by kind of
    topic: the sum of the partitions' high-water marks."""
    c = Consumer({**kafka.confluent_config(), "group.id": f"count-{uuid.uuid4().hex[:6]}"})
    try:
        counts: collections.Counter[str] = collections.Counter()
        for name, meta in c.list_topics(timeout=10).topics.items():
            if not name.startswith(kafka.topic_prefix):
                continue
            kind = ("changelog " + name.split("-app-", 1)[1].removesuffix("-changelog")
                    if name.endswith("-changelog") else name.split(".", 1)[-1])
            for p in meta.partitions:
                counts[kind] += c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
        return dict(counts)
    finally:
        c.close()


def code_env(code: Path) -> dict[str, str]:
    """Environment that makes a subprocess import herdwatch from checkout `code`."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(code) + (os.pathsep + path if path else "")}


class Workers:
    def __init__(self, kafka: KafkaSettings, app_id: str, tmp: Path, n: int, code: Path) -> None:
        self.ports = [free_port() for _ in range(n)]
        env = dict(os.environ, HERDWATCH_KAFKA_BOOTSTRAP=kafka.bootstrap,
                   HERDWATCH_KAFKA_TOPIC_PREFIX=kafka.topic_prefix, HERDWATCH_WORKER_APP_ID=app_id,
                   HERDWATCH_WORKER_PARTITIONS=str(PARTITIONS), HERDWATCH_WORKER_DATA_DIR=str(tmp),
                   HERDWATCH_WORKER_SESSION_TIMEOUT_S="6", HERDWATCH_WORKER_TICK_INTERVAL_S="1", **code_env(code))
        self.procs = []
        for i, port in enumerate(self.ports):
            with open(tmp / f"{app_id}-{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "worker"],
                                                   env={**env, "HERDWATCH_WORKER_METRICS_PORT": str(port)},
                                                   stdout=log, stderr=subprocess.STDOUT, cwd=code))

    def metric(self, name: str, **labels: str) -> float:
        return sum(self.metric_of(i, name, **labels) for i in range(len(self.ports)))

    def metric_of(self, i: int, name: str, **labels: str) -> float:
        total = 0.0
        for port in self.ports[i:i + 1]:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                head, _, value = line.rpartition(" ")
                if (head == name or head.startswith(name + "{")) and all(
                        f'{k}="{v}"' in head for k, v in labels.items()):
                    total += float(value)
        return total

    def cpu_seconds(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def peak_rss_mb(self) -> list[float]:
        return [proc_peak_rss_mb(p.pid) for p in self.procs]

    def wait_settled(self, warm_events: int, tmp: Path) -> None:
        deadline = time.monotonic() + 240
        owned = "herdwatch_streams_assigned_partitions"
        n = len(self.procs)
        while any(self.metric_of(i, owned) == 0 for i in range(n)) or self.metric(owned) != 2 * PARTITIONS \
                or self.metric("herdwatch_streams_events_in_total") < warm_events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see logs in {tmp}")
            time.sleep(0.2)
        time.sleep(3)

    def drained(self, events: float) -> bool:
        return self.metric("herdwatch_streams_events_in_total") >= events and \
            self.metric("herdwatch_streams_observations_scored_total") >= \
            self.metric("herdwatch_streams_observations_total")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


class Profiler:
    """py-spy sampling one process (no pauses), stopped with SIGINT; raw collapsed stacks."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        spy = str(Path(sys.executable).parent / "py-spy")
        self.proc = subprocess.Popen([spy, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-r", "200",
                                      "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()



def collapsed_stacks(path: Path) -> Iterator[tuple[str, int]]:
    """(stack, samples) of each line of py-spy's raw (collapsed) output; malformed lines are skipped."""
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            yield stack, int(n)


def profile_summary(path: Path, top: int = 25) -> str:
    """Top functions by own samples and by inclusive samples, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return f"(no profile at {path})"
    for stack, count in collapsed_stacks(path):
        total += count
        frames = [f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].rsplit(":", 1)[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"{total} samples"]
    lines.append("  own %   function")
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in own.most_common(top)]
    lines.append("  incl %  function")
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines)


PROFILE_AREAS = [
    ("cohort stage (on_observations)", "add_cohort_agent.<locals>.on_observations"),
    ("  FamilyEngine.process (learn, score)", "FamilyEngine.process"),
    ("    PeerDeviation (all calls)", "PeerDeviation."),
    ("  FamilyEngine.tick (multivariate forests, rollouts)", "FamilyEngine.tick"),
    ("  table writes (Faust records, or kept back)", "FamilyStore.__setitem__"),
    ("host stage (on_telemetry)", "add_host_agent.<locals>.on_telemetry"),
    ("  Ed25519 verify", "contract/signing.py"),
    ("  decode_batch", "decode_batch ("),
    ("  process_host_batch", "process_host_batch ("),
    ("host stage sends (HostBatch)", "HostBatch.send"),
    ("changelog records written at commits", "TableWrites.send"),
    ("aiokafka produce requests (Sender)", "Sender._send_produce_req"),
    ("Faust producer buffer (records into aiokafka)", "ProducerBuffer."),
    ("Faust conductor (per consumed message)", "Conductor."),
    ("aiokafka fetch", "Fetcher."),
    ("event loop select", "EpollSelector.select"),
    ("/metrics scrapes (benchmark)", "socketserver.py"),
]
"""(label, substring of a frame) of the profile breakdown: inclusive share of the worker's samples."""


def profile_areas(path: Path) -> str:
    """Inclusive share of the worker's samples under each of PROFILE_AREAS, from py-spy's raw output."""
    total = 0
    hits = collections.Counter[str]()
    if not path.exists():
        return f"(no profile at {path})"
    for stack, count in collapsed_stacks(path):
        total += count
        for label, needle in PROFILE_AREAS:
            if needle in stack:
                hits[label] += count
    return "\n".join(f"  {100 * hits[label] / max(total, 1):5.1f} %  {label}" for label, _ in PROFILE_AREAS)


# --- parts ----------------------------------------------------------------------------------------------

def run_backlog(kafka: KafkaSettings, tmp: Path, workers: int, warm: list[Message], messages: list[Message],
                events: int, code: Path, profile: Path | None = None) -> dict[str, float]:
    """Start `workers` workers, let them settle on the warm-up, then time a backlog produced in one go:
    from the first backlog message sent until telemetry and observations are drained."""
    w = Workers(kafka, f"{kafka.topic_prefix}-app", tmp, workers, code)
    prof = None
    try:
        produce(kafka, kafka.topics.telemetry, warm)
        warm_events = count_events(warm)
        w.wait_settled(warm_events, tmp)
        obs0 = w.metric("herdwatch_streams_observations_total")
        obs_msgs0 = w.metric("herdwatch_streams_observation_messages_total")
        if profile is not None:
            prof = Profiler(w.procs[0].pid, profile)
        records0 = records_by_topic(kafka)
        cpu0 = w.cpu_seconds()
        each0 = [proc_cpu(p.pid) for p in w.procs]
        broker0 = sum(proc_cpu(pid) for pid in BROKER_PID)
        first = time.perf_counter()
        produce(kafka, kafka.topics.telemetry, messages)
        last = None
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            if w.drained(warm_events + events):
                last = time.perf_counter()
                break
            time.sleep(0.5)  # each look is a /metrics scrape: the worker's own CPU
        if last is None:
            raise RuntimeError(f"workers did not finish; see logs in {tmp}")
        cpu = w.cpu_seconds() - cpu0
        each = [proc_cpu(p.pid) - c0 for p, c0 in zip(w.procs, each0, strict=True)]
        broker_cpu = sum(proc_cpu(pid) for pid in BROKER_PID) - broker0  # includes producing the backlog
        if prof is not None:
            prof.stop()
        time.sleep(2)  # the last changelog records go out with the next offset commit (every second)
        records = {k: v - records0.get(k, 0) for k, v in records_by_topic(kafka).items()}
        records.pop("telemetry", None)
        seconds = last - first
        obs = w.metric("herdwatch_streams_observations_total") - obs0
        obs_msgs = w.metric("herdwatch_streams_observation_messages_total") - obs_msgs0  # 0: a checkout without it
        return {"seconds": seconds, "cpu": cpu, "events_s": events / seconds, "messages_s": len(messages) / seconds,
                "observations": obs, "observations_s": obs / seconds, "cpu_us_event": 1e6 * cpu / events,
                "observation_messages": obs_msgs, "broker_cpu": broker_cpu,
                **{f"records {k}": v for k, v in records.items() if v},
                **{f"cpu_{i}": c for i, c in enumerate(each)},
                "cpu_us_message": 1e6 * cpu / len(messages), "rss": max(w.peak_rss_mb())}
    finally:
        if prof is not None and prof.proc.poll() is None:
            prof.stop()
        w.stop()


def ceiling(kafka: KafkaSettings, messages: int) -> dict[str, float]:
    """A bare confluent-kafka loop: consume, decode the contract, produce the value on (no processing)."""
    conf = kafka.confluent_config()
    c = Consumer({**conf, "group.id": f"ceiling-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": True})
    c.subscribe([kafka.topics.telemetry])
    p = Producer(producer_config(kafka, **{"enable.idempotence": False, "acks": 1}))
    out = f"{kafka.topic_prefix}.ceiling"
    n = msgs = 0
    first = None
    cpu0 = time.process_time()
    while msgs < messages:
        batch = c.consume(500, 1.0)
        if first is None and batch:
            first = time.perf_counter()
        for m in batch:
            if m.error():
                continue
            evs, _ = decode_batch(m.value(), key=m.key())
            n += len(evs)
            msgs += 1
            while True:
                try:
                    p.produce(out, key=m.key(), value=m.value())
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    p.flush(60)
    seconds = time.perf_counter() - (first or time.perf_counter())
    cpu = time.process_time() - cpu0
    c.close()
    return {"seconds": seconds, "events_s": n / seconds, "messages_s": msgs / seconds, "cpu_us_event": 1e6 * cpu / n}


def latency(kafka: KafkaSettings, tmp: Path, rate: float, seconds: float, code: Path,
            traffic_fleet: Fleet) -> dict[str, Any]:
    """Live traffic at `rate` events/s with misbehaving hosts; event time -> finding on the anomaly topic.

    The fleet's batches are sent in order, each re-timed to the moment it is sent (so event time runs with
    wall time); the first event of every 20th batch of two or more is dropped (a sequence gap: data_loss
    from the host stage); the fleet's planned miners give rare_feature and metric findings (cohort stage)."""
    w = Workers(kafka, f"{kafka.topic_prefix}-app", tmp, 1, code)
    arrivals: list[tuple[str, float]] = []
    stop = threading.Event()

    def consume() -> None:
        c = Consumer({**kafka.confluent_config(), "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                      "auto.offset.reset": "earliest"})
        c.subscribe([kafka.topics.anomalies])
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            recv = time.time()
            f = orjson.loads(m.value() or b"{}")
            arrivals.append((f["kind"], recv - datetime.fromisoformat(f["time"]).timestamp()))
        c.close()

    def retimed(host: str, evs: list[Event]) -> Message:
        now = datetime.now(UTC)
        return signed(host, [e.replace(time=now) for e in evs])

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    p = Producer(producer_config(kafka))
    cycles = traffic_fleet.cycles()
    sent = 0
    try:
        warm = 0
        for _ in range(3):  # every host joins with its inventories and a little history
            for h, evs in next(cycles).batches:
                if evs:
                    key, value, headers = retimed(h, evs)
                    p.produce(kafka.topics.telemetry, key=key, value=value, headers=headers)
                    warm += len(evs)
            p.poll(0)
        p.flush(30)
        deadline = time.monotonic() + 240
        while w.metric("herdwatch_streams_events_in_total") < warm:
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency worker did not start; see logs in {tmp}")
            time.sleep(0.2)
        time.sleep(2)
        start = time.perf_counter()
        i = 0
        done = False
        while not done:
            for h, evs in next(cycles).batches:
                if not evs:
                    continue
                if i % 20 == 10 and len(evs) >= 2:
                    evs = evs[1:]
                key, value, headers = retimed(h, evs)
                p.produce(kafka.topics.telemetry, key=key, value=value, headers=headers)
                p.poll(0)
                i += 1
                sent += len(evs)
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if time.perf_counter() - start >= seconds:
                    done = True
                    break
        p.flush(30)
        time.sleep(40)  # rare features are judged 30 s (event time) after they appear
    finally:
        stop.set()
        reader.join(5)
        w.stop()
    if not arrivals:
        raise RuntimeError(f"no findings arrived; see logs in {tmp}")
    cohort = [a for a in arrivals if a[0] not in HOST_STAGE_KINDS]
    result: dict[str, Any] = {"rate": rate, "sent_events": sent, "all": percentiles(arrivals)}
    if cohort:
        result["cohort stage"] = percentiles(cohort)
    for kind in sorted({k for k, _ in arrivals}):
        result[kind] = percentiles([a for a in arrivals if a[0] == kind])
    return result


def latency_fleet(seconds: float, rate: float) -> Fleet:
    """Traffic for the latency part: 2 miners per large cohort and 1 in each small one, spread over the
    live phase (event time is re-timed, so a cycle lasts as long as its events take to send)."""
    per_cycle = 1000.0  # about 120 hosts x 8.4 events
    cycles = max(8, int(seconds * rate / per_cycle)) + 3  # the cycles the live phase will send
    spots = [("web", 3), ("web", 11), ("app", 3), ("app", 11), ("api", 3), ("cache", 3)]
    attacks = [{"name": f"miner-{c}-{h}", "kind": "cryptominer", "cohort": c, "host": h,
                "at": 30 * (3 + round((k + 1) * (cycles - 3) / (len(spots) + 2)))} for k, (c, h) in enumerate(spots)]
    return fleet(1.0, 30.0 * (cycles + 60), datetime.now(UTC) - timedelta(days=1), attacks, seed=5)


def percentiles(arrivals: list[tuple[str, float]]) -> dict[str, float]:
    ms = sorted(x * 1000 for _, x in arrivals)
    return {"n": len(ms), "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max": ms[-1]}


DECODE_SCRIPT = """
import sys, time
import orjson
from contract.events import decode_batch
messages = orjson.loads(open(sys.argv[1], "rb").read())
pairs = [(k.encode(), v.encode()) for k, v in messages]
events = best = 0
for _ in range(5):
    t = time.process_time()
    events = sum(len(decode_batch(v, key=k)[0]) for k, v in pairs)
    best = min(best or 1e9, time.process_time() - t)
print(1e6 * best / events)
"""


def decode_cost(messages: list[Message], code: Path, tmp: Path) -> float:
    """CPU microseconds per event of `contract.events.decode_batch` in checkout `code` (best of 5)."""
    path = tmp / "decode-messages.json"
    path.write_bytes(orjson.dumps([(k.decode(), v.decode()) for k, v, _ in messages]))
    out = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(path)], env={**os.environ, **code_env(code)},
                         cwd=code, capture_output=True, check=True, timeout=600)
    return float(out.stdout.decode().strip().splitlines()[-1])


SINK_SCRIPT = """
import json, resource, sys
from contract.settings import KafkaSettings, StorageSettings
from storage.client import connect
from storage.schema import migrate
from storage.settings import SinkSettings
from storage.sink import Sink
kafka = KafkaSettings(bootstrap=sys.argv[1], topic_prefix=sys.argv[2])
client = connect(StorageSettings(dsn=sys.argv[3], database="fleet"))
migrate(client)
ru0 = resource.getrusage(resource.RUSAGE_SELF)
sink = Sink(client, kafka, SinkSettings(group_id=sys.argv[4], endpoint=False))
stats = sink.run(until_idle=5)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rows": stats.rows, "cpu": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime,
                  "seconds": stats.last_flush_at - stats.first_message_at, "rss": ru.ru_maxrss / 1024}))
"""


def run_sink(kafka: KafkaSettings, tmp: Path, code: Path) -> dict[str, float]:
    """One sink (embedded ClickHouse in its own directory) over everything on the telemetry topic."""
    store = tmp / f"chdb-{uuid.uuid4().hex[:6]}"
    out = subprocess.run([sys.executable, "-c", SINK_SCRIPT, kafka.bootstrap, kafka.topic_prefix,
                          f"chdb://{store}", f"sink-{uuid.uuid4().hex[:6]}"], env={**os.environ, **code_env(code)},
                         cwd=code, capture_output=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"sink failed: {out.stderr.decode()[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def fleet_cost(kafka: KafkaSettings, tmp: Path, hosts_scale: float, minutes: float, code: Path,
               sample: tuple[list[Message], list[Message], int, int]) -> dict[str, float]:
    """One worker, then one sink, over `sample` (warm-up + `minutes` of fleet time)."""
    warm, messages, events, n_hosts = sample
    w = Workers(kafka, f"{kafka.topic_prefix}-app", tmp, 1, code)
    try:
        produce(kafka, kafka.topics.telemetry, warm)
        w.wait_settled(count_events(warm), tmp)
        cpu0 = w.cpu_seconds()
        produce(kafka, kafka.topics.telemetry, messages)
        deadline = time.monotonic() + 1800
        while not w.drained(count_events(warm) + events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not finish; see logs in {tmp}")
            time.sleep(0.2)
        worker_cpu = w.cpu_seconds() - cpu0
        worker_rss = max(w.peak_rss_mb())
    finally:
        w.stop()
    sink = run_sink(kafka, tmp, code)
    host_hours = n_hosts * minutes / 60
    return {"host_hours": host_hours, "worker_cpu": worker_cpu, "worker_rss": worker_rss,
            "worker_per_1000": worker_cpu * 1000 / host_hours, "sink_cpu": sink["cpu"], "sink_rss": sink["rss"],
            "sink_rows": sink["rows"]}


# --- main ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000, help="backlog size in events")
    ap.add_argument("--scale", type=float, default=1.0, help="normal.yaml's cohorts times this (1: 120 hosts)")
    ap.add_argument("--latency-seconds", type=float, default=40.0)
    ap.add_argument("--only", default="decode,one,ceiling,two,latency,fleet", help="comma-separated parts to run")
    ap.add_argument("--latency-rate", type=float, help="live events/s (default: half of one worker's throughput)")
    ap.add_argument("--code", action="append", type=Path, help="checkout to run the workers from (repeatable)")
    ap.add_argument("--profile", type=Path, help="py-spy the one-worker run into this directory")
    ap.add_argument("--fleet-hosts", type=int, default=2000, help="fleet cost: simulated hosts")
    ap.add_argument("--fleet-minutes", type=float, default=10.0, help="fleet cost: minutes of fleet time")
    args = ap.parse_args()
    if args.profile is not None and not (Path(sys.executable).parent / "py-spy").exists():
        ap.error(f"--profile needs py-spy beside this Python: {Path(sys.executable).parent / 'pip'} install py-spy")
    parts = set(args.only.split(","))
    codes: list[Path] = [c.resolve() for c in (args.code or [ROOT])]
    label = {c: c.name for c in codes}

    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    broker = None
    bootstrap = os.environ.get("HERDWATCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start()
        bootstrap = broker.bootstrap
        BROKER_PID[:] = [pid] if (pid := broker.pid()) is not None else []
    try:
        def settings() -> KafkaSettings:
            k = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}")
            prepare_topics(k, WorkerSettings(app_id=f"{k.topic_prefix}-app", partitions=PARTITIONS))
            return k

        print(f"broker {bootstrap}; {os.cpu_count()} cores; {PARTITIONS} partitions; "
              f"load average {os.getloadavg()[0]:.1f}; code: {', '.join(str(c) for c in codes)}")
        one: dict[Path, dict[str, float]] = {}
        if parts & {"one", "ceiling", "two", "latency", "decode"}:
            t0 = time.perf_counter()
            span = 30.0 * (args.events / (1000 * args.scale) * 1.3 + 10)  # ~1,000 events per cycle at x1
            fl = fleet(args.scale, span, datetime.now(UTC) - timedelta(seconds=span + 3600))
            warm, messages, events = traffic(fl, args.events)
            print(f"traffic: normal.yaml x{args.scale:g}, {len(warm)} hosts' first batches as warm-up; backlog "
                  f"{events:,} events in {len(messages):,} messages ({events / len(messages):.1f} events per "
                  f"message, built in {time.perf_counter() - t0:.0f}s)")
            kinds = collections.Counter(e["kind"] for _, v, _ in messages for e in orjson.loads(v))
            print("  mix: " + ", ".join(f"{k} {100 * n / events:.1f}%" for k, n in kinds.most_common()))
            first_topic = None
            if "decode" in parts:
                for code in codes:
                    print(f"[{label[code]}] contract.events.decode_batch alone: "
                          f"{decode_cost(messages, code, tmp):.2f} us CPU per event (best of 5)")
            for code in codes:
                if parts & {"one", "ceiling", "two"} or ("latency" in parts and not args.latency_rate):
                    k1 = settings()
                    first_topic = first_topic or k1
                    prof = args.profile / f"{label[code]}.raw" if args.profile else None
                    if prof:
                        prof.parent.mkdir(parents=True, exist_ok=True)
                    r1 = one[code] = run_backlog(k1, tmp, 1, warm, messages, events, code, prof)
                    print(f"[{label[code]}] one worker: {r1['messages_s']:>7,.0f} messages/s  {r1['events_s']:>8,.0f} "
                          f"events/s  {r1['observations_s']:>7,.0f} observations/s  ({r1['seconds']:.1f}s; "
                          f"worker CPU {r1['cpu']:.1f}s = {r1['cpu_us_event']:.1f} us/event, "
                          f"{r1['cpu_us_message']:.0f} us/message; peak RSS {r1['rss']:.0f} MB)")
                    if BROKER_PID:
                        print(f"[{label[code]}]   broker CPU meanwhile {r1['broker_cpu']:.1f}s "
                              "(with producing the backlog)")
                    if r1["observation_messages"]:
                        print(f"[{label[code]}]   observations messages: {r1['observation_messages']:,.0f} for "
                              f"{len(messages):,} telemetry messages")
                    produced = {k.removeprefix("records "): v for k, v in r1.items() if k.startswith("records ")}
                    if produced:
                        n = len(messages)
                        print(f"[{label[code]}]   records the worker wrote per telemetry message: "
                              f"{sum(produced.values()) / n:.2f} ("
                              + ", ".join(f"{k} {v / n:.2f}"
                                          for k, v in sorted(produced.items(), key=lambda kv: -kv[1]))
                              + ")")
                    if prof:
                        print(f"[{label[code]}] profile of the worker during the backlog ({prof}):")
                        print(profile_summary(prof))
                        print(f"[{label[code]}] where the worker's samples were (inclusive):")
                        print(profile_areas(prof))
            if "ceiling" in parts and first_topic is not None:
                cl = ceiling(first_topic, len(warm) + len(messages))
                print(f"ceiling:  {cl['messages_s']:>7,.0f} messages/s  {cl['events_s']:>8,.0f} events/s  "
                      f"(confluent-kafka consume -> decode_batch -> produce, {cl['seconds']:.1f}s, "
                      f"{cl['cpu_us_event']:.1f} us CPU/event)")
                for code in codes:
                    print(f"[{label[code]}] worker / ceiling (messages/s): "
                          f"{one[code]['messages_s'] / cl['messages_s']:.2f}")
            if len(codes) > 1 and one:
                a, b = one[codes[0]], one[codes[-1]]
                print(f"[{label[codes[-1]]}] vs [{label[codes[0]]}]: throughput x{b['events_s'] / a['events_s']:.2f}, "
                      f"CPU per event {a['cpu_us_event'] / b['cpu_us_event']:.2f}x lower")
            if "two" in parts:
                for code in codes:
                    r2 = run_backlog(settings(), tmp, 2, warm, messages, events, code)
                    print(f"[{label[code]}] two workers: {r2['messages_s']:>7,.0f} messages/s  {r2['events_s']:>8,.0f} "
                          f"events/s  ({r2['seconds']:.1f}s, workers' CPU {r2['cpu']:.1f}s = "
                          f"{r2['cpu_0']:.1f} + {r2['cpu_1']:.1f}); two / one: "
                          f"{r2['events_s'] / one[code]['events_s']:.2f}"
                          + (f"; broker CPU {r2['broker_cpu']:.1f}s against {one[code]['broker_cpu']:.1f}s for one"
                             if BROKER_PID else ""))
            if "latency" in parts:
                for code in codes:
                    rate = args.latency_rate or one[code]["events_s"] / 2
                    lat = latency(settings(), tmp, rate, args.latency_seconds, code,
                                  latency_fleet(args.latency_seconds, rate))
                    print(f"[{label[code]}] latency at {lat['rate']:,.0f} events/s "
                          f"({'as asked' if args.latency_rate else 'half of one worker' + chr(39) + 's throughput'}), "
                          f"{lat['sent_events']:,} live events; event time -> finding on the anomaly topic:")
                    for kind, p in lat.items():
                        if isinstance(p, dict):
                            print(f"  {kind:22} {p['n']:>4} findings  p50 {p['p50']:>6.0f} ms  p99 "
                                  f"{p['p99']:>6.0f} ms  max {p['max']:>6.0f} ms")
        if "fleet" in parts:
            t0 = time.perf_counter()
            scale = args.fleet_hosts / 120
            minutes = args.fleet_minutes
            fl = fleet(scale, 60 * (minutes + 1), datetime.now(UTC) - timedelta(hours=3))
            cycles = int(minutes * 60 / fl.cycle)
            warm, messages, events = _cycles(fl, cycles)
            n_hosts = len(warm)
            print(f"fleet cost: {n_hosts:,} hosts (normal.yaml x{scale:.1f}) for {minutes:g} minutes of fleet time "
                  f"after their first batch: {events:,} events in {len(messages):,} messages (built in "
                  f"{time.perf_counter() - t0:.0f}s); = {n_hosts * minutes / 60:,.0f} host-hours, scaled to "
                  f"10,000 hosts x 1 hour (10,000 host-hours) by x{10_000 * 60 / (n_hosts * minutes):.1f}")
            for code in codes:
                fc = fleet_cost(settings(), tmp, scale, minutes, code, (warm, messages, events, n_hosts))
                per = 1000 / fc["host_hours"]
                print(f"[{label[code]}] worker: {fc['worker_cpu']:.1f} CPU s = {fc['worker_cpu'] * per:,.1f} CPU s "
                      f"per 1,000 host-hours ({fc['worker_cpu'] * per * 10 / 3600:.2f} cores for 10,000 hosts); "
                      f"peak RSS {fc['worker_rss']:.0f} MB with {n_hosts:,} hosts")
                print(f"[{label[code]}] sink:   {fc['sink_cpu']:.1f} CPU s = {fc['sink_cpu'] * per:,.1f} CPU s per "
                      f"1,000 host-hours ({fc['sink_cpu'] * per * 10 / 3600:.2f} cores for 10,000 hosts); "
                      f"peak RSS {fc['sink_rss']:.0f} MB; {fc['sink_rows']:,.0f} rows (embedded ClickHouse)")
    finally:
        if broker is not None:
            broker.stop()
    return 0


def _cycles(fl: Fleet, cycles: int) -> tuple[list[Message], list[Message], int]:
    """The first cycle as warm-up, then `cycles` more."""
    warm: list[Message] = []
    backlog: list[Message] = []
    n = 0
    for cycle in fl.cycles():
        batch = [signed(h, evs) for h, evs in cycle.batches if evs]
        if cycle.index == 0:
            warm = batch
            continue
        backlog += batch
        n += sum(len(evs) for _, evs in cycle.batches)
        if cycle.index >= cycles:
            break
    return warm, backlog, n


if __name__ == "__main__":
    sys.exit(main())
