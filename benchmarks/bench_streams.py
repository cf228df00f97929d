"""Stream worker benchmark against a real Kafka broker: throughput, ceiling, latency, scale-out.

    .venv/bin/python benchmarks/bench_streams.py [--events 400000] [--events-per-message 100]

Starts its own broker (herdwatch.kafka_local) unless HERDWATCH_KAFKA_BOOTSTRAP is set, and runs
`herdwatch worker` as subprocesses. Prints:
1. throughput of one worker on a backlog (events/s, messages/s), end to end: consume, decode, host
   state, repartition, cohort scoring, produce;
2. the ceiling: a plain confluent-kafka consume -> decode -> produce loop on the same backlog, and the ratio;
3. detection latency (event time -> finding on the anomaly topic), p50/p99, with live traffic at half
   the measured throughput and misbehaving hosts injected;
4. two workers on the same backlog (8 partitions) vs one: the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from collectors.publisher import producer_config
from contract.events import Event, decode_batch, encode_batch
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port
from simulator.host import SimHost
from simulator.keys import SIMULATED
from simulator.presets import Clones
from streams.settings import WorkerSettings
from streams.worker import prepare_topics

PARTITIONS = 8


def fleets(families: int, hosts_per_family: int, start: datetime) -> list[Clones]:
    return [Clones(hosts_per_family, image=f"ami-{f:02d}", family=f"fam{f:02d}",
                        start=start, seed=f) for f in range(families)]


def cycles(f: Clones, h: SimHost, when: datetime, per_message: int) -> list[Event]:
    """One message of at least `per_message` events: the host's collector cycles at `when`, as many as it
    takes (an agent sending several cycles it spooled in one batch)."""
    out: list[Event] = []
    while len(out) < per_message:
        out += f.step(h, when)
    return out


def warmup(fl: list[Clones]) -> list[tuple[bytes, bytes]]:
    """Every host's first batch (hello and inventories): lets the workers join and settle."""
    return [(h.host_id.encode(), encode_batch(f.step(h, f.at(0)))) for f in fl for h in f.hosts]


def backlog(fl: list[Clones], events: int, per_message: int) -> list[tuple[bytes, bytes]]:
    """Pre-encoded telemetry messages: collector cycles, 10 s of event time apart."""
    out: list[tuple[bytes, bytes]] = []
    n = 0
    c = 1
    while n < events:
        for f in fl:
            for h in f.hosts:
                batch = cycles(f, h, f.at(c * 10), per_message)
                out.append((h.host_id.encode(), encode_batch(batch)))
                n += len(batch)
        c += 1
    return out


def produce_signed(p: Producer, topic: str, key: bytes, value: bytes) -> None:
    """Telemetry is signed like a simulated host's (workers require signatures by default)."""
    p.produce(topic, key=key, value=value, headers=SIMULATED.headers(key, value))


def produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    p = Producer(producer_config(kafka))
    for key, value in messages:
        while True:
            try:
                p.produce(topic, key=key, value=value, headers=SIMULATED.headers(key, value))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


class Workers:
    def __init__(self, kafka: KafkaSettings, app_id: str, tmp: Path, n: int) -> None:
        self.ports = [free_port() for _ in range(n)]
        env = dict(os.environ, HERDWATCH_KAFKA_BOOTSTRAP=kafka.bootstrap,
                   HERDWATCH_KAFKA_TOPIC_PREFIX=kafka.topic_prefix, HERDWATCH_WORKER_APP_ID=app_id,
                   HERDWATCH_WORKER_PARTITIONS=str(PARTITIONS), HERDWATCH_WORKER_DATA_DIR=str(tmp),
                   HERDWATCH_WORKER_SESSION_TIMEOUT_S="6", HERDWATCH_WORKER_TICK_INTERVAL_S="1")
        self.procs = []
        for i, port in enumerate(self.ports):
            with open(tmp / f"{app_id}-{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "worker"],
                                                   env={**env, "HERDWATCH_WORKER_METRICS_PORT": str(port)},
                                                   stdout=log, stderr=subprocess.STDOUT))

    def metric(self, name: str, **labels: str) -> float:
        return sum(self.metric_of(i, name, **labels) for i in range(len(self.ports)))

    def metric_of(self, i: int, name: str, **labels: str) -> float:
        total = 0.0
        for port in self.ports[i:i + 1]:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                head, _, value = line.rpartition(" ")
                if (head == name or head.startswith(name + "{")) and all(
                        f'{k}="{v}"' in head for k, v in labels.items()):
                    total += float(value)
        return total

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker processes have used so far."""
        total = 0.0
        for p in self.procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def run_backlog(kafka: KafkaSettings, tmp: Path, workers: int, warm: list[tuple[bytes, bytes]],
                messages: list[tuple[bytes, bytes]], events: int) -> dict[str, float]:
    """Start `workers` workers, let them settle on a warm-up, then time a backlog produced in one go:
    from the first backlog message sent until telemetry and observations are drained."""
    w = Workers(kafka, f"{kafka.topic_prefix}-app", tmp, workers)
    try:
        produce(kafka, kafka.topics.telemetry, warm)
        warm_events = sum(len(orjson.loads(v)) for _, v in warm)
        deadline = time.monotonic() + 120
        owned = "herdwatch_streams_assigned_partitions"
        while any(w.metric_of(i, owned) == 0 for i in range(workers)) or w.metric(owned) != 2 * PARTITIONS \
                or w.metric("herdwatch_streams_events_in_total") < warm_events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see logs in {tmp}")
            time.sleep(0.2)
        time.sleep(3)
        cpu0 = w.cpu_seconds()
        first = time.perf_counter()
        produce(kafka, kafka.topics.telemetry, messages)
        last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if w.metric("herdwatch_streams_events_in_total") >= warm_events + events and \
                    w.metric("herdwatch_streams_observations_scored_total") >= \
                    w.metric("herdwatch_streams_observations_total"):
                last = time.perf_counter()
                break
            time.sleep(0.05)
        if last is None:
            raise RuntimeError(f"workers did not finish; see logs in {tmp}")
        seconds = last - first
        cpu = w.cpu_seconds() - cpu0
        return {"seconds": seconds, "cpu": cpu, "events_s": events / seconds, "messages_s": len(messages) / seconds,
                "observations": w.metric("herdwatch_streams_observations_total")}
    finally:
        w.stop()


def ceiling(kafka: KafkaSettings, events: int) -> dict[str, float]:
    """A plain confluent-kafka loop: consume, decode the contract, produce the value on (no processing)."""
    conf = kafka.confluent_config()
    c = Consumer({**conf, "group.id": f"ceiling-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": True})
    c.subscribe([kafka.topics.telemetry])
    p = Producer(producer_config(kafka, **{"enable.idempotence": False, "acks": 1}))
    out = f"{kafka.topic_prefix}.ceiling"
    n = msgs = 0
    first = None
    while n < events:
        batch = c.consume(500, 1.0)
        if first is None and batch:
            first = time.perf_counter()
        for m in batch:
            if m.error():
                continue
            evs, _ = decode_batch(m.value())
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
    c.close()
    return {"seconds": seconds, "events_s": n / seconds, "messages_s": msgs / seconds}


def latency(kafka: KafkaSettings, tmp: Path, rate: float, per_message: int, seconds: float) -> dict[str, Any]:
    """Live traffic at `rate` events/s with misbehaving hosts; event time -> finding on the topic."""
    fl = fleets(8, 25, datetime.now(UTC) - timedelta(seconds=300))
    hosts = [(f, h) for f in fl for h in f.hosts]
    w = Workers(kafka, f"{kafka.topic_prefix}-app", tmp, 1)
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

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    p = Producer(producer_config(kafka))
    try:
        # warm-up: every host joins with a little history (event time in the past), then live traffic
        warm = 0
        for f, h in hosts:
            batch = f.step(h, f.at(0))
            warm += len(batch)
            produce_signed(p, kafka.topics.telemetry, h.host_id.encode(), encode_batch(batch))
        for c in range(1, 4):
            for f, h in hosts:
                batch = cycles(f, h, f.at(c * 10), per_message)
                warm += len(batch)
                produce_signed(p, kafka.topics.telemetry, h.host_id.encode(), encode_batch(batch))
            p.poll(0)
        p.flush(30)
        while w.metric("herdwatch_streams_events_in_total") < warm:
            time.sleep(0.2)
        time.sleep(2)
        interval = per_message / rate
        start = time.perf_counter()
        i = 0
        # at most two miners per family of 25: more would make the miner common, not rare
        bad = iter([fam * 25 + k for k in (3, 11) for fam in range(len(fl))])
        while time.perf_counter() - start < seconds:
            f, h = hosts[i % len(hosts)]
            now = datetime.now(UTC)
            events = cycles(f, h, now, per_message)
            if i % 60 == 30:  # a miner on one more host every 60 messages
                j = next(bad, None)
                if j is not None:
                    f2, h2 = hosts[j]
                    f2.attack(h2, "cryptominer")
                    produce_signed(p, kafka.topics.telemetry, h2.host_id.encode(), encode_batch(f2.step(h2, now)))
            if i % 20 == 10:  # a lost event now and then: data-loss findings (host stage)
                h.seq += 1
            produce_signed(p, kafka.topics.telemetry, h.host_id.encode(), encode_batch(events))
            p.poll(0)
            i += 1
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        p.flush(30)
        time.sleep(40)  # rare features are judged 30 s (event time) after they appear
    finally:
        stop.set()
        reader.join(5)
        w.stop()
    if not arrivals:
        raise RuntimeError(f"no findings arrived; see logs in {tmp}")
    result: dict[str, Any] = {"rate": rate, "sent_events": i * per_message, "all": percentiles(arrivals)}
    for kind in sorted({k for k, _ in arrivals}):
        result[kind] = percentiles([a for a in arrivals if a[0] == kind])
    return result


def percentiles(arrivals: list[tuple[str, float]]) -> dict[str, float]:
    ms = sorted(x * 1000 for _, x in arrivals)
    return {"n": len(ms), "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max": ms[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=400_000, help="backlog size in events")
    ap.add_argument("--events-per-message", type=int, default=100)
    ap.add_argument("--latency-seconds", type=float, default=40.0)
    ap.add_argument("--only", default="one,ceiling,two,latency", help="comma-separated parts to run")
    args = ap.parse_args()
    parts = set(args.only.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    broker = None
    bootstrap = os.environ.get("HERDWATCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka(tmp / "kafka", port=free_port(), controller_port=free_port())
        broker.start()
        bootstrap = broker.bootstrap
    try:
        def settings() -> KafkaSettings:
            k = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}")
            prepare_topics(k, WorkerSettings(app_id=f"{k.topic_prefix}-app", partitions=PARTITIONS))
            return k

        print(f"broker {bootstrap}; {os.cpu_count()} cores; {PARTITIONS} partitions; "
              f"{args.events_per_message} events per message")
        t0 = time.perf_counter()
        fl = fleets(16, 25, datetime.now(UTC) - timedelta(days=1))
        warm = warmup(fl)
        messages = backlog(fl, args.events, args.events_per_message)
        events = sum(len(orjson.loads(v)) for _, v in messages)
        print(f"backlog: {events} events in {len(messages)} messages, 400 hosts in 16 families "
              f"(built in {time.perf_counter() - t0:.1f}s)")
        one, two = settings(), settings()
        r1 = run_backlog(one, tmp, 1, warm, messages, events)
        print(f"one worker:  {r1['events_s']:>9,.0f} events/s  {r1['messages_s']:>7,.0f} messages/s  "
              f"({r1['seconds']:.1f}s, worker CPU {r1['cpu']:.1f}s, {r1['observations']:.0f} observations)")
        if "ceiling" in parts:
            cl = ceiling(one, events + sum(len(orjson.loads(v)) for _, v in warm))
            print(f"ceiling:     {cl['events_s']:>9,.0f} events/s  {cl['messages_s']:>7,.0f} messages/s  "
                  f"(confluent-kafka consume -> decode -> produce, {cl['seconds']:.1f}s)")
            print(f"worker / ceiling: {r1['events_s'] / cl['events_s']:.2f}")
        if "two" in parts:
            r2 = run_backlog(two, tmp, 2, warm, messages, events)
            print(f"two workers: {r2['events_s']:>9,.0f} events/s  {r2['messages_s']:>7,.0f} messages/s  "
                  f"({r2['seconds']:.1f}s, workers' CPU {r2['cpu']:.1f}s)")
            print(f"two / one worker: {r2['events_s'] / r1['events_s']:.2f}")
        if "latency" in parts:
            lat = latency(settings(), tmp, r1["events_s"] / 2, args.events_per_message, args.latency_seconds)
            print(f"latency at {lat['rate']:,.0f} events/s (half of one worker's throughput), "
                  f"{lat['sent_events']:,} live events; event time -> finding on the anomaly topic:")
            for kind, p in lat.items():
                if isinstance(p, dict):
                    print(f"  {kind:16} {p['n']:>4} findings  p50 {p['p50']:>6.0f} ms  p99 {p['p99']:>6.0f} ms  "
                          f"max {p['max']:>6.0f} ms")
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
