"""osquery result logs as herdwatch events: the pure mapping behind the osquery stage (no Kafka, no Faust).

osquery's Kafka logger publishes one result log line per message (docs/osquery.md):

    differential  {"name", "hostIdentifier", "calendarTime", "unixTime", "epoch", "counter", "numerics",
                   "decorations", "columns": {...}, "action": "added" | "removed"}
    batch         the same with "diffResults": {"added": [...], "removed": [...]} (log_result_events=false)
    snapshot      the same with "snapshot": [{...}, ...] and "action": "snapshot"

`map_line` turns one line into the events the herdwatch agent would have sent for the same facts, with the
same kinds and payload shapes (contract/events.py): processes -> process.inventory / start / exit;
listening_ports and process_open_sockets -> net.inventory / open / close; logged_in_users ->
login.inventory; users, authorized_keys, file and hash -> config entries (the agent's keys: `user.<name>`,
`authorized_keys:<user>`, `authorized_keys.key:<user>:<fingerprint>`, `file.sha256:<path>`,
`file.mode:<path>`); deb_packages / rpm_packages -> package.*; kernel_modules -> module.*.

Host identity comes from the decorations: `instance_id` (ec2_instance_metadata) names the host, `ami_id` the
image (the cohort); `image_id`, `image_family` (or `role`) decorations override; `hostIdentifier` is the host
fallback and `OsqueryMapping.default_image` / `families` the image fallback and image -> family mapping.

Several queries may feed one inventory (users, authorized_keys and file hashes are all configuration;
listening_ports and process_open_sockets are both sockets): the host's record (`OsqueryHost`, kept in the
stage's table) remembers each query's last rows of those kinds, so an inventory is always the union and one
query's snapshot never erases what another reported.

Sequence numbers: osquery has none that herdwatch could use (its `counter` is per query). The record keeps a
per-host counter: events get consecutive seqs, under a boot id naming the source partition
(`osquery.p<partition>`), and the first seq each recent source offset started at is remembered, so a message
read again after a crash gets the same seqs (and the same event ids) and the host stage skips it as a
replay. No false data loss: a counter only ever moves by the events it emitted. Everything in a line is
hostile: wrong types, missing fields and oversized values are refused with a reason (dead-lettered by the
stage) or left out, never guessed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from contract import ssh_keys
from contract.events import (
    EARLIEST,
    LATEST,
    MAX_MESSAGE_BYTES,
    SAFE_ID,
    ContractError,
    Event,
    Kind,
    check_envelope,
    safe_id,
)

BOOT_PREFIX = "osquery.p"
SOURCE_TAG = "herdwatch.source"
MAX_ROWS = 5000
"""Rows of one line that are mapped (a snapshot with more is cut, tagged `herdwatch.truncated`)."""
RECENT_OFFSETS = 64
"""Source offsets per host whose first seq is remembered (replays after a crash stay inside this)."""
MAX_TEXT = 4096

TABLES = ("processes", "listening_ports", "process_open_sockets", "logged_in_users", "users", "authorized_keys",
          "deb_packages", "rpm_packages", "kernel_modules", "file", "hash")
_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("process_open_sockets", frozenset({"pid", "remote_address", "remote_port", "local_port"})),
    ("listening_ports", frozenset({"pid", "port", "protocol", "address"})),
    ("authorized_keys", frozenset({"uid", "algorithm", "key"})),
    ("logged_in_users", frozenset({"user", "tty", "type"})),
    ("kernel_modules", frozenset({"name", "used_by", "status"})),
    ("rpm_packages", frozenset({"name", "version", "release"})),
    ("deb_packages", frozenset({"name", "version", "arch"})),
    ("processes", frozenset({"pid", "path", "cmdline"})),
    ("users", frozenset({"uid", "gid", "username", "directory"})),
    ("hash", frozenset({"path", "sha256"})),
    ("file", frozenset({"path", "mode"})),
)
"""Columns that identify a table when the query's name does not (most specific first)."""
_FAMILY = {"processes": "proc", "listening_ports": "net", "process_open_sockets": "net",
           "logged_in_users": "login", "users": "cfg", "authorized_keys": "cfg", "file": "cfg", "hash": "cfg",
           "deb_packages": "pkg", "rpm_packages": "pkg", "kernel_modules": "mod"}
_UNION = ("cfg", "net", "login")
"""Inventories several queries (or differential rows) build up: the host record keeps each query's rows."""
_TCP_STATES = {"ESTABLISHED": "established", "LISTEN": "listen"}
_DECORATIONS = ("instance_id", "host_id", "image_id", "ami_id", "image_family", "role", "region", "instance_type",
                "hostname")
"""Decorations the mapping reads."""


class LineError(ValueError):
    """A line that cannot be mapped; the message says why (the dead letter's reason)."""


@dataclass(frozen=True)
class OsqueryMapping:
    """How lines map to hosts and images (settings HERDWATCH_WORKER_OSQUERY_*)."""

    default_image: str = ""
    """The image of hosts whose lines carry no ami_id / image_id decoration ("": such lines are refused)."""
    families: dict[str, str] = field(default_factory=dict)
    """image id -> image family, for lines without an image_family / role decoration (default: the image)."""
    queries: dict[str, str] = field(default_factory=dict)
    """query name -> osquery table, for queries whose name does not end with the table's name."""


@dataclass
class OsqueryHost:
    """What the stage keeps per host (its table value, JSON via to_json / from_json)."""

    seq: int = -1
    """The last seq given to an event of this host."""
    recent: list[list[int]] = field(default_factory=list)
    """[source offset, first seq it was given] of the host's last RECENT_OFFSETS messages."""
    partition: int = -1
    """The source partition whose counter this is (the boot id names it)."""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    """family ("cfg", "net") -> query name -> that query's current rows (cfg: {key: value}; net: [items])."""

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "recent": self.recent, "partition": self.partition, "rows": self.rows}

    @classmethod
    def from_json(cls, v: Any) -> OsqueryHost:
        if not isinstance(v, dict):
            return cls()
        rows = v.get("rows")
        return cls(seq=int(v.get("seq", -1)), recent=[[int(o), int(s)] for o, s in v.get("recent") or ()],
                   partition=int(v.get("partition", -1)), rows=rows if isinstance(rows, dict) else {})


@dataclass(frozen=True)
class Line:
    """One decoded result log line."""

    name: str
    table: str
    host_id: str
    image_id: str
    image_family: str
    time: datetime
    tags: dict[str, str]
    action: str
    """"snapshot", "added" or "removed" (a batch line is split into its added and removed parts)."""
    rows: list[dict[str, Any]]
    truncated: bool = False


# ---- decoding one line ---------------------------------------------------------------------------------
def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A column as text: osquery sends strings (numbers with numerics=true); anything else is ""."""
    if isinstance(value, str):
        return value[:limit]
    if type(value) in (int, float):
        return str(value)
    return ""


def _int(value: Any, default: int = -1) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    return default


def _ident(value: Any) -> str:
    """An identifier decoration, or "" if it is not one the contract accepts as it is (no silent rewriting
    of what names a host or an image: a mangled id would merge or split cohorts)."""
    text = _text(value, 256).strip()
    return text if text and SAFE_ID.fullmatch(text) else ""


def table_of(name: str, columns: set[str], mapping: OsqueryMapping) -> str | None:
    """The osquery table a query reads: configured, its name (`processes`, `pack_x_processes`), or its
    columns."""
    if name in mapping.queries:
        return mapping.queries[name]
    for table in sorted(TABLES, key=len, reverse=True):
        if name == table or name.endswith("_" + table):
            return table
    for table, cols in _SIGNATURES:
        if cols <= columns:
            return table
    return None


def decode_line(value: bytes | None, mapping: OsqueryMapping) -> list[Line]:
    """The parts of one result log message (a batch line gives an added and a removed part), or LineError."""
    if value is None:
        raise LineError("empty message (null value)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise LineError(f"message of {len(value)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise LineError(f"not JSON: {e}") from None
    if type(obj) is not dict:
        raise LineError(f"a result log line must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise LineError("result line has no query 'name'")
    decorations = obj.get("decorations")
    if decorations is None:  # --decorations_top_level: the decorations are keys of the line itself
        decorations = {k: obj[k] for k in _DECORATIONS if k in obj}
    if not isinstance(decorations, dict):
        raise LineError("'decorations' must be an object")
    host_id = _ident(decorations.get("instance_id")) or _ident(decorations.get("host_id")) \
        or _ident(obj.get("hostIdentifier"))
    if not host_id:
        raise LineError("no host identity: add the ec2_instance_metadata decoration (instance_id) or set "
                        "osquery's host_identifier to a name of letters, digits and ._:/@+=~,-")
    image_id = _ident(decorations.get("image_id")) or _ident(decorations.get("ami_id")) or mapping.default_image
    if not image_id:
        raise LineError(f"host {host_id}: no image id: add the ami_id decoration (ec2_instance_metadata) or "
                        "an image_id decoration, or set HERDWATCH_WORKER_OSQUERY_DEFAULT_IMAGE")
    family = (_ident(decorations.get("image_family")) or _ident(decorations.get("role"))
              or mapping.families.get(image_id) or image_id)
    t = _time(obj)
    tags = {SOURCE_TAG: "osquery", "osquery.query": safe_id(name)[:128]}
    if _ident(decorations.get("instance_id")):
        tags["cloud.provider"] = "aws"
    for deco, tag in (("region", "cloud.region"), ("instance_type", "cloud.instance_type"),
                      ("hostname", "host.name")):
        text = _text(decorations.get(deco), 256)
        if text and not re.search(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]", text):
            tags[tag] = text
    parts: list[tuple[str, Any]] = []
    if "snapshot" in obj:
        parts.append(("snapshot", obj["snapshot"]))
    elif "diffResults" in obj:
        diff = obj["diffResults"]
        if not isinstance(diff, dict):
            raise LineError("'diffResults' must be an object")
        parts += [(action, diff.get(action) or []) for action in ("removed", "added")]
    elif "columns" in obj:
        action = obj.get("action")
        if action not in ("added", "removed"):
            raise LineError(f"differential line with action {str(action)[:32]!r} (expected added or removed)")
        parts.append((action, [obj["columns"]]))
    else:
        raise LineError("result line has neither 'columns', 'snapshot' nor 'diffResults'")
    lines = []
    for action, rows in parts:
        if not isinstance(rows, list) or not all(type(r) is dict for r in rows):
            raise LineError(f"{action} rows must be a list of objects")
        columns = set().union(*(r.keys() for r in rows[:16])) if rows else set()
        table = table_of(name, columns, mapping)
        if table is None:
            if not rows:
                continue  # an empty result of a query we cannot place: nothing to say
            raise LineError(f"query {name[:64]!r}: no mapped table (name it after one of {', '.join(TABLES)}, "
                            "or map it in HERDWATCH_WORKER_OSQUERY_QUERIES)")
        lines.append(Line(name[:256], table, host_id, image_id, family, t, tags, action, rows[:MAX_ROWS],
                          len(rows) > MAX_ROWS))
    return lines


def _time(obj: dict[str, Any]) -> datetime:
    secs = _int(obj.get("unixTime"), default=-1)
    if secs < 0:
        raise LineError("result line has no 'unixTime' (epoch seconds)")
    try:
        t = datetime.fromtimestamp(secs, UTC)
    except (OverflowError, OSError, ValueError):
        raise LineError(f"unixTime {secs} is out of range") from None
    if not EARLIEST <= t <= LATEST:
        raise LineError(f"unixTime {secs} is outside {EARLIEST.year}..{LATEST.year}")
    return t


# ---- rows -> payload items -----------------------------------------------------------------------------
def _user(row: dict[str, Any]) -> str:
    """A process's user: the username column (a join with users), else "uid:<n>" so clones still agree."""
    name = _text(row.get("username") or row.get("user"), 64)
    if name:
        return name
    uid = _int(row.get("uid"))
    return f"uid:{uid}" if uid >= 0 else ""


def _proc(row: dict[str, Any]) -> dict[str, Any] | None:
    pid = _int(row.get("pid"))
    if pid < 0:
        return None
    exe, cmdline, user = _text(row.get("path")), _text(row.get("cmdline")), _user(row)
    missing = [name for name, v in (("exe", exe), ("user", user)) if not v]
    item: dict[str, Any] = {"pid": pid, "exe": exe, "cmdline": cmdline or _text(row.get("name"), 256),
                            "user": user, "name": _text(row.get("name"), 256)}
    ppid = _int(row.get("parent"))
    if ppid >= 0:
        item["ppid"] = ppid
    if missing:
        item["missing"] = missing
    return item


def _proto(row: dict[str, Any]) -> str:
    proto = {6: "tcp", 17: "udp"}.get(_int(row.get("protocol")), "")
    return proto + ("6" if proto and _int(row.get("family")) == 10 else "")


def _owner(row: dict[str, Any]) -> dict[str, Any]:
    """The socket's owner as the agent reports it: pid, exe (a join's `exe`/`process_path` column), user."""
    pid = _int(row.get("pid"))
    return {"pid": pid if pid > 0 else 0, "exe": _text(row.get("exe") or row.get("process_path")),
            "user": _user(row) if ("username" in row or "uid" in row) else ""}


def _sock(table: str, row: dict[str, Any]) -> dict[str, Any] | None:
    proto = _proto(row)
    if not proto:
        return None
    if table == "listening_ports":
        port = _int(row.get("port"))
        if not 0 < port <= 65535:
            return None
        return {"state": "listen", "proto": proto, "laddr": _text(row.get("address"), 64), "lport": port,
                "raddr": "", "rport": 0, **_owner(row)}
    lport, rport = _int(row.get("local_port")), _int(row.get("remote_port"))
    state = _TCP_STATES.get(_text(row.get("state"), 32).upper()) if proto.startswith("tcp") else (
        "listen" if rport == 0 else "established")
    if state is None or not 0 <= lport <= 65535 or not 0 <= rport <= 65535:
        return None
    raddr = "" if state == "listen" else _text(row.get("remote_address"), 64)
    return {"state": state, "proto": proto, "laddr": _text(row.get("local_address"), 64), "lport": lport,
            "raddr": raddr, "rport": 0 if state == "listen" else rport, **_owner(row)}


def _login(row: dict[str, Any]) -> dict[str, Any] | None:
    if _text(row.get("type"), 32) not in ("user", ""):
        return None
    user = _text(row.get("user"), 64)
    if not user:
        return None
    return {"user": user, "terminal": _text(row.get("tty"), 64), "host": _text(row.get("host"), 256),
            "started": float(max(0, _int(row.get("time"), 0)))}


def _config(table: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Configuration entries of some rows, under the keys the agent's config probe uses."""
    out: dict[str, str] = {}
    keys_of: dict[str, list[str]] = {}
    for row in rows:
        if table == "users":
            name = _text(row.get("username"), 64)
            if name:
                out[f"user.{name}"] = (f"{_int(row.get('uid'))}:{_int(row.get('gid'))}:"
                                       f"{_text(row.get('directory'), 256)}:{_text(row.get('shell'), 256)}")
        elif table == "authorized_keys":
            user = _text(row.get("username"), 64) or (f"uid:{_int(row.get('uid'))}" if _int(row.get("uid")) >= 0
                                                       else "")
            algorithm, blob_b64 = _text(row.get("algorithm"), 64), _text(row.get("key"), 16384)
            blob = ssh_keys.key_blob(algorithm, blob_b64)
            if not user or blob is None:
                continue
            key = ssh_keys.PublicKey(algorithm, ssh_keys.fingerprint(blob),
                                     ssh_keys.safe_comment(_text(row.get("comment"), 1024)),
                                     bool(_text(row.get("options"), 16)))
            entry_key, entry_value = ssh_keys.entry(user, key)
            out[entry_key] = entry_value
            keys_of.setdefault(user, []).append(f"{key.fingerprint} {_text(row.get('options'), 4096)}")
        elif table in ("file", "hash"):
            path = _text(row.get("path"), 1024)
            if not path.startswith("/"):
                continue
            if table == "hash" and re.fullmatch(r"[0-9a-f]{64}", _text(row.get("sha256"), 64)):
                out[f"file.sha256:{path}"] = _text(row.get("sha256"), 64)
            if table == "file" and re.fullmatch(r"[0-7]{3,4}", _text(row.get("mode"), 8)):
                out[f"file.mode:{path}"] = _text(row.get("mode"), 8).rjust(4, "0")
                if _int(row.get("uid")) >= 0 and _int(row.get("gid")) >= 0:
                    out[f"file.owner:{path}"] = f"{_int(row.get('uid'))}:{_int(row.get('gid'))}"
    for user, keys in keys_of.items():  # like the agent's hash of the files: changes with any key or option
        out[f"authorized_keys:{user}"] = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    return out


def _packages(table: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for row in rows:
        name, version = _text(row.get("name"), 256), _text(row.get("version"), 256)
        if table == "rpm_packages" and _text(row.get("release"), 256):
            version = f"{version}-{_text(row.get('release'), 256)}"
        if name and version:
            out[name] = version
    return out


# ---- one line -> events --------------------------------------------------------------------------------
def _payloads(line: Line, host: OsqueryHost) -> list[tuple[Kind, dict[str, Any]]]:
    """The (kind, payload) pairs of one line; updates the host's per-query rows of union families."""
    table, fam, snapshot, added = line.table, _FAMILY[line.table], line.action == "snapshot", line.action == "added"
    extra = {"truncated": True} if line.truncated else {}
    if fam == "proc":
        items = [p for p in (_proc(r) for r in line.rows) if p]
        if snapshot:
            return [(Kind.PROCESS_INVENTORY, {"items": items, **extra})]
        return [(Kind.PROCESS_START if added else Kind.PROCESS_EXIT, p) for p in items]
    if fam == "login":
        items = [p for p in (_login(r) for r in line.rows) if p]
        if snapshot:
            return [(Kind.LOGIN_INVENTORY, {"items": items})]
        logins: list[dict[str, Any]] = host.rows.setdefault("login", {}).setdefault(line.name, [])
        for item in items:
            if added and item not in logins:
                logins.append(item)
            elif not added and item in logins:
                logins.remove(item)
        return [(Kind.LOGIN_INVENTORY, {"items": list(logins)})]
    if fam == "net":
        socks = [s for s in (_sock(table, r) for r in line.rows) if s]
        mine = host.rows.setdefault("net", {})
        if snapshot:
            mine[line.name] = socks
            every = [s for q in sorted(mine) for s in mine[q]]
            return [(Kind.NET_INVENTORY, {"items": every, **extra})]
        sockets: list[dict[str, Any]] = mine.setdefault(line.name, [])
        for s in socks:
            if added and s not in sockets:  # a line read again after a crash adds nothing twice
                sockets.append(s)
            elif not added and s in sockets:
                sockets.remove(s)
        return [(Kind.NET_OPEN if added else Kind.NET_CLOSE, s) for s in socks]
    if fam == "cfg":
        configs = host.rows.setdefault("cfg", {})
        values = _config(table, line.rows)
        if snapshot:
            configs[line.name] = values
            merged = {k: v for q in sorted(configs) for k, v in configs[q].items()}
            return [(Kind.CONFIG_INVENTORY, {"items": dict(sorted(merged.items()))})]
        known: dict[str, str] = configs.setdefault(line.name, {})
        out: list[tuple[Kind, dict[str, Any]]] = []
        for key, value in values.items():
            before = known.get(key)
            after = value if added else None
            if not added and before is None:
                continue
            if added:
                known[key] = value
            else:
                known.pop(key, None)
            if before != after:
                out.append((Kind.CONFIG_CHANGE, {"key": key, "before": before, "after": after}))
        return out
    found = _packages(table, line.rows) if fam == "pkg" else {
        _text(r.get("name"), 256): "loaded" for r in line.rows if _text(r.get("name"), 256)}
    inventory, change = ((Kind.PACKAGE_INVENTORY, Kind.PACKAGE_CHANGE) if fam == "pkg"
                         else (Kind.MODULE_INVENTORY, Kind.MODULE_CHANGE))
    if snapshot:
        payload: dict[str, Any] = {"items": found, **extra}
        if fam == "pkg":
            payload["manager"] = "rpm" if table == "rpm_packages" else "dpkg"
        return [(inventory, payload)]
    return [(change, {"key": k, "before": None if added else v, "after": v if added else None})
            for k, v in found.items()]


def event_id(source: str, offset: int, index: int, t: datetime) -> str:
    """A UUIDv7 that is the same every time one source message is mapped: its time from the event, its
    random part from the message's place (topic:partition, offset) and the event's index in it."""
    ms = int(t.timestamp() * 1000) & (2**48 - 1)
    rand = int.from_bytes(hashlib.sha256(f"{source}:{offset}:{index}".encode()).digest()[:10], "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


@dataclass
class Mapped:
    events: list[Event]
    rejected: list[str] = field(default_factory=list)
    """Why events of the line were refused (each also fails the contract's own check)."""
    replay: bool = False
    """The message was read before and is older than the host's remembered offsets: nothing was sent."""


def map_line(lines: list[Line], host: OsqueryHost, source: str, partition: int, offset: int) -> Mapped:
    """The events of one decoded message (`decode_line`) for the host its lines name, numbered from the host's
    counter (`host` is updated in place: counter, recent offsets, per-query rows)."""
    if not lines:
        return Mapped([])
    first = lines[0]
    if host.partition != partition:  # a host's lines moved to another partition: a new counter, a new boot
        host.seq, host.recent, host.partition = -1, [], partition
    known = {o: s for o, s in host.recent}
    if offset in known:
        start = known[offset]  # read again after a crash: the same seqs and ids, skipped downstream
    elif host.recent and offset < max(known):
        return Mapped([], replay=True)
    else:
        start = host.seq + 1
    pairs = [pair for line in lines for pair in _payloads(line, host)]
    out, rejected = Mapped([]), []
    boot = f"{BOOT_PREFIX}{partition}"
    seq = start
    for index, (kind, payload) in enumerate(pairs):
        event = Event(kind=kind, time=first.time, host_id=first.host_id, boot_id=boot, image_id=first.image_id,
                      image_family=first.image_family, seq=seq, payload=payload, tags=dict(first.tags),
                      event_id=event_id(source, offset, index, first.time))
        try:
            check_envelope(event.to_dict(), key=first.host_id)
        except ContractError as e:
            rejected.append(f"osquery {first.table} row: {e}")
            continue
        out.events.append(event)
        seq += 1
    out.rejected = rejected
    if offset not in known:
        host.recent = [*host.recent, [offset, start]][-RECENT_OFFSETS:]
    host.seq = max(host.seq, seq - 1)
    return out
