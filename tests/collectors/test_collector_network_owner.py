"""A real TCP connection on loopback, held 2 s by a new process, is seen by the network probe at its default
interval with its owner (pid, exe, user) and the exact remote address and port; and the probe's cost."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time

import psutil

from collectors.probes import NetworkProbe
from collectors.settings import CollectorSettings
from contract.events import Kind


def test_connection_held_two_seconds_is_seen_with_its_owner() -> None:
    interval = CollectorSettings.default("network_interval_s")
    assert interval <= 1.0  # a 2 s connection spans at least one run whatever the phase
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = NetworkProbe(interval, None)
    assert probe.source_info() == {"mode": "netlink"}
    probe.collect(False)  # the baseline: what is already open is not "new"
    client = subprocess.Popen([sys.executable, "-c",
                               "import socket, sys, time\n"
                               f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                               "print(s.getsockname()[1], flush=True)\n"
                               "time.sleep(2.0)\n"], stdout=subprocess.PIPE, text=True)
    try:
        conn, _ = server.accept()
        assert client.stdout is not None
        client_port = int(client.stdout.readline())
        opened: list[dict[str, object]] = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and client.poll() is None:
            opened += [p for kind, p in probe.collect(False) if kind is Kind.NET_OPEN]
            time.sleep(interval)
        conn.close()
    finally:
        client.kill()
        client.wait()
        server.close()
    mine = [p for p in opened if p["lport"] == client_port and p["proto"] == "tcp"]
    assert len(mine) == 1, opened
    sock = mine[0]
    assert sock["state"] == "established"
    assert sock["raddr"] == "127.0.0.1" and sock["rport"] == port and sock["laddr"] == "127.0.0.1"
    assert sock["pid"] == client.pid
    assert sock["exe"] == os.path.realpath(psutil.Process().exe())  # the same interpreter
    assert sock["user"] == pwd.getpwuid(os.getuid()).pw_name


def test_probe_cost_against_psutil() -> None:
    """Prints the steady-state cost of one run (no new sockets) in each mode next to psutil.net_connections."""
    n = 50
    costs: dict[str, float] = {}
    for source in ("netlink", "proc"):
        probe = NetworkProbe(1.0, None, source=source)
        probe.collect(False)
        t0 = time.process_time()
        for _ in range(n):
            probe.collect(False)
        costs[source] = (time.process_time() - t0) / n
        assert probe.source_info()["mode"] == source
    t0 = time.process_time()
    for _ in range(n):
        psutil.net_connections("inet")
    theirs = (time.process_time() - t0) / n
    print(f"network probe CPU per run ({probe.count} sockets): netlink {costs['netlink'] * 1000:.3f} ms, "
          f"/proc/net {costs['proc'] * 1000:.3f} ms; psutil.net_connections {theirs * 1000:.3f} ms")
    assert max(costs.values()) < 0.25  # generous: a run at the 1 s default must stay a small share of a core
