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
from netns_link import AGENT, Link, cpu_split, namespaced_link, wait_for_line

from contract.settings import KafkaSettings
from herdwatch.kafka_local import LocalKafka, free_port

pytestmark = pytest.mark.integration

PARTITION_S = float(os.environ.get("HERDWATCH_TEST_PARTITION_S", "20"))


@pytest.fixture
def link() -> Iterator[Link]:
    with namespaced_link() as lk:
        yield lk


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
               "prefix": kafka.topic_prefix, "settings": {"heartbeat_interval_s": 2.0}}
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
