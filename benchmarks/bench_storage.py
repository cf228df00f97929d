"""Storage benchmark: sink throughput (with its ceiling) and forensic query latency at 10 M events.

    .venv/bin/python benchmarks/bench_storage.py [--sink-events 200000] [--events 10000000] [--hosts 10000]
        [--code DIR ...] [--rounds 1] [--skip-sink] [--skip-queries]

Part 1 publishes the simulator's own signed traffic to a local Kafka broker and times the sink (first message
taken to last batch committed) in a subprocess, `--rounds` times per checkout given with `--code DIR`
(repeatable, alternated; default: this checkout), each run with its own consumer group and its own store, so
before and after read the same messages in the same run. Then it inserts the same rows with bare
clickhouse-connect calls into the same schema as the ceiling, and prints what the Python stages cost alone
(decoding and checking, signature verification). Part 2 generates the large history inside the engine
(INSERT ... SELECT, so the Python generator is not what is measured), then times the point-in-time state of
one destroyed host and "which hosts ran executable X this week". Everything runs in embedded stores under a
temporary dir.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contract.events import Event, encode_batch
from contract.settings import KafkaSettings, StorageSettings
from storage.client import connect
from storage.load import EVENTS_INSERT_SETTINGS, INSERT_SETTINGS
from storage.queries import QUERIES
from storage.query_client import DirectQueryClient
from storage.rows import EVENT_COLUMNS, EVENTS_FORMAT, TableRows, telemetry_rows
from storage.schema import migrate
from storage.state import HOST_ROW, SECTIONS

_NOW = datetime.now(UTC)
# Monday of last week, 00:00 UTC: recent enough for every table's default retention (metrics: 90 days)
BASE = (_NOW - timedelta(days=7 + _NOW.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


def _cpu() -> float:
    """CPU seconds this process has used (every thread: the embedded engine's and librdkafka's too)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


SINK_SCRIPT = r"""
import json, resource, sys
from contract.settings import KafkaSettings, StorageSettings
from storage.client import connect
from storage.schema import migrate
from storage.settings import SinkSettings
from storage.sink import Sink

bootstrap, prefix, dsn, group = sys.argv[1:5]
client = connect(StorageSettings(dsn=dsn, database="bench_sink"))
migrate(client)
sink = Sink(client, KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix),
            SinkSettings(batch_size=50_000, batch_timeout=1.0, group_id=group))

def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime

cpu0 = cpu()
stats = sink.run(until_idle=3)
print(json.dumps({"rows": stats.rows, "cpu": cpu() - cpu0, "dead_lettered": stats.dead_lettered,
                  "wall": stats.last_flush_at - stats.first_message_at}))
"""
"""One sink (the checkout's `storage.sink.Sink`) from the first committed offset to idle; prints its rows, its
CPU seconds (every thread of its process: the embedded engine's inserts and librdkafka's included) and the
wall time from its first message taken to its last batch committed."""


def run_sink(code: Path, bootstrap: str, prefix: str, store: Path, group: str) -> dict[str, float]:
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(code) + (os.pathsep + path if path else "")}
    out = subprocess.run([sys.executable, "-c", SINK_SCRIPT, bootstrap, prefix, f"chdb://{store}", group],
                         env=env, cwd=code, capture_output=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"sink failed: {out.stderr.decode()[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def bench_sink(root: Path, dsn: str, n_events: int, codes: list[Path], rounds: int) -> None:
    # The simulator's own traffic (normal.yaml: its hosts and default rates, one message per host per
    # collector cycle, about 8 events each), with normal.yaml's cohorts scaled to ~1,000 hosts.
    import yaml

    from collectors.publisher import Publisher
    from contract.kafka_admin import ensure_topics
    from herdwatch.kafka_local import LocalKafka, free_port
    from simulator.fleet import Fleet
    from simulator.keys import SIMULATED

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "simulator/scenarios/normal.yaml").read_text())
    for c in raw["cohorts"]:
        if "hosts" in c:
            c["hosts"] *= 8
        if "ephemeral" in c:
            c["ephemeral"]["concurrent"] *= 8
    raw.update(duration=6 * 3600, warmup=0, events=[], scenarios=[])
    batches: list[list[Event]] = []
    for cycle in Fleet.from_dict(raw, start=BASE).cycles():
        batches += [evs for _, evs in cycle.batches if evs]
        if sum(len(b) for b in batches) >= n_events:
            break
    events: list[Event] = [e for b in batches for e in b]
    hosts = {e.host_id for e in events}
    n = len(events)
    print(f"sink: {n:,} events from {len(hosts):,} hosts (simulator, normal.yaml x8), "
          f"{n / len(batches):.1f} events per Kafka message")
    broker = LocalKafka(root / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    runs: list[tuple[str, dict[str, float]]] = []
    try:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix="bench")
        ensure_topics(kafka, partitions=4)
        pub = Publisher(kafka, SIMULATED)
        for b in batches:
            pub.publish(b)
        assert pub.flush(60) == 0
        for r in range(rounds):
            for i, code in enumerate(codes):
                result = run_sink(code, broker.bootstrap, "bench", root / f"sink-{r}-{i}", f"bench-sink-{r}-{i}")
                assert result["rows"] == n, (code, result)
                runs.append((str(code), result))
    finally:
        broker.stop()

    # Ceiling 1: the Python part of the sink alone (decode + validate + row encoding + buffering).
    # CPU seconds of this process (nothing else runs in it meanwhile).
    messages = [encode_batch(b) for b in batches]
    t = _cpu()
    buffered = TableRows("events")
    for m, b in zip(messages, batches, strict=True):
        buffered.add_message(telemetry_rows(m, 0, 0, 1 << 20, key=b[0].host_id.encode())[0], 0, 0)
    decode_s = _cpu() - t
    lines = buffered.lines()
    from contract.events import decode_batch

    t = _cpu()
    for m in messages:
        decode_batch(m)
    contract_s = _cpu() - t

    # Ceiling 2: bare clickhouse-connect inserts of the same rows into the same schema (MVs included).
    import uuid

    import orjson

    bare = connect(StorageSettings(dsn=dsn, database="bench_bare"))
    migrate(bare)

    cpus: dict[str, float] = {}

    def raw_insert(rows: list[bytes], fmt: str, settings: dict[str, object]) -> float:
        bare.command("TRUNCATE TABLE events")
        t, cpu0 = time.perf_counter(), _cpu()
        for i in range(0, len(rows), 50_000):
            bare.raw_insert("events", EVENT_COLUMNS, insert_block=b"\n".join(rows[i:i + 50_000]), fmt=fmt,
                            settings=settings)
        cpus[fmt] = _cpu() - cpu0
        return time.perf_counter() - t

    compact_s = raw_insert(lines, EVENTS_FORMAT, EVENTS_INSERT_SETTINGS)  # what the sink sends
    # the format and settings the sink used before: one JSON object per row, deduplication on insert
    objects = [orjson.dumps(dict(zip(EVENT_COLUMNS, orjson.loads(line), strict=True))) for line in lines]
    raw_s = raw_insert(objects, "JSONEachRow", INSERT_SETTINGS)
    bare.command("TRUNCATE TABLE events")
    columns: list[list[object]] = [[] for _ in EVENT_COLUMNS]
    for e in events:
        for col, v in zip(columns, (uuid.UUID(e.event_id), e.kind.value, e.time, e.host_id, e.boot_id, e.image_id,
                                    e.image_family, e.seq, e.tags, orjson.dumps(e.payload).decode(),
                                    e.schema_version, 0, 0), strict=True):
            col.append(v)
    t, cpu0 = time.perf_counter(), _cpu()
    for i in range(0, len(events), 50_000):
        bare.insert("events", [c[i:i + 50_000] for c in columns], column_names=EVENT_COLUMNS,
                    column_oriented=True, settings=EVENTS_INSERT_SETTINGS)
    col_s = time.perf_counter() - t
    cpus["column-oriented"] = _cpu() - cpu0
    # The signature check alone, as the sink runs it (contract.signing.verify, one per message).
    from contract.signing import verify

    signed = [(m, b[0].host_id.encode(), SIMULATED.headers(b[0].host_id.encode(), m))
              for m, b in zip(messages, batches, strict=True)]
    cpu0 = _cpu()
    for value, key, headers in signed:
        verify(headers, key, value)
    verify_cpu = _cpu() - cpu0

    ceiling = max(n / compact_s, n / raw_s, n / col_s)
    best_cpu = min(cpus.values())
    for code, res in runs:
        print(f"  sink {code} (Kafka -> decode -> verify -> dedup -> insert -> commit): "
              f"{n / res['wall']:,.0f} events/s ({res['wall']:.2f} s), CPU {1e6 * res['cpu'] / n:.1f} us per event; "
              f"of the best bare insert: {(n / res['wall']) / ceiling:.2f} by events/s, "
              f"{best_cpu / res['cpu']:.2f} by CPU per event")
    print(f"  ceiling, bare raw_insert as the sink sends, same rows: {n / compact_s:>10,.0f} events/s "
          f"({compact_s:.2f} s)")
    print(f"  ceiling, bare raw_insert JSONEachRow, same rows:     {n / raw_s:>12,.0f} events/s ({raw_s:.2f} s)")
    print(f"  ceiling, bare insert column-oriented, same rows:     {n / col_s:>12,.0f} events/s ({col_s:.2f} s)")
    print("  CPU per event of the bare inserts (this process, all threads, engine included): "
          + ", ".join(f"{k} {1e6 * c / n:.1f} us" for k, c in cpus.items()))
    print(f"  Python decode+validate+encode alone (no Kafka/engine): {1e6 * decode_s / n:>8.1f} us CPU per event")
    print(f"  contract.events.decode_batch alone, for comparison:    {1e6 * contract_s / n:>8.1f} us CPU per event")
    print(f"  signature verification alone (one per message):     {1e6 * verify_cpu / n:>10.1f} us CPU per event "
          f"({1e6 * verify_cpu / len(signed):.0f} us per message)")
    print(f"  best bare insert + verification alone, by CPU per event: {1e6 * (best_cpu + verify_cpu) / n:.1f} us "
          f"(what a sink that verifies cannot go below)")


def _payload_sql() -> str:
    proc = ("concat('{\"pid\":', toString(1000 + intDiv(i, 5)), ',\"ppid\":1,\"exe\":\"', exe, "
            "'\",\"name\":\"app\",\"cmdline\":\"', exe, ' --serve\",\"user\":\"www-data\",\"start_time\":', "
            "toString(toUnixTimestamp(t)), ',\"parents\":[\"/usr/lib/systemd/systemd\"]}')")
    inv_proc = ("concat('{\"items\":[', arrayStringConcat(arrayMap(k -> concat('{\"pid\":', "
                "toString(100 + k), ',\"ppid\":1,\"exe\":\"/usr/sbin/svc', toString(k), "
                "'\",\"name\":\"svc\",\"cmdline\":\"/usr/sbin/svc', "
                "toString(k), '\",\"user\":\"root\",\"start_time\":0,\"parents\":[]}'), range(30)), ','), ']}')")
    sock = ("concat('{\"state\":\"established\",\"proto\":\"tcp\",\"laddr\":\"10.0.0.5\",\"lport\":', "
            "toString(40000 + intDiv(i, 5)), ',\"raddr\":\"10.1.', toString(h % 250), '.', toString(i % 250), "
            "'\",\"rport\":443,\"pid\":1,\"exe\":\"/usr/bin/app\"}')")
    inv_net = ("'{\"items\":[{\"state\":\"listen\",\"proto\":\"tcp\",\"laddr\":\"0.0.0.0\",\"lport\":22,\"raddr\":\"\","
               "\"rport\":0,\"pid\":100,\"exe\":\"/usr/sbin/sshd\"},{\"state\":\"listen\",\"proto\":\"tcp\","
               "\"laddr\":\"0.0.0.0\",\"lport\":443,\"raddr\":\"\",\"rport\":0,\"pid\":101,\"exe\":\"/usr/sbin/nginx\"}]}'")
    inv_cfg = ("concat('{\"items\":{\"sshd.permitrootlogin\":\"', if(h % 100 = 3, 'yes', 'no'), '\",', "
               "arrayStringConcat(arrayMap(k -> concat('\"sysctl.k', toString(k), '\":\"', toString(k % 3), '\"'), "
               "range(20)), ','), '}}')")
    inv_pkg = ("concat('{\"manager\":\"dpkg\",\"items\":{', arrayStringConcat(arrayMap(k -> concat('\"pkg', "
               "toString(k), '\":\"1.', toString(k), '\"'), range(50)), ','), '}}')")
    metrics = ("concat('{\"values\":{\"cpu_pct\":', toString(rand32() % 100), ',\"mem_pct\":', "
               "toString(rand32() % 100), ',\"conns\":', toString(rand32() % 50), '}}')")
    return f"""multiIf(
        kind = 'agent.hello', concat('{{"agent_version":"0.1.0","boot_time":', toString(toUnixTimestamp(t)), '}}'),
        kind = 'agent.goodbye', '{{"reason":"terminated"}}',
        kind = 'process.inventory', {inv_proc},
        kind = 'net.inventory', {inv_net},
        kind = 'config.inventory', {inv_cfg},
        kind = 'package.inventory', {inv_pkg},
        kind = 'login.inventory', '{{"items":[]}}',
        kind IN ('process.start', 'process.exit'), {proc},
        kind IN ('net.open', 'net.close'), {sock},
        {metrics})"""


GENERATE = """
INSERT INTO events (event_id, kind, time, host_id, boot_id, image_id, image_family, seq, tags, payload,
                    schema_version, kafka_partition, kafka_offset)
SELECT generateUUIDv7(n) AS event_id, kind, t AS time, concat('i-', leftPad(lower(hex(h)), 8, '0')) AS host_id,
       concat('b-', leftPad(lower(hex(h)), 8, '0')) AS boot_id, concat('ami-', toString(h % 5)) AS image_id,
       'web' AS image_family, i AS seq, map('cloud.provider', 'aws', 'cloud.region', 'eu-west-1') AS tags,
       PAYLOAD AS payload, 1, 0, n
FROM (
    SELECT n, h, i, t, kind,
           if(h % 2000 = 17 AND i IN (500, 501), '/tmp/.x/xmrig',
              concat('/usr/bin/app', toString((h * 7 + intDiv(i, 5)) % 200))) AS exe
    FROM (
        SELECT number AS n, intDiv(number, {per_host}) AS h, number % {per_host} AS i,
               toDateTime64({base} + h * {spacing} + i * 0.85, 6, 'UTC') AS t,
               multiIf(i = 0, 'agent.hello', i = {per_host} - 1, 'agent.goodbye',
                       i % 100 = 1, 'process.inventory', i % 100 = 2, 'net.inventory',
                       i % 100 = 3, 'config.inventory', i % 100 = 4, 'package.inventory',
                       i % 100 = 5, 'login.inventory', i % 5 = 0, 'process.start', i % 5 = 1, 'process.exit',
                       i % 5 = 2, 'net.open', i % 5 = 3, 'net.close', 'metrics') AS kind
        FROM numbers({start}, {count})
    )
)"""


def bench_queries(dsn: str, n_events: int, n_hosts: int) -> None:
    client = connect(StorageSettings(dsn=dsn, database="bench_big"))
    migrate(client)
    per_host = n_events // n_hosts
    spacing = 7 * 86400 // n_hosts  # host launches spread over one week
    print(f"\nqueries: generating {n_events:,} events for {n_hosts:,} hosts ({per_host} each, ~14 min lives, "
          "spread over one week) inside the engine...")
    t = time.perf_counter()
    chunk = 1_000_000
    for start in range(0, n_events, chunk):
        sql = GENERATE.format(per_host=per_host, base=int(BASE.timestamp()), spacing=spacing, start=start,
                              count=min(chunk, n_events - start)).replace("PAYLOAD", _payload_sql())
        client.command(sql)
    print(f"  generated in {time.perf_counter() - t:.0f} s")
    client.command("OPTIMIZE TABLE events FINAL")  # a settled store, as days-old data would be
    for table in ("processes", "network", "config", "process_exe_hosts", "hosts"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")

    kinds = client.query("SELECT kind, count() FROM events GROUP BY kind ORDER BY kind").result_rows
    print("  events by kind: " + ", ".join(f"{k} {n:,}" for k, n in kinds))
    print("  data on disk (compressed / uncompressed):")
    rows = client.query("""SELECT table, sum(rows), formatReadableSize(sum(data_compressed_bytes)),
                                  formatReadableSize(sum(data_uncompressed_bytes))
                           FROM system.parts WHERE database = currentDatabase() AND active
                           GROUP BY table ORDER BY sum(data_compressed_bytes) DESC""").result_rows
    for table, nrows, comp, uncomp in rows:
        print(f"    {table:<22} {nrows:>12,} rows  {comp:>10} / {uncomp:>10}")

    q = DirectQueryClient(client)
    victim = n_hosts // 2 + 7
    host = f"i-{victim:08x}"
    at = BASE + timedelta(seconds=victim * spacing + per_host * 0.85 * 0.6)

    def state_once() -> float:
        t0 = time.perf_counter()
        params = {"host": host, "at": at.strftime("%Y-%m-%d %H:%M:%S")}
        q.query(HOST_ROW, params)
        for s in SECTIONS:
            q.query(s.sql, {**params, **dict(s.extra_params)})
        return time.perf_counter() - t0

    first = state_once()
    timings = [state_once() for _ in range(5)]
    procs = q.query(SECTIONS[0].sql, {"host": host, "at": at.strftime("%Y-%m-%d %H:%M:%S")}).rows
    print(f"  point-in-time state of destroyed host {host} at {at:%Y-%m-%d %H:%M:%S} "
          f"(host row + 6 sections, {len(procs)} processes): first {first * 1000:.0f} ms, "
          f"median {statistics.median(timings) * 1000:.0f} ms  (target < 300 ms)")

    week = {"since": BASE.strftime("%Y-%m-%d %H:%M:%S"),
            "until": (BASE + timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")}
    for exe in ("/tmp/.x/xmrig", "/usr/bin/app17"):
        t0 = time.perf_counter()
        res = q.query(QUERIES["hosts_ran_exe"].sql, {"exe": exe, **week})
        first = time.perf_counter() - t0
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            q.query(QUERIES["hosts_ran_exe"].sql, {"exe": exe, **week})
            timings.append(time.perf_counter() - t0)
        print(f"  which hosts ran {exe} this week: {len(res.rows):,} hosts; first {first * 1000:.0f} ms, "
              f"median {statistics.median(timings) * 1000:.0f} ms  (target < 1 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sink-events", type=int, default=200_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--code", action="append", type=Path,
                    help="checkout to run the sink from (repeatable; default: this one)")
    ap.add_argument("--rounds", type=int, default=1, help="sink runs per checkout, alternated")
    ap.add_argument("--skip-sink", action="store_true")
    ap.add_argument("--skip-queries", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        root = Path(tmp)
        dsn = f"chdb://{root / 'clickhouse'}"
        if not args.skip_sink:
            bench_sink(root, dsn, args.sink_events, args.code or [Path(".")], args.rounds)
        if not args.skip_queries:
            bench_queries(dsn, args.events, args.hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
