"""A network namespace joined to the host by a veth pair, cut and healed at will, and an agent to run in it:
the silent-partition tests of the agent (tests/collectors) and of tail-loss accounting (tests/streams)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
stop = Path(cfg["state"]) / "stop-ticking"

class Tick(Probe):
    name = "tick"
    def collect(self, full):
        return [] if stop.exists() else [(Kind.METRICS, {"values": {"n": 1.0}, "scope": "host"})]

s = CollectorSettings(state_dir=Path(cfg["state"]), cloud_metadata=False, journal=False, auth_logs=[],
                      image_file=Path(cfg["state"]) / "none.json", host_id=cfg["host"], image_id="ami-part",
                      image_family="part", shutdown_flush_s=30.0, **cfg.get("settings", {}))
agent = Agent(s, KafkaSettings(bootstrap=cfg["bootstrap"], topic_prefix=cfg["prefix"]), probes=[Tick(0.2)])
agent.install_signal_handlers()
agent.run()
print(json.dumps({"next_seq": agent.seq.next, "pending": agent.delivery.pending,
                  "dropped": agent.dropped_total()}), flush=True)
"""
"""An agent whose only probe emits one metrics event every 0.2 s until `<state>/stop-ticking` exists.
Argument: JSON {state, host, bootstrap, prefix, settings (extra CollectorSettings)}."""


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


@contextmanager
def namespaced_link() -> Iterator[Link]:
    """A Link, up for the block and torn down after it (also after a failure); skips without root."""
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
