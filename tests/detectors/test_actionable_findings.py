"""Findings an analyst can act on: a connection finding names the exact remote address and port and the
process holding it, an authorized_keys finding the key's type, fingerprint and comment; no explanation ever
shows an empty slot, whatever details are missing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from det_helpers import BASE, T0, advance, at, findings, join
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import ssh_keys
from contract.events import Event, Kind
from detectors import EngineConfig, FamilyEngine, FindingKind, HostState, Observation
from detectors.features import describe, describe_instance, quoted, socket_details
from streams.hosts import merge

NC = {"state": "established", "proto": "tcp", "laddr": "10.0.1.7", "lport": 51234, "raddr": "10.77.0.5",
      "rport": 4444, "pid": 812, "exe": "/usr/bin/nc", "user": "www-data"}
EMPTY_SLOT = re.compile(r"\(\s*\)|''|\"\"|\s{2,}|\s[,.;:)]|\(\s|\bby\s*(?:$|[,.;(])|\bpid 0\b|\buser\s*(?:$|[,.;)=])"
                        r"|=''|\bon\s+(?:on|$)|:\s*$")


def _event(kind: Kind, host: str, s: float, seq: int, payload: dict[str, Any]) -> Event:
    return Event(kind=kind, time=T0 + timedelta(seconds=s), host_id=host, boot_id="b", image_id="ami-web",
                 image_family="web", seq=seq, payload=payload)


def test_connection_finding_names_the_exact_address_port_and_process() -> None:
    e = FamilyEngine()
    join(e, "ami-web", 10)
    hs = HostState("ami-web-h03", "ami-web", "web")
    first = hs.apply(_event(Kind.HELLO, "ami-web-h03", 90, 1, {"agent_version": "1", "boot_time": 0}))
    opened = hs.apply(_event(Kind.NET_OPEN, "ami-web-h03", 100, 2, NC))
    assert first is not None and opened is not None
    # the host stage folds a batch's observations, then they cross the observations topic as JSON
    folded = merge([first, opened])[-1]
    wire = Observation.from_dict(folded.to_dict())
    feature = "dest:tcp/4444@10.77.0.0/24"
    assert feature in wire.added and wire.details[feature]["pid"] == 812
    e.process(Observation("ami-web-h03", "ami-web", "web", at(100.5), added=(feature,),
                          details={feature: wire.details[feature]}))
    fs = [f for f in findings(advance(e, 110, 200)) if f.kind == FindingKind.RARE_FEATURE]
    assert [f.host_id for f in fs] == ["ami-web-h03"]
    f = fs[0]
    assert "10.77.0.5:4444" in f.explanation and "/usr/bin/nc (pid 812, user www-data)" in f.explanation
    assert "tcp/4444@10.77.0.0/24" in f.explanation and "1 of 10 hosts" in f.explanation  # the cohort summary
    assert f.details["instance"] == {"proto": "tcp", "laddr": "10.0.1.7", "lport": 51234, "raddr": "10.77.0.5",
                                     "rport": 4444, "pid": 812, "exe": "/usr/bin/nc", "user": "www-data"}
    assert f.details["feature"] == feature
    assert not EMPTY_SLOT.search(f.explanation), f.explanation


def test_inventory_socket_details_survive_and_the_engine_store_stays_json() -> None:
    hs = HostState("h", "ami-web", "web")
    o = hs.apply(_event(Kind.NET_INVENTORY, "h", 1, 1, {"items": [NC, {**NC, "pid": 999, "lport": 51235}]}))
    assert o is not None
    (seen,) = [f for f in o.added if f.startswith("dest:")]
    assert o.details[seen]["pid"] == 812  # the first socket of the feature names it
    opened = hs.apply(_event(Kind.NET_OPEN, "h", 2, 2, {**NC, "rport": 5555}))
    assert opened is not None and opened.details[opened.added[0]]["rport"] == 5555
    import orjson

    orjson.dumps(hs.to_dict())  # the host's state holds plain features: any JSON encoder takes it
    e = FamilyEngine(config=EngineConfig(min_hosts=3))
    join(e, "ami-web", 5)
    e.process(Observation("h", "ami-web", "web", at(5), added=(seen,), first=True, details=o.details))
    orjson.dumps(dict(e.store))  # pending judgements carry the instance as plain JSON


def test_campaign_names_each_new_hosts_connection() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-web", 20, s=-600.0)  # an established image: a young one has no basis for campaigns
    feature = "dest:tcp/4444@10.77.0.0/24"
    for i, pid in ((3, 812), (4, 913)):
        e.process(Observation(f"ami-web-h{i:02d}", "ami-web", "web", at(100 + i),
                              added=(feature,), details={feature: socket_details({**NC, "pid": pid})}))
    fs = findings(advance(e, 110, 400))
    camp = [f for f in fs if f.kind == FindingKind.CAMPAIGN]
    assert camp, fs
    assert "pid 812" in camp[0].explanation and "pid 913" in camp[0].explanation
    assert set(camp[0].details["instances"]) == {"ami-web-h03", "ami-web-h04"}


def _key_entry(comment: str, blob_seed: int) -> tuple[str, str]:
    import base64
    import struct

    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([blob_seed]) * 32
    key = ssh_keys.parse_line(f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}")
    assert key is not None
    return ssh_keys.entry("root", key)


def test_authorized_keys_finding_names_type_fingerprint_and_comment() -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    ok_key, ok_value = _key_entry("ops@bastion", 1)
    bad_key, bad_value = _key_entry("evil@kali \x1b[31m", 2)
    base = (*BASE, "cfg:authorized_keys:root=aaaa", f"cfg:{ok_key}={ok_value}")
    join(e, "ami-app", 10, features=base)
    e.process(Observation("ami-app-h02", "ami-app", "app", at(50),
                          added=("cfg:authorized_keys:root=bbbb", f"cfg:{bad_key}={bad_value}"),
                          removed=("cfg:authorized_keys:root=aaaa", f"cfg:{ok_key}={ok_value}")))
    fs = findings(advance(e, 60, 400))
    drift = [f for f in fs if f.kind == FindingKind.CONFIG_DRIFT]
    assert len(drift) == 1, [f.subject for f in fs]  # one finding for the user's keys, not one per key entry
    f = drift[0]
    fp = bad_key.rsplit(":", 2)[-2] + ":" + bad_key.rsplit(":", 1)[-1]
    assert f"ssh-ed25519 {fp} (comment 'evil@kali \\x1b[31m')" in f.explanation
    assert "is missing" in f.explanation and ok_key.split(":", 2)[-1] in f.explanation
    assert f.details["keys_added"] == [{"user": "root", "fingerprint": fp, "type": "ssh-ed25519",
                                        "comment": "evil@kali \\x1b[31m"}]
    assert "\x1b" not in f.explanation
    assert not EMPTY_SLOT.search(f.explanation), f.explanation


# values never contain the punctuation an empty slot is recognised by (a user named ")" is not an empty slot)
words = st.text(st.characters(blacklist_characters=",;:()'\"."), max_size=12)
sock_values = st.one_of(st.none(), st.just(""), st.just(0), st.integers(-5, 70000), words,
                        st.sampled_from(["/usr/bin/nc", "www-data", " ", "\x1b[2J"]))
addresses = st.one_of(sock_values, st.sampled_from(["10.77.0.5", "::1", "0.0.0.0", "fe80::1"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={k: addresses if k in ("laddr", "raddr") else sock_values for k in
                                           ("proto", "laddr", "lport", "raddr", "rport", "pid", "exe", "user")}),
       st.sampled_from(["dest:tcp/4444@10.77.0.0/24", "listen:tcp/4444@any|/usr/bin/nc", "listen:udp/53@any|"]))
def test_no_empty_slots_whatever_is_missing(sock: dict[str, Any], feature: str) -> None:
    details = socket_details(sock)
    text = describe_instance(feature, details)
    assert not EMPTY_SLOT.search(text), (sock, text)
    assert not re.search("[\x00-\x1f\x7f]", text)
    for label in ("pid", "user"):  # a part that is missing is left out, label and all
        if label not in details and not any(label in str(v) for v in details.values()):
            assert f"{label} " not in text, (sock, text)


@settings(max_examples=150, deadline=None)
@given(words, words, words)
def test_no_empty_slots_in_feature_phrases(exe: str, cmd: str, user: str) -> None:
    exe, cmd, user = (x.replace("|", "").replace(">", "").strip() for x in (exe, cmd, user))
    for feature in (f"proc:{exe}|{cmd}|{user}", f"pc:{exe}>{cmd}", f"pc:>{exe}"):
        text = describe(feature)
        assert not re.search(r"\(command line ''\)|run as\s+\(|run as\s*$|started by\s*$", text), text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(max_size=50), st.integers(0, 255)), min_size=1, max_size=3))
def test_authorized_key_findings_never_show_empty_slots(keys: list[tuple[str, int]]) -> None:
    e = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    join(e, "ami-app", 6, features=(*BASE, "cfg:authorized_keys:root=aaaa"))
    added = ["cfg:authorized_keys:root=bbbb"]
    for comment, seed in keys:
        k, v = _key_entry(comment, seed)
        added.append(f"cfg:{k}={v}")
    e.process(Observation("ami-app-h02", "ami-app", "app", at(50), added=tuple(added),
                          removed=("cfg:authorized_keys:root=aaaa",)))
    for f in findings(advance(e, 60, 400, step=60)):
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e]", f.explanation)
        text = f.explanation  # the template around the comments (free text) never has an empty slot
        for key in f.details.get("keys_added", []):
            if "comment" in key:
                assert quoted(key["comment"]) in f.explanation
                text = text.replace(quoted(key["comment"]), "'c'")
        assert not EMPTY_SLOT.search(text), f.explanation
