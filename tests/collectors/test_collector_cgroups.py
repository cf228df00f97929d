"""Per-workload metrics from cgroup v2: two real workloads in their own cgroups (one busy, one idle), each
measured by the metrics probe pointed at its cgroup; and the file parsing on a fake cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.cgroups import CgroupMeter, cgroup2_mount, own_cgroup, read_cgroup
from collectors.probes import MetricsProbe
from collectors.probes.metrics import INITIAL_PID_NAMESPACE, MACHINE_WIDE
from contract.events import Kind


def test_fake_cgroup_files_give_deltas_quota_and_limits(tmp_path: Path) -> None:
    cg = tmp_path / "work.slice" / "app"
    cg.mkdir(parents=True)
    (cg / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 900000\nsystem_usec 100000\n")
    (cg / "cpu.max").write_text("50000 100000\n")
    (cg / "memory.current").write_text("104857600\n")
    (cg / "memory.max").write_text("209715200\n")
    (cg / "io.stat").write_text("8:0 rbytes=1000 wbytes=2000 rios=1 wios=2\n8:16 rbytes=10 wbytes=20\n")
    (cg / "pids.current").write_text("7\n")
    now = [100.0]
    meter = CgroupMeter("/work.slice/app", tmp_path, clock=lambda: now[0])
    first = meter.values()
    assert first is not None and "cpu_pct" not in first  # no delta yet
    assert first["mem_bytes"] == 104857600 and first["mem_pct"] == 50.0 and first["pids"] == 7
    assert first["cpu_quota_cores"] == 0.5
    (cg / "cpu.stat").write_text("usage_usec 1500000\n")  # 0.5 s of CPU in 2 s: a quarter core
    (cg / "io.stat").write_text("8:0 rbytes=5000 wbytes=2000\n8:16 rbytes=10 wbytes=120\n")
    now[0] = 102.0
    second = meter.values()
    assert second is not None
    assert second["cpu_pct"] == pytest.approx(25.0) and second["cpu_quota_pct"] == pytest.approx(50.0)
    assert second["io_read_bytes"] == 4000 and second["io_write_bytes"] == 100
    (cg / "memory.max").write_text("max\n")
    (cg / "cpu.max").write_text("max 100000\n")
    unlimited = read_cgroup(cg)
    assert unlimited.mem_max_bytes is None and unlimited.quota_cores is None
    assert meter.scope == "cgroup:/work.slice/app"
    (cg / "pids.current").unlink()
    for name in ("cpu.stat", "cpu.max", "memory.current", "memory.max", "io.stat"):
        (cg / name).unlink()
    cg.rmdir()
    assert meter.values() is None  # the workload is gone: no event


def test_own_cgroup_and_mount_from_proc_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("4:memory:/x\n0::/kubepods/pod1/abc\n")
    (proc / "self" / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n")
    assert own_cgroup(proc) == "/kubepods/pod1/abc"
    assert cgroup2_mount(proc) == Path("/sys/fs/cgroup/unified")
    (cg := tmp_path / "cg" / "kubepods" / "pod1" / "abc").mkdir(parents=True)
    (cg / "pids.current").write_text("3\n")
    probe = MetricsProbe(1.0, proc=proc, cgroup_mount=tmp_path / "cg")  # the agent in a container
    events = probe.collect(False)
    scopes = [p["scope"] for kind, p in events if kind is Kind.METRICS]
    assert scopes == ["host", "cgroup:/kubepods/pod1/abc"]
    assert events[1][1]["values"]["pids"] == 3.0


def _writable_cgroup2() -> Path | None:
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0:
        return None
    probe_dir = mount / f"hw-check-{uuid.uuid4().hex[:8]}"
    try:
        probe_dir.mkdir()
    except OSError:
        return None
    probe_dir.rmdir()
    return mount


@pytest.fixture
def two_cgroups() -> Iterator[tuple[Path, str, str]]:
    mount = _writable_cgroup2()
    if mount is None:
        pytest.skip("needs root and a writable cgroup v2 mount")
    tag = uuid.uuid4().hex[:8]
    names = [f"hw-test-{tag}-busy", f"hw-test-{tag}-idle"]
    for name in names:
        (mount / name).mkdir()
    try:
        yield mount, names[0], names[1]
    finally:
        for name in names:
            for _ in range(50):  # a cgroup can be removed once its last process has been reaped
                try:
                    (mount / name).rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _start_in(cgroup: Path, code: str) -> subprocess.Popen[bytes]:
    procs = str(cgroup / "cgroup.procs")

    def join() -> None:  # runs in the child before exec: the workload starts inside its cgroup
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=join)


def test_busy_and_idle_workloads_measured_apart(two_cgroups: tuple[Path, str, str]) -> None:
    mount, busy_name, idle_name = two_cgroups
    busy = _start_in(mount / busy_name, "while True: pass")
    idle = _start_in(mount / idle_name, "import time; time.sleep(60)")
    try:
        probe = MetricsProbe(1.0, cgroups=[busy_name, idle_name], own_scope=False, cgroup_mount=mount)
        probe.collect(False)
        time.sleep(3.0)
        events = probe.collect(False)
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    by_scope = {p["scope"]: p["values"] for kind, p in events if kind is Kind.METRICS}
    assert set(by_scope) == {"host", f"cgroup:/{busy_name}", f"cgroup:/{idle_name}"}
    busy_pct = by_scope[f"cgroup:/{busy_name}"]["cpu_pct"]
    idle_pct = by_scope[f"cgroup:/{idle_name}"]["cpu_pct"]
    print(f"busy cgroup cpu_pct {busy_pct:.1f}, idle cgroup cpu_pct {idle_pct:.1f}, "
          f"host cpu_pct {by_scope['host'].get('cpu_pct', float('nan')):.1f}")
    # a CPU loop gets at least a fair share of a core even on a loaded 2-core machine; the idle one ~0
    assert busy_pct > 20.0 and idle_pct < 10.0 and busy_pct > idle_pct + 15.0


def test_in_a_pid_namespace_the_machines_figures_are_not_the_hosts(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "self" / "ns" / "pid").symlink_to("pid:[4026532999]")  # a namespace of its own
    probe = MetricsProbe(1.0, procs=lambda: 3, proc=proc, own_scope=False)
    host, machine = (p for kind, p in probe.collect(False) if kind is Kind.METRICS)
    assert (host["scope"], machine["scope"]) == ("host", "machine")
    assert host["values"]["procs"] == 3.0
    assert not MACHINE_WIDE & host["values"].keys()
    assert {"mem_pct", "load1", "disk_root_pct"} <= machine["values"].keys() and "procs" not in machine["values"]
    (proc / "self" / "ns" / "pid").unlink()
    (proc / "self" / "ns" / "pid").symlink_to(INITIAL_PID_NAMESPACE)  # the machine's own namespace
    alone = [p for kind, p in MetricsProbe(1.0, proc=proc, own_scope=False).collect(False) if kind is Kind.METRICS]
    assert [p["scope"] for p in alone] == ["host"] and "mem_pct" in alone[0]["values"]
