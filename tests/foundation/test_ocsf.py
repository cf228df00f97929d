"""Every finding herdwatch can produce maps to a valid OCSF 1.x Detection Finding (class 2004).

The check below is written from the OCSF schema (schema.ocsf.io, classes/detection_finding, objects
finding_info, metadata, product, device, analytic): the class's required attributes with their types and enum
values, the required attributes of the objects it embeds, and the rules tying them (type_uid =
class_uid * 100 + activity_id; sibling captions match their ids).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contract.findings import Finding, FindingKind, Severity
from contract.ocsf import detection_finding

INT, STR, OBJ, BOOL, LIST = int, str, dict, bool, list
# attribute -> (type, allowed values or None); requirement "required" in OCSF 1.x
REQUIRED: dict[str, tuple[type, set[Any] | None]] = {
    "activity_id": (INT, {0, 1, 2, 3, 99}),
    "category_uid": (INT, {2}),
    "class_uid": (INT, {2004}),
    "finding_info": (OBJ, None),
    "metadata": (OBJ, None),
    "severity_id": (INT, {0, 1, 2, 3, 4, 5, 6, 99}),
    "time": (INT, None),
    "type_uid": (INT, {200400, 200401, 200402, 200403, 200499}),
}
RECOMMENDED: dict[str, tuple[type, set[Any] | None]] = {
    "status_id": (INT, {0, 1, 2, 3, 4, 99}),
    "message": (STR, None),
    "activity_name": (STR, None),
    "category_name": (STR, {"Findings"}),
    "class_name": (STR, {"Detection Finding"}),
    "type_name": (STR, None),
    "severity": (STR, {"Unknown", "Informational", "Low", "Medium", "High", "Critical", "Fatal", "Other"}),
    "status": (STR, {"Unknown", "New", "In Progress", "Suppressed", "Resolved", "Other"}),
    "device": (OBJ, None),
    "confidence_score": (INT, None),
    "is_alert": (BOOL, None),
    "resources": (LIST, None),
    "unmapped": (OBJ, None),
}
FINDING_INFO = {"uid": STR, "title": STR}
METADATA = {"product": OBJ, "version": STR}
PRODUCT = {"vendor_name": STR, "name": STR, "version": STR}
ANALYTIC = {"type_id": INT}
DEVICE = {"type_id": INT}
SEVERITY_CAPTIONS = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
ACTIVITY_CAPTIONS = {1: "Create", 2: "Update", 3: "Close"}


def problems(event: dict[str, Any]) -> list[str]:
    out = []
    for attrs, required in ((REQUIRED, True), (RECOMMENDED, False)):
        for name, (kind, allowed) in attrs.items():
            if name not in event:
                if required:
                    out.append(f"missing required {name}")
                continue
            value = event[name]
            if not isinstance(value, kind) or (kind is INT and isinstance(value, bool)):
                out.append(f"{name}: {type(value).__name__}, not {kind.__name__}")
            elif allowed is not None and value not in allowed:
                out.append(f"{name}: {value!r} not in {sorted(allowed, key=str)}")

    def need(obj: Any, spec: dict[str, type], where: str) -> None:
        if not isinstance(obj, dict):
            out.append(f"{where} is not an object")
            return
        for name, kind in spec.items():
            if not isinstance(obj.get(name), kind):
                out.append(f"{where}.{name} missing or not {kind.__name__}")

    need(event.get("finding_info"), FINDING_INFO, "finding_info")
    need(event.get("metadata"), METADATA, "metadata")
    need(event.get("metadata", {}).get("product"), PRODUCT, "metadata.product")
    if "analytic" in event.get("finding_info", {}):
        need(event["finding_info"]["analytic"], ANALYTIC, "finding_info.analytic")
        if event["finding_info"]["analytic"]["type_id"] not in {0, 1, 2, 3, 4, 99}:
            out.append("finding_info.analytic.type_id out of range")
    if "device" in event:
        need(event["device"], DEVICE, "device")
    if event.get("type_uid") != event.get("class_uid", 0) * 100 + event.get("activity_id", 0):
        out.append("type_uid is not class_uid * 100 + activity_id")
    if event.get("severity") != SEVERITY_CAPTIONS.get(event.get("severity_id", -1)):
        out.append("severity caption does not match severity_id")
    if event.get("activity_name") != ACTIVITY_CAPTIONS.get(event.get("activity_id", -1)):
        out.append("activity_name does not match activity_id")
    if not 0 <= event.get("confidence_score", 0) <= 100:
        out.append("confidence_score outside 0..100")
    t = event.get("time")
    if isinstance(t, int) and not 10**11 <= t < 10**14:  # from 1973 on in ms; seconds would be ~1.7e9
        out.append("time is not epoch milliseconds")
    return out


findings = st.builds(
    Finding,
    kind=st.sampled_from(list(FindingKind)),
    host_id=st.text(min_size=1, max_size=40),
    image_id=st.text(max_size=30),
    image_family=st.text(max_size=20),
    time=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    score=st.floats(min_value=0.0, max_value=1.0),
    severity=st.sampled_from(list(Severity)),
    subject=st.text(max_size=60),
    explanation=st.text(max_size=200),
    details=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(findings)
def test_every_finding_maps_to_a_valid_detection_finding(f: Finding) -> None:
    event = detection_finding(f.to_dict())
    assert problems(event) == []
    assert event["finding_info"]["uid"] == f.finding_id and event["time"] == int(f.time.timestamp() * 1000)
    assert event["device"]["hostname"] == f.host_id


def test_the_check_itself_catches_broken_events() -> None:
    good = detection_finding(Finding(FindingKind.RARE_FEATURE, "i-1", "ami-1", "web", datetime.now(UTC), 0.9,
                                     Severity.HIGH, "process:/tmp/x", "rare").to_dict())
    assert problems(good) == []
    assert good["severity_id"] == 4 and good["class_uid"] == 2004 and good["type_uid"] == 200401
    for broken in ({**good, "class_uid": 2001}, {k: v for k, v in good.items() if k != "metadata"},
                   {**good, "severity_id": 7}, {**good, "time": "2026-03-01T00:00:00Z"},
                   {**good, "finding_info": {"uid": "x"}}, {**good, "type_uid": 200402}):
        assert problems(broken), broken
