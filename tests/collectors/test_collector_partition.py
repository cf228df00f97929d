"""A silent network partition between the agent and Kafka (packets dropped, no RST), then healing.

The agent runs in a network namespace of its own and reaches the broker only over a veth pair (the broker's
extra listener on the host side of the pair). The partition takes the host side of the pair down: the
namespace's packets are dropped without a word (permanent neighbour entries, so no ARP failure turns into an
error). For HERDWATCH_TEST_PARTITION_S seconds (default 20; the benchmark uses 60) the agent keeps
collecting; its CPU is printed (own threads and Kafka client threads apart). After healing: the spool
replays within 30 s and every event arrives exactly once, in order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from collector_helpers import read_events

from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port

pytestmark = pytest.mark.integration

PARTITION_S = float(os.environ.get("HERDWATCH_TEST_PARTITION_S", "20"))

AGENT = r"""
import json, logging, sys
from pathlib import Path
from collectors.agent import Agent
from collectors.probes.base import Probe
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
cfg = json.loads(sys.argv[1])

class Tick(Probe):
    name = "tick"
    def collect(self, full):
        return [(Kind.METRICS, {"values": {"n": 1.0}, "scope": "host"})]

s = CollectorSettings(state_dir=Path(cfg["state"]), cloud_metadata=False, journal=False, auth_logs=[],
                      image_file=Path(cfg["state"]) / "none.json", host_id=cfg["host"], image_id="ami-part",
                      image_family="part", heartbeat_interval_s=2.0, shutdown_flush_s=30.0)
agent = Agent(s, KafkaSettings(bootstrap=cfg["bootstrap"], topic_prefix=cfg["prefix"]), probes=[Tick(0.2)])
agent.install_signal_handlers()
agent.run()
print(json.dumps({"next_seq": agent.seq.next, "pending": agent.delivery.pending,
                  "dropped": agent.dropped_total()}), flush=True)
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Link:
    """A namespace joined to the host by a veth pair: host side 10.a.b.1, namespace side 10.a.b.2."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if, self.ns_if = f"hwpart-{tag}", f"hwp{tag}h", f"hwp{tag}n"
        n = int(tag, 16)
        self.host_ip, self.ns_ip = f"10.{200 + n % 50}.{n // 50 % 250}.1", f"10.{200 + n % 50}.{n // 50 % 250}.2"

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.ns)
        sh(*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        sh(*inside, "ip", "link", "set", self.ns_if, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        host_mac = Path(f"/sys/class/net/{self.host_if}/address").read_text().strip()
        sh(*inside, "ip", "neigh", "replace", self.host_ip, "lladdr", host_mac, "dev", self.ns_if, "nud", "permanent")
        self._pin_ns_neighbour()

    def _pin_ns_neighbour(self) -> None:
        out = subprocess.run(["ip", "netns", "exec", self.ns, "cat", f"/sys/class/net/{self.ns_if}/address"],
                             check=True, capture_output=True, text=True).stdout.strip()
        sh("ip", "neigh", "replace", self.ns_ip, "lladdr", out, "dev", self.host_if, "nud", "permanent")

    def cut(self) -> None:
        sh("ip", "link", "set", self.host_if, "down")

    def heal(self) -> None:
        sh("ip", "link", "set", self.host_if, "up")
        self._pin_ns_neighbour()

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")
    lk = Link()
    try:
        lk.up()
        yield lk
    finally:
        lk.down()


def cpu_split(pid: int) -> tuple[float, float]:
    """(agent threads, Kafka client threads) CPU seconds of a process."""
    own = client = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / tick
        if comm.startswith("rdk:"):
            client += secs
        else:
            own += secs
    return own, client


def wait_for_line(log: Path, pattern: str, timeout: float, after: int = 0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text()[after:]):
            return time.monotonic()
        time.sleep(0.2)
    return None


def test_silent_partition_costs_no_spin_and_loses_nothing(link: Link, tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(), listen=link.host_ip)
    broker.start()
    agent: subprocess.Popen[str] | None = None
    log = tmp_path / "agent.log"
    try:
        bootstrap = broker.listen_address
        assert bootstrap is not None
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:10]}")
        cfg = {"state": str(tmp_path / "state"), "host": f"part-{uuid.uuid4().hex[:8]}", "bootstrap": bootstrap,
               "prefix": kafka.topic_prefix}
        with open(log, "w") as err:
            agent = subprocess.Popen(["ip", "netns", "exec", link.ns, sys.executable, "-c", AGENT, json.dumps(cfg)],
                                     stdout=subprocess.PIPE, stderr=err, text=True, cwd=Path(__file__).parents[2])
        assert wait_for_line(log, "first event acknowledged", 90) is not None, log.read_text()[-3000:]
        proc = psutil.Process(agent.pid)
        python = next(p for p in [proc, *proc.children(recursive=True)] if "python" in p.name())
        time.sleep(3)

        link.cut()
        cut_at = len(log.read_text())
        own0, client0 = cpu_split(python.pid)
        t0 = time.monotonic()
        time.sleep(PARTITION_S)
        own1, client1 = cpu_split(python.pid)
        span = time.monotonic() - t0
        link.heal()
        healed = time.monotonic()
        back = wait_for_line(log, "Kafka is back", 60, after=cut_at)
        own_pct, client_pct = 100 * (own1 - own0) / span, 100 * (client1 - client0) / span
        text = log.read_text()[cut_at:]
        unreachable_lines = text.count("Kafka unreachable since")
        resume_s = None if back is None else back - healed
        print(f"\nsilent partition {span:.0f} s: agent threads {own_pct:.2f}% of a core, Kafka client threads "
              f"{client_pct:.2f}%; 'unreachable since' lines {unreachable_lines}; "
              f"resumed {resume_s if resume_s is None else round(resume_s, 1)} s after healing")
        assert resume_s is not None and resume_s <= 30.0, text[-3000:]
        assert 1 <= unreachable_lines <= 2 + PARTITION_S / 60
        assert client_pct < 20.0  # generous: a spinning client thread shows as ~100%
        time.sleep(3)
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=90)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["pending"] == 0 and summary["dropped"] == 0
        messages = read_events(kafka, until=summary["next_seq"], timeout=60)
        seqs = [e.seq for _, _, batch in messages for e in batch]
        print(f"events written {summary['next_seq']}, received {len(seqs)}, "
              f"duplicated {len(seqs) - len(set(seqs))}, lost {summary['next_seq'] - len(set(seqs))}")
        assert seqs == list(range(summary["next_seq"]))  # nothing lost, nothing twice, in order
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        broker.stop()
