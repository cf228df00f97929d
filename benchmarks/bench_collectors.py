"""Collector benchmark: what the host agent costs, how fast its first event lands, and what a broker
outage does to delivery.

    .venv/bin/python benchmarks/bench_collectors.py                  # 150 s overhead + 60 s outage
    .venv/bin/python benchmarks/bench_collectors.py --duration 120 --outage 60 --procs 300

1. Overhead: starts a Kafka broker, makes sure at least --procs processes run (idle `sleep`s), then runs
   `herdwatch collect` with its default intervals and, side by side, `prometheus-node-exporter` (the
   Debian package; installed with apt-get if missing and allowed) scraped every 15 s as Prometheus would.
   Prints each one's mean CPU (% of one core, from process start, children included) and peak RSS
   (VmHWM), plus the agent's time to its first acknowledged event.
2. Outage: adds steady load (a short-lived process every 0.5 s), stops the broker for --outage seconds,
   restarts it on the same ports and data, waits for the agent to drain its spool, stops the agent with
   SIGTERM and reads the whole topic back: events lost, duplicated, out of order, and the replay time.

    .venv/bin/python benchmarks/bench_collectors.py --exec-events       # root
    .venv/bin/python benchmarks/bench_collectors.py --exec-events --idle 60 --procs 300

3. Exec events (--exec-events, instead of 1 and 2): first, what the kernel's event filters drop here
   (fork and thread events reaching a socket with no filter, with the kernel's event mask of kernels
   >= 6.6, and with the mask plus the agent's BPF socket filter); (a) 1,000 processes that each live
   1-5 ms (`/bin/sleep 0.00N`), started at 200/s: how many each process source saw with their exe path,
   the kernel's process events connector, fanotify (its own process) and the /proc poll (0.9 s) side by
   side, in one run; (b) the process probe in each event mode (connector, fanotify), in a process of its
   own as in the agent, under 100, 1,000 and 5,000 execs/s of `/bin/true` (or as many as the machine
   makes): its CPU (% of one core, and CPU per exec seen), its peak RSS, the events it emitted and what
   it shed; with --code A --code B, the probe of each checkout, interleaved rate by rate (before and
   after in one run); at 1,000/s also the floor (mode "floor"): a thread that only waits on the connector
   socket for each exec and reads nothing, i.e. the cost of one thread wakeup per exec; (c) unless
   --idle 0: the whole agent (with --code, one of each checkout side by side; `herdwatch collect`,
   default probes and intervals, a local Kafka broker, or an unreachable one with
   --no-broker or if the broker does not start) idle with at least --procs processes alive: after 15 s of
   warm-up, its CPU (% of one core) over --idle seconds, its RSS at the end and peak RSS (VmHWM), CPU by
   thread, the execs/s other work made on the machine meanwhile, and prometheus-node-exporter's idle CPU
   and RSS measured in the same window (scraped every 15 s).

    .venv/bin/python benchmarks/bench_collectors.py --agent-idle --idle 120 --procs 300 \
        --code /path/to/base-checkout --code .

4. Agent idle (--agent-idle, instead of the rest): the network probe's CPU per run in each checkout (--code,
   repeatable; default this one) and mode (sock_diag netlink, /proc/net; psutil.net_connections beside),
   200 runs back to back and then one run a second for 30 s (the machine's own socket churn), with how often
   the kernel's established-socket hash was walked; then (c) with one agent of each checkout side by side
   in the same window, same broker and same processes, so a before/after ratio comes from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition

from contract import topics
from contract.events import decode_batch
from contract.kafka_admin import ensure_topics
from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port

NODE_EXPORTER = "prometheus-node-exporter"


class Meter:
    """Samples one process: CPU seconds (own + reaped children) and peak RSS."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.peak_rss = 0
        self.hwm_kb = 0
        self.cpu_at: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cpu_at.append((time.time(), self.cpu()))
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
                self.hwm_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            except (psutil.Error, OSError, AttributeError):
                return
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mean_cpu_pct(self, since: float | None = None) -> float:
        """Mean CPU % of one core from process start (or from `since`) to the last sample."""
        t_end, c_end = self.cpu_at[-1]
        if since is None:
            return 100.0 * c_end / (t_end - self.proc.create_time())
        t0, c0 = next((t, c) for t, c in self.cpu_at if t >= since)
        return 100.0 * (c_end - c0) / (t_end - t0)


def ensure_node_exporter() -> str | None:
    found = shutil.which(NODE_EXPORTER)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {NODE_EXPORTER} with apt-get (reference point for the overhead figures) ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", NODE_EXPORTER], env=env,
                       capture_output=True, check=False)
        found = shutil.which(NODE_EXPORTER)
    if not found:
        print(f"{NODE_EXPORTER} is not installed and could not be installed here (needs root and apt-get: "
              f"`apt-get install {NODE_EXPORTER}`); its reference column is left out.")
    return found


def scrape_every(url: str, period: float, stop: threading.Event) -> None:
    while not stop.wait(period):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=5).read()


def spawn_idle(total: int) -> list[subprocess.Popen]:
    idle = []
    while len(psutil.pids()) < total:
        idle.append(subprocess.Popen(["sleep", "100000"]))
    return idle


class TopicReader:
    """Reads every telemetry message from the start, in a thread; records when the first one arrived."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "bench", "log_level": 2,
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(kafka.topics.telemetry, p, -2)
                              for p in range(topics.TELEMETRY.partitions)])
        self.events: list[tuple[int, int, str, str]] = []  # (partition, seq, kind, event_id)
        self.first_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            if self.first_at is None:
                self.first_at = time.time()
            events, rejected = decode_batch(msg.value())
            assert not rejected, rejected
            self.events += [(msg.partition() or 0, e.seq, e.kind.value, e.event_id) for e in events]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()


def metric(url: str, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name} ([0-9.e+-]+)$", body, re.M)
    return float(m.group(1)) if m else None


SPAWNER = """
import os, sys, time
argv, rate, total = sys.argv[1:-2], float(sys.argv[-2]), int(sys.argv[-1])
start, n, live = time.monotonic(), 0, 0
while n < total:
    due = start + n / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    os.posix_spawn(argv[0], argv, os.environ)
    n += 1
    live += 1
    while live:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not pid:
            break
        live -= 1
while live:
    os.wait()
    live -= 1
print(f"{n} {time.monotonic() - start:.3f}")
"""

PROBE_PROCESS = """
import json, resource, select, sys
from collectors.probes import ProcessProbe
from collectors.probes.exec_events import ExecSource
if sys.argv[1] == "floor":
    import socket, struct, threading
    from collectors.probes import exec_events as ee
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, ee.NETLINK_CONNECTOR)
    sock.setsockopt(socket.SOL_SOCKET, 33, ee.RCVBUF_BYTES)
    sock.bind((0, ee.CN_IDX_PROC))
    ee.attach_socket_filter(sock, ee.PROC_EVENT_EXEC)
    sock.send(ee.control_message(ee.PROC_CN_MCAST_LISTEN, sock.getsockname()[0]))
    sock.send(ee.control_message(ee.PROC_CN_MCAST_LISTEN, sock.getsockname()[0], ee.PROC_EVENT_EXEC))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    seen = [0]
    def wait_only():
        while True:
            try:
                sock.recv(65536)
                seen[0] += 1
            except OSError:
                pass
    threading.Thread(target=wait_only, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps({"events": 0, "seen": seen[0], "shed": {},
                      "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    sys.exit(0)
if sys.argv[1] == "fanotify":
    try:
        from collectors.probes.fanotify_events import FanotifySource as ExecSource
    except ImportError:
        print("unavailable", flush=True)
        sys.exit(0)
src = ExecSource()
src.open()
sys.stderr.write(f"socket filter attached: {getattr(src, 'kernel_filter', False)}\\n")
probe = ProcessProbe(0.9, 600, exec_source=src)
probe.collect(True)
events = 0
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.9)[0]:
    events += len(probe.collect(False))
events += len(probe.collect(False))
print(json.dumps({"events": events, "seen": src.execs_seen, "shed": probe.take_shed(),
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
"""


FANOTIFY_COVERAGE = """
import json, sys
from collectors.probes.fanotify_events import FanotifySource
src = FanotifySource(max_reads_per_s=1e9)
src.open()
print("ready", flush=True)
spawner, sleep = int(sys.stdin.readline()), sys.argv[1]
recs = [r for r in src.drain() if r.pid and getattr(r, "ppid", None) == spawner]
print(json.dumps({"seen": len(recs), "exe": sum(r.exe == sleep for r in recs),
                  "full": sum(r.exe == sleep and not {"cmdline", "user"} & set(r.missing) for r in recs)}))
"""
"""(a) for fanotify: its own process beside the benchmark's, so the two readers do not share a GIL."""


def spawn_at(rate: float, total: int, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SPAWNER, *argv, str(rate), str(total)], stdout=subprocess.PIPE,
                            text=True)


def filter_check() -> None:
    """Which events reach a socket: no filter, the kernel's event mask (kernels >= 6.6), mask + BPF."""
    import socket

    from collectors.probes import exec_events as ee
    kinds = {ee.PROC_EVENT_FORK: "fork", ee.PROC_EVENT_EXEC: "exec", ee.PROC_EVENT_EXIT: "exit",
             ee.PROC_EVENT_UID: "uid", 0x200: "comm"}
    socks = []
    exec_exit = ee.PROC_EVENT_EXEC | ee.PROC_EVENT_EXIT
    for mask, bpf in ((None, False), (exec_exit, False), (ee.WANTED, True)):  # the last: what the agent asks
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, ee.NETLINK_CONNECTOR)
        sock.setsockopt(socket.SOL_SOCKET, 33, ee.RCVBUF_BYTES)
        sock.bind((0, ee.CN_IDX_PROC))
        attached = ee.attach_socket_filter(sock, ee.WANTED) if bpf and hasattr(ee, "attach_socket_filter") else False
        port = sock.getsockname()[0]
        sock.send(ee.control_message(ee.PROC_CN_MCAST_LISTEN, port))
        if mask is not None:
            sock.send(ee.control_message(ee.PROC_CN_MCAST_LISTEN, port, mask))
        sock.setblocking(False)
        name = "no filter" if mask is None else "event mask " + ("exec" if mask == ee.PROC_EVENT_EXEC else
                                                                  "exec+exit" if mask == exec_exit else hex(mask))
        socks.append((name + (" + BPF filter" if attached else ""), sock))
    time.sleep(0.2)
    for _, sock in socks:  # what came before the load
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
    sh = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done"])
    threads = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sh.wait()
    time.sleep(0.3)
    print("events reaching a socket while 100 /bin/true ran and 50 threads came and went (other work included):")
    for name, sock in socks:
        counts: dict[str, int] = {}
        datagrams = 0
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                datagrams += 1
                if len(data) < 60:
                    continue
                what, _cpu, _ts, pid, tgid = struct.unpack_from("=IIQII", data, 36)  # one event per datagram
                if what == ee.PROC_EVENT_NONE:
                    continue
                label = kinds.get(what, hex(what))
                if what in (ee.PROC_EVENT_EXEC, ee.PROC_EVENT_EXIT) and pid != tgid:
                    label += " (thread)"
                counts[label] = counts.get(label, 0) + 1
        sock.close()
        print(f"  {name:<28}{datagrams:>6} datagrams  {dict(sorted(counts.items()))}")


def exec_events_benchmark(idle_s: float, procs: int, broker: bool, codes: list[Path] | None = None) -> int:
    from collectors.probes import ProcessProbe
    from collectors.probes.exec_events import ExecRecord, ExecSource
    if os.geteuid() != 0:
        print("--exec-events needs root (the process events connector)")
        return 1
    sleep = os.path.realpath("/bin/sleep")
    print(f"machine: {psutil.cpu_count()} cores, kernel {os.uname().release}")
    filter_check()
    print("\n(a) 1,000 processes living 1-5 ms each (/bin/sleep 0.00N), started at 200/s")
    src = ExecSource(max_reads_per_s=1e9)
    src.open()
    here = Path(__file__).resolve().parent.parent
    fan: subprocess.Popen | None = subprocess.Popen(
        [sys.executable, "-c", FANOTIFY_COVERAGE, sleep], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=here)
    assert fan is not None and fan.stdout is not None
    if fan.stdout.readline().strip() != "ready":
        print(f"fanotify: not measured ({fan.communicate()[1].strip()[-200:]})")
        fan = None
    poll = ProcessProbe(0.9, 600)
    poll.collect(True)
    poll_starts: list[dict] = []
    stop = threading.Event()

    def poll_loop() -> None:
        while not stop.wait(0.9):
            poll_starts.extend(p for k, p in poll.collect(False) if k.value == "process.start")
    threading.Thread(target=poll_loop, daemon=True).start()
    spawner = subprocess.Popen([sys.executable, "-c", SPAWNER.replace(
        "os.posix_spawn(argv[0], argv, os.environ)",
        "os.posix_spawn(argv[0], [argv[0], f'0.00{n % 5 + 1}'], os.environ)"), sleep, "200", "1000"],
        stdout=subprocess.PIPE, text=True)
    out, _ = spawner.communicate(timeout=120)
    time.sleep(1.5)
    stop.set()
    fan_counts = json.loads(fan.communicate(f"{spawner.pid}\n", timeout=60)[0]) if fan is not None else None
    records = [r for r in src.drain() if isinstance(r, ExecRecord) and r.ppid == spawner.pid]
    src.close()
    started, took = out.split()
    conn_exe = sum(r.exe == sleep for r in records)
    conn_full = sum(r.exe == sleep and not {"cmdline", "user"} & set(r.missing) for r in records)
    polled = [p for p in poll_starts if p["ppid"] == spawner.pid]
    poll_exe = sum(p["exe"] == sleep for p in polled)
    print(f"started {started} in {float(took):.1f} s")
    print(f"{'source':<34}{'seen':>8}{'with exe':>10}{'full identity':>15}")
    print(f"{'connector (kernel exec events)':<34}{len(records):>8}{conn_exe:>10}{conn_full:>15}")
    if fan_counts is not None:
        print(f"{'fanotify (FAN_OPEN_EXEC)':<34}{fan_counts['seen']:>8}{fan_counts['exe']:>10}{fan_counts['full']:>15}")
    print(f"{'/proc poll every 0.9 s':<34}{len(polled):>8}{poll_exe:>10}"
          f"{sum(p['exe'] == sleep and 'missing' not in p for p in polled):>15}")
    print("\n(b) the process probe (event modes, own process) under exec load of /bin/true"
          + (f"; {len(codes)} checkouts, interleaved" if codes and len(codes) > 1 else ""))
    print(f"{'checkout':<16}{'mode':<10}{'target/s':>9}{'reached/s':>11}{'CPU % 1 core':>14}{'us CPU/exec':>12}"
          f"{'peak RSS MB':>13}{'events':>8}{'execs seen':>12}  shed")
    for rate in (100, 1000, 5000):
        for code in codes or [here]:
            for mode in ("connector", "fanotify"):
                probe_under_load(code, mode, rate)
        if rate == 1000:  # the floor: a thread that only waits for each exec event (one wakeup each)
            probe_under_load(Path(__file__).resolve().parent.parent, "floor", rate)
    if idle_s > 0:
        idle_agent(idle_s, procs, broker, codes)
    return 0


def probe_under_load(code: Path, mode: str, rate: int, seconds: float = 10.0) -> None:
    """(b) one row: the process probe of checkout `code` in `mode`, in a process of its own, while two
    spawners start /bin/true at `rate` in all for `seconds` of target time."""
    agent = subprocess.Popen([sys.executable, "-c", PROBE_PROCESS, mode], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=code,
                             env={**os.environ, "PYTHONPATH": str(code)})
    assert agent.stdout is not None and agent.stdin is not None and agent.stderr is not None
    if agent.stdout.readline().strip() != "ready":
        agent.wait(timeout=30)
        return  # this checkout has no such mode
    meter = psutil.Process(agent.pid)
    c0, t0 = sum(meter.cpu_times()[:2]), time.time()
    spawners = [spawn_at(rate / 2, int(rate * seconds / 2), ["/bin/true"]) for _ in range(2)]
    made = 0
    for sp in spawners:
        n, _took = sp.communicate(timeout=300)[0].split()
        made += int(n)
    elapsed = time.time() - t0
    time.sleep(1.0)
    cpu = sum(meter.cpu_times()[:2]) - c0
    agent.stdin.write("stop\n")
    agent.stdin.flush()
    result = json.loads(agent.stdout.readline())
    agent.wait(timeout=30)
    print(f"{code.name[:15]:<16}{mode:<10}{rate:>9}{made / elapsed:>11.0f}{100 * cpu / (elapsed + 1.0):>14.1f}"
          f"{1e6 * cpu / max(1, result['seen']):>12.1f}"
          f"{result['rss_kb'] / 1024:>13.1f}{result['events']:>8}{result['seen']:>12}  {result['shed']}")


AGENT_NAMED_THREADS = """
import sys, threading
run = threading.Thread.run
def named(self):  # the OS thread name (/proc/<pid>/task/<tid>/comm) = the Python one, for CPU by thread
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(self.name[:15])
    except OSError:
        pass
    run(self)
threading.Thread.run = named
from herdwatch.cli import main
sys.exit(main(["collect"]))
"""
"""`herdwatch collect` with each thread's OS name set to its Python name (written to /proc, no extra module)."""

NETWORK_COST = """
import json, sys, time
import psutil
from collectors.probes import NetworkProbe
n, out = int(sys.argv[1]), {}
modes = ("netlink", "proc") if "source" in NetworkProbe.__init__.__code__.co_varnames else ("proc",)
for mode in modes:
    probe = NetworkProbe(1.0, None, **({"source": mode} if len(modes) > 1 else {}))
    probe.collect(True)
    t0 = time.process_time()
    for _ in range(n):
        probe.collect(False)
    out[mode] = {"ms": 1000 * (time.process_time() - t0) / n, "sockets": probe.count,
                 "walks": probe.walks if mode == "netlink" else n}  # /proc/net: the kernel walks every run
t0 = time.process_time()
for _ in range(n):
    psutil.net_connections("inet")
out["psutil"] = {"ms": 1000 * (time.process_time() - t0) / n}
paced = {mode: NetworkProbe(1.0, None, **({"source": mode} if len(modes) > 1 else {})) for mode in modes}
cpu = dict.fromkeys(modes, 0.0)
for probe in paced.values():
    probe.collect(True)
walks0 = {mode: getattr(p, "walks", 0) for mode, p in paced.items()}
seconds = int(sys.argv[2])
for _ in range(seconds):  # at the default cadence: what the machine's own socket churn costs
    for mode, probe in paced.items():
        t0 = time.thread_time()
        probe.collect(False)
        cpu[mode] += time.thread_time() - t0
    time.sleep(1.0)
for mode, probe in paced.items():
    out[mode + " @1s"] = {"ms": 1000 * cpu[mode] / seconds, "sockets": probe.count,
                          "walks": probe.walks - walks0[mode] if mode == "netlink" else seconds}
print(json.dumps(out))
"""


def code_env(code: Path) -> dict[str, str]:
    """Environment that makes a subprocess import herdwatch from checkout `code`."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(code) + (os.pathsep + path if path else "")}


def network_cost(codes: list[Path], runs: int = 200, seconds: int = 30) -> None:
    """CPU per run of the network probe in each checkout and mode: `runs` back to back (nothing new between
    them), then one run a second for `seconds` (mode "@1s": whatever sockets the machine opens meanwhile)."""
    print(f"\nnetwork probe, CPU per run (mean of {runs} back-to-back runs, then of one run a second for "
          f"{seconds} s: '@1s'; {Path('/proc/net/tcp').read_text().count(chr(10)) - 1} lines in /proc/net/tcp)")
    print(f"{'checkout':<34}{'mode':<14}{'ms/run':>9}{'sockets':>9}{'hash walks':>12}{'% core at 1 s':>15}")
    for code in codes:
        out = subprocess.run([sys.executable, "-c", NETWORK_COST, str(runs), str(seconds)],
                             env={**os.environ, **code_env(code)}, cwd=code, capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            print(f"{code!s:<34}failed: {out.stderr.strip()[-300:]}")
            continue
        for mode, r in json.loads(out.stdout.strip().splitlines()[-1]).items():
            walks = f"{r['walks']}/{seconds if '@' in mode else runs}" if "walks" in r else ""
            print(f"{code!s:<34}{mode:<14}{r['ms']:>9.3f}{r.get('sockets', ''):>9}{walks:>12}"
                  f"{r['ms'] / 10:>15.3f}")


def idle_agent(seconds: float, procs: int, use_broker: bool, codes: list[Path] | None = None) -> None:
    """(c) The whole agent idle: CPU over `seconds` after a 15 s warm-up, RSS; node-exporter alongside. With
    several checkouts, one agent of each runs side by side in the same window (same broker, same machine)."""
    from collectors.probes.exec_events import ExecSource
    codes = codes or [Path(__file__).resolve().parent.parent]
    print(f"\n(c) the whole agent idle (herdwatch collect, default probes and intervals), >= {procs} processes"
          + (f", {len(codes)} checkouts side by side" if len(codes) > 1 else ""))
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    cleanup: list[subprocess.Popen] = []
    stop = threading.Event()
    broker: LocalKafka | None = None
    try:
        bootstrap = "127.0.0.1:1"
        if use_broker:
            broker = LocalKafka(work / "kafka", free_port(), free_port())
            try:
                broker.start()
                kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix="idle")
                ensure_topics(kafka, specs=[topics.TELEMETRY])
                bootstrap = broker.bootstrap
            except Exception as e:  # any failure: measure with Kafka unreachable instead
                print(f"local Kafka broker did not start ({e}); Kafka unreachable instead")
                broker.stop()
                broker = None
        cleanup += spawn_idle(procs)
        agents: list[tuple[str, subprocess.Popen]] = []
        for i, code in enumerate(codes):
            env = {**os.environ, "HERDWATCH_KAFKA_BOOTSTRAP": bootstrap, "HERDWATCH_KAFKA_TOPIC_PREFIX": "idle",
                   "HERDWATCH_COLLECTOR_STATE_DIR": str(work / f"agent{i}"),
                   "HERDWATCH_COLLECTOR_HOST_ID": f"idle-{i}", **code_env(code)}
            with open(work / f"agent{i}.log", "w") as log:
                agent = subprocess.Popen([sys.executable, "-c", AGENT_NAMED_THREADS], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=code)
            cleanup.append(agent)
            agents.append((f"herdwatch collect {code}" if len(codes) > 1 else "herdwatch collect", agent))
        ne: psutil.Process | None = None
        ne_bin = ensure_node_exporter()
        if ne_bin:
            ne_port = free_port()
            ne_proc = subprocess.Popen([ne_bin, f"--web.listen-address=127.0.0.1:{ne_port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cleanup.append(ne_proc)
            ne = psutil.Process(ne_proc.pid)
            threading.Thread(target=scrape_every, args=(f"http://127.0.0.1:{ne_port}/metrics", 15.0, stop),
                             daemon=True).start()
        else:
            print(f"{NODE_EXPORTER}: skipped (not installed and could not be installed here)")
        counter = ExecSource(max_reads_per_s=1e-9)  # counts the machine's execs; reads nothing
        counter.open()
        measured = [(name, psutil.Process(a.pid)) for name, a in agents] + ([(NODE_EXPORTER, ne)] if ne else [])
        time.sleep(15)  # warm-up: imports, first inventories
        c0 = {p.pid: sum(p.cpu_times()[:4]) for _, p in measured}
        th0 = {a.pid: {t.id: t.user_time + t.system_time for t in psutil.Process(a.pid).threads()} for _, a in agents}
        execs0, t0 = counter.execs_seen, time.time()
        time.sleep(seconds)
        elapsed = time.time() - t0
        execs = counter.execs_seen - execs0
        c1 = {p.pid: sum(p.cpu_times()[:4]) for _, p in measured}
        th1 = {a.pid: {t.id: t.user_time + t.system_time for t in psutil.Process(a.pid).threads()} for _, a in agents}
        counter.close()
        print(f"{len(psutil.pids())} processes alive; Kafka "
              f"{'local broker ' + bootstrap if broker else 'unreachable (127.0.0.1:1)'}; other work on the "
              f"machine made {execs / elapsed:.0f} execs/s during the {elapsed:.0f} s window; "
              f"load average {os.getloadavg()[0]:.1f}")
        width = max(28, *(len(name) + 2 for name, _ in measured))
        print(f"{'process':<{width}}{'CPU % of 1 core':>17}{'RSS MB':>9}{'peak RSS MB':>13}")
        for name, proc in measured:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            print(f"{name:<{width}}{100 * (c1[proc.pid] - c0[proc.pid]) / elapsed:>17.3f}{rss / 1024:>9.1f}"
                  f"{hwm / 1024:>13.1f}")
        for name, agent in agents:
            names = {agent.pid: "MainThread"}
            for tid in th1[agent.pid]:
                with contextlib.suppress(OSError):
                    names.setdefault(tid, Path(f"/proc/{agent.pid}/task/{tid}/comm").read_text().strip())
            before = th0[agent.pid]
            by_thread = sorted(((th1[agent.pid][t] - before.get(t, 0.0), names.get(t, str(t)))
                                for t in th1[agent.pid]), reverse=True)
            print(f"{name} CPU by thread, % of one core: " + ", ".join(
                f"{tname} {100 * cpu / elapsed:.3f}" for cpu, tname in by_thread if cpu > 0))
        print("targets: idle CPU <= 0.5% of one core, RSS <= 50 MB")
    finally:
        stop.set()
        for p in cleanup:
            if p.poll() is None:
                p.kill()
            p.wait()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=150.0, help="overhead measurement, seconds (>= 120)")
    ap.add_argument("--outage", type=float, default=60.0, help="broker outage, seconds (0 skips phase 2)")
    ap.add_argument("--procs", type=int, default=300, help="at least this many processes during the run")
    ap.add_argument("--exec-events", action="store_true", help="exec events benchmark (root) instead")
    ap.add_argument("--idle", type=float, default=60.0,
                    help="with --exec-events: seconds of the idle whole-agent measurement (0 skips it)")
    ap.add_argument("--no-broker", action="store_true",
                    help="with --exec-events or --agent-idle: the idle agent runs with Kafka unreachable")
    ap.add_argument("--agent-idle", action="store_true",
                    help="only the network probe's cost per run and (c), the whole agent idle for --idle seconds")
    ap.add_argument("--code", action="append", type=Path,
                    help="with --agent-idle: a checkout to run the agent from (repeatable: side by side, one run); "
                         "with --exec-events: (b) runs the process probe of each checkout, interleaved, and (c) "
                         "one agent of each side by side")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.agent_idle:
        codes = [c.resolve() for c in args.code] if args.code else [Path(__file__).resolve().parent.parent]
        print(f"machine: {psutil.cpu_count()} cores, kernel {os.uname().release}, "
              f"load average {os.getloadavg()[0]:.1f}")
        network_cost(codes)
        idle_agent(args.idle, args.procs, not args.no_broker, codes)
        return 0
    if args.exec_events:
        return exec_events_benchmark(args.idle, args.procs, not args.no_broker,
                                     [c.resolve() for c in args.code] if args.code else None)

    work = Path(tempfile.mkdtemp(prefix="bench-collectors-"))
    broker = LocalKafka(work / "kafka", free_port(), free_port())
    cleanup: list[subprocess.Popen] = []
    stop_threads = threading.Event()
    try:
        broker.start()
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix="bench")
        ensure_topics(kafka, specs=[topics.TELEMETRY])
        cleanup += spawn_idle(args.procs)
        print(f"machine: {psutil.cpu_count()} cores, {len(psutil.pids())} processes running; "
              f"Kafka at {broker.bootstrap}")

        reader = TopicReader(kafka)
        metrics_port = free_port()
        env = {**os.environ, "HERDWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "HERDWATCH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
               "HERDWATCH_COLLECTOR_STATE_DIR": str(work / "agent"),
               "HERDWATCH_COLLECTOR_METRICS_PORT": str(metrics_port)}
        log_path = work / "agent.log"
        spawned_at = time.time()
        with open(log_path, "w") as log:
            agent = subprocess.Popen([sys.executable, "-m", "herdwatch.cli", "collect"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        cleanup.append(agent)
        agent_meter = Meter(psutil.Process(agent.pid))

        ne_meter = None
        ne_bin = ensure_node_exporter()
        if ne_bin:
            ne_port = free_port()
            ne = subprocess.Popen([ne_bin, f"--web.listen-address=127.0.0.1:{ne_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cleanup.append(ne)
            ne_meter = Meter(psutil.Process(ne.pid))
            threading.Thread(target=scrape_every, args=(f"http://127.0.0.1:{ne_port}/metrics", 15.0,
                                                        stop_threads), daemon=True).start()

        print(f"measuring for {args.duration:.0f} s at the default probe intervals ...", flush=True)
        time.sleep(args.duration)
        rows = [("herdwatch collect", agent_meter)] + ([(NODE_EXPORTER, ne_meter)] if ne_meter else [])
        warm = spawned_at + 15
        print()
        print(f"{'process':<28}{'mean CPU % of 1 core':>22}{'(after 15 s)':>14}{'peak RSS MB':>13}")
        for name, meter in rows:
            assert meter is not None
            print(f"{name:<28}{meter.mean_cpu_pct():>22.3f}{meter.mean_cpu_pct(warm):>14.3f}"
                  f"{meter.hwm_kb / 1024:>13.1f}")
        if ne_meter is not None:
            ne_meter.stop()
        ack = re.search(r"first event acknowledged by Kafka ([0-9.]+) s after agent start "
                        r"\(([0-9.]+) s after process start\)", log_path.read_text())
        if ack:
            print(f"first event acknowledged by the broker: {float(ack.group(1)):.3f} s after agent start "
                  f"({float(ack.group(2)):.2f} s after process start, imports included)")
        if reader.first_at is not None:
            print(f"first event read back by a consumer: {reader.first_at - spawned_at:.2f} s after spawning "
                  f"the agent process")
        print("targets: mean CPU <= 1% of one core, peak RSS <= 60 MB, first ack <= 2 s")

        if args.outage > 0:
            print(f"\noutage: steady load (a short-lived process every 0.5 s), broker down "
                  f"{args.outage:.0f} s")
            churn_stop = threading.Event()

            def churn() -> None:
                while not churn_stop.wait(0.5):
                    subprocess.Popen(["sleep", "1.5"])
            threading.Thread(target=churn, daemon=True).start()
            time.sleep(10)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            before = len(reader.events)
            broker.stop()
            down_at = time.time()
            time.sleep(args.outage)
            pending = metric(url, "herdwatch_collector_spool_pending_events") or 0
            broker.start()
            up_at = time.time()
            drained = None
            while time.time() - up_at < 120:
                if metric(url, "herdwatch_collector_spool_pending_events") == 0:
                    drained = time.time() - up_at
                    break
                time.sleep(0.5)
            churn_stop.set()
            time.sleep(3)
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
            agent_meter.stop()
            time.sleep(5)
            reader.stop()
            by_partition = {p for p, _, _, _ in reader.events}
            seqs = [s for _, s, _, _ in reader.events]
            ids = [i for _, _, _, i in reader.events]
            expected = list(range(max(seqs) + 1))
            lost = len(set(expected) - set(seqs))
            dups = len(ids) - len(set(ids))
            in_order = all(a < b for a, b in itertools.pairwise(seqs))
            print(f"events read before the outage {before}, spooled at the end of the outage {pending:.0f} "
                  f"(outage began {down_at - spawned_at:.0f} s after agent start)")
            print(f"spool drained {drained:.1f} s after the broker was back" if drained is not None
                  else "spool NOT drained within 120 s")
            print(f"total events {len(seqs)} (seq 0..{max(seqs)}), lost {lost}, duplicated {dups}, "
                  f"per-host order preserved: {in_order}, partitions used: {len(by_partition)}, "
                  f"last event: {reader.events[-1][2]}")
        else:
            reader.stop()
        return 0
    finally:
        stop_threads.set()
        for p in cleanup:
            if p.poll() is None:
                p.kill()
            p.wait()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
