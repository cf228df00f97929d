import json

from det_helpers import EventMaker

from contract.events import Kind
from detectors import HostState

NGINX = {
    "pid": 10,
    "ppid": 1,
    "exe": "/usr/sbin/nginx",
    "cmdline": "nginx: worker process",
    "user": "www-data",
}
SSHD = {"pid": 11, "ppid": 1, "exe": "/usr/sbin/sshd", "cmdline": "sshd -D", "user": "root"}
INIT = {"pid": 1, "ppid": 0, "exe": "/usr/lib/systemd/systemd", "cmdline": "/sbin/init", "user": "root"}


def started(linger_s: float = 900.0) -> tuple[HostState, EventMaker]:
    ev = EventMaker()
    hs = HostState("h1", "ami-1", "web", linger_s=linger_s)
    first = hs.apply(ev(Kind.HELLO, 0, {"agent_version": "1", "boot_time": 0}))
    assert first is not None and first.first and not first.added
    hs.apply(ev(Kind.PROCESS_INVENTORY, 1, {"items": [INIT, NGINX, SSHD]}))
    return hs, ev


def test_inventory_gives_process_identity_and_parent_pairs() -> None:
    ev = EventMaker()
    hs = HostState("h1", "ami-1", "web")
    o = hs.apply(ev(Kind.PROCESS_INVENTORY, 0, {"items": [INIT, NGINX, SSHD]}))
    assert o is not None and o.first
    assert "proc:/usr/sbin/nginx|nginx: worker process|www-data" in o.added
    assert "pc:/usr/lib/systemd/systemd>/usr/sbin/nginx" in o.added
    assert hs.apply(ev(Kind.PROCESS_INVENTORY, 60, {"items": [INIT, NGINX, SSHD]})) is None


def test_restart_with_new_pid_does_not_flap() -> None:
    hs, ev = started()
    assert hs.apply(ev(Kind.PROCESS_EXIT, 10, NGINX)) is None  # lingers
    o = hs.apply(ev(Kind.PROCESS_START, 12, {**NGINX, "pid": 999, "parents": ["/usr/lib/systemd/systemd"]}))
    assert o is None
    m = hs.apply(ev(Kind.METRICS, 20, {"values": {"cpu_pct": 5}}))
    assert m is not None and m.metrics["proc_restarts"] == 1 and m.metrics["cpu_pct"] == 5.0


def test_vanished_process_is_removed_after_linger() -> None:
    hs, ev = started(linger_s=60)
    hs.apply(ev(Kind.PROCESS_EXIT, 10, SSHD))
    assert hs.apply(ev(Kind.HEARTBEAT, 30, {"events_sent": 1, "events_dropped": 0})) is None
    o = hs.apply(ev(Kind.HEARTBEAT, 71, {"events_sent": 1, "events_dropped": 0}))
    assert o is not None
    assert set(o.removed) == {
        "proc:/usr/sbin/sshd|sshd -D|root",
        "pc:/usr/lib/systemd/systemd>/usr/sbin/sshd",
    }


def test_new_process_with_shell_parent() -> None:
    hs, ev = started()
    o = hs.apply(
        ev(
            Kind.PROCESS_START,
            5,
            {
                "pid": 50,
                "ppid": 10,
                "exe": "/bin/bash",
                "cmdline": "bash -i",
                "user": "www-data",
                "parents": ["/usr/sbin/nginx"],
            },
        )
    )
    assert o is not None
    assert set(o.added) == {"proc:/bin/bash|bash -i|www-data", "pc:/usr/sbin/nginx>/bin/bash"}


def test_inbound_connections_are_ignored_outbound_aggregated() -> None:
    hs, ev = started()
    hs.apply(
        ev(
            Kind.NET_INVENTORY,
            2,
            {
                "items": [
                    {
                        "state": "listen",
                        "proto": "tcp",
                        "laddr": "0.0.0.0",
                        "lport": 443,
                        "exe": "/usr/sbin/nginx",
                    }
                ]
            },
        )
    )
    inbound = {
        "state": "established",
        "proto": "tcp",
        "laddr": "10.1.0.5",
        "lport": 443,
        "raddr": "8.8.4.4",
        "rport": 50123,
    }
    assert hs.apply(ev(Kind.NET_OPEN, 3, inbound)) is None
    out = {
        "state": "established",
        "proto": "tcp",
        "laddr": "10.1.0.5",
        "lport": 41000,
        "raddr": "10.0.5.21",
        "rport": 5432,
    }
    o = hs.apply(ev(Kind.NET_OPEN, 4, out))
    assert o is not None and o.added == ("dest:tcp/5432@10.0.5.0/24",)
    assert hs.apply(ev(Kind.NET_OPEN, 5, {**out, "raddr": "10.0.5.22", "lport": 41001})) is None


def test_config_changes_replace_values() -> None:
    hs, ev = started()
    hs.apply(ev(Kind.CONFIG_INVENTORY, 2, {"items": {"sshd.permitrootlogin": "no"}}))
    o = hs.apply(ev(Kind.CONFIG_CHANGE, 3, {"key": "sshd.permitrootlogin", "before": "no", "after": "yes"}))
    assert o is not None
    assert o.added == ("cfg:sshd.permitrootlogin=yes",) and o.removed == ("cfg:sshd.permitrootlogin=no",)
    o = hs.apply(ev(Kind.PACKAGE_CHANGE, 4, {"key": "nc", "before": None, "after": "1.2"}))
    assert o is not None and o.added == ("pkg:nc=1.2",)


def test_goodbye_removes_everything_and_state_round_trips_through_json() -> None:
    hs, ev = started()
    hs.apply(ev(Kind.AUTH_ATTEMPT, 3, {"user": "root", "outcome": "failure"}))
    copy = HostState.from_dict(json.loads(json.dumps(hs.to_dict())))
    assert copy.features() == hs.features()
    m = copy.apply(ev(Kind.METRICS, 4, {"values": {}}))
    assert m is not None and m.metrics["auth_failures"] == 1
    o = copy.apply(ev(Kind.GOODBYE, 5, {"reason": "shutdown"}))
    assert o is not None and o.gone and set(o.removed) == hs.features()


def test_one_program_with_full_and_partial_identity_makes_one_process_feature() -> None:
    hs, ev = started()
    full = {"pid": 60, "ppid": 11, "exe": "/usr/bin/date", "cmdline": "date", "user": "root",
            "parents": ["/usr/sbin/sshd"]}
    partial = [
        {"pid": 61, "ppid": 11, "exe": "", "name": "date", "cmdline": "", "user": "root",
         "missing": ["exe", "cmdline"]},  # gone before its exe could be read
        {"pid": 62, "ppid": 11, "exe": "", "name": "date", "cmdline": "", "user": ""},  # an older agent
        {"pid": 63, "ppid": 11, "exe": "/usr/bin/date", "name": "date", "cmdline": "", "user": "root",
         "missing": ["cmdline"], "parents": ["/usr/sbin/sshd"]},
        {"pid": 64, "ppid": 0, "exe": "", "cmdline": "", "user": "", "count": 40,
         "missing": ["exe", "cmdline", "user", "ppid"]},
    ]
    added: set[str] = set()
    for t, p in enumerate([full, *partial]):
        o = hs.apply(ev(Kind.PROCESS_START, 5 + t, p))
        if o is not None:
            added |= set(o.added)
    procs = {f for f in hs.features() if f.startswith("proc:") and "date" in f}
    assert procs == {"proc:/usr/bin/date|date|root"}
    assert added == {"proc:/usr/bin/date|date|root", "pc:/usr/sbin/sshd>/usr/bin/date"}
    assert not any(f.startswith("proc:date") or ("|date|" in f and not f.startswith("proc:/")) for f in hs.features())
    m = hs.apply(ev(Kind.METRICS, 20, {"values": {}}))
    assert m is not None and m.metrics["proc_starts"] == 4 + 40  # counted storms count every exec


def test_partial_identity_alone_makes_no_feature_and_exits_balance() -> None:
    hs, ev = started(linger_s=0)
    gone = {"pid": 70, "ppid": 11, "exe": "", "name": "date", "cmdline": "", "user": "root", "missing": ["exe"]}
    assert hs.apply(ev(Kind.PROCESS_START, 5, gone)) is None
    assert hs.apply(ev(Kind.PROCESS_EXIT, 6, gone)) is None
    before = set(hs.features())
    inv = hs.apply(ev(Kind.PROCESS_INVENTORY, 7, {"items": [INIT, NGINX, SSHD, {**gone, "pid": 71}]}))
    assert inv is None and set(hs.features()) == before


def test_kernel_threads_keep_a_bracketed_identity() -> None:
    ev = EventMaker()
    hs = HostState("h1", "ami-1", "web")
    kthread = {"pid": 30, "ppid": 2, "exe": "", "name": "kworker/0:1", "cmdline": "", "user": "root",
               "kernel_thread": True}
    o = hs.apply(ev(Kind.PROCESS_INVENTORY, 0, {"items": [INIT, kthread]}))
    assert o is not None and "proc:[kworker/0:1]||root" in o.added


def test_cgroup_metrics_never_overwrite_the_hosts_own() -> None:
    from datetime import UTC, datetime

    from contract.events import Event, HostIdentity, Kind
    from detectors import HostState

    host = HostIdentity("i-1", "b-1", "ami-1", "web")
    t = datetime(2026, 3, 1, tzinfo=UTC)
    hs = HostState("i-1", "ami-1", "web")
    hs.apply(Event.new(host, Kind.METRICS, 1, {"values": {"cpu_pct": 20.0}, "scope": "host"}, time=t))
    obs = hs.apply(Event.new(host, Kind.METRICS, 2, {"values": {"cpu_pct": 95.0},
                                                      "scope": "cgroup:/system.slice/nginx.service"}, time=t))
    own = hs.apply(Event.new(host, Kind.METRICS, 3, {"values": {"cpu_pct": 3.0}, "own": True,
                                                      "scope": "cgroup:/kubepods/pod1/c0ffee"}, time=t))
    assert obs is not None and obs.metrics["cpu_pct@nginx.service"] == 95.0 and "cpu_pct" not in obs.metrics
    assert own is not None and own.metrics["cpu_pct@own"] == 3.0


def test_the_machines_figures_are_kept_out_of_the_hosts_metrics() -> None:
    from datetime import UTC, datetime

    from contract.events import Event, HostIdentity, Kind
    from detectors import HostState

    host = HostIdentity("i-1", "b-1", "ami-1", "web")
    t = datetime(2026, 3, 1, tzinfo=UTC)
    hs = HostState("i-1", "ami-1", "web")
    hs.counters = {"proc_starts": 7.0}
    machine = hs.apply(Event.new(host, Kind.METRICS, 1, {"values": {"cpu_pct": 99.0, "disk_read_bytes": 9e5},
                                                          "scope": "machine"}, time=t))
    assert machine is None or not {"cpu_pct", "disk_read_bytes", "proc_starts"} & machine.metrics.keys()
    own = hs.apply(Event.new(host, Kind.METRICS, 2, {"values": {"procs": 4.0}, "scope": "host"}, time=t))
    assert own is not None and own.metrics["procs"] == 4.0 and "cpu_pct" not in own.metrics
    assert own.metrics["proc_starts"] == 7.0  # the counters went with the host's own event, not the machine's
