"""Findings as OCSF Detection Finding events (OCSF 1.x, class 2004 in category 2 "Findings").

One function, `detection_finding`, maps a herdwatch Finding (its dict form, as on the anomalies topic) to
the event; docs/ocsf.md lists the mapping field by field. The result is plain JSON-able data, so any SIEM
that reads OCSF (Amazon Security Lake, Splunk, ...) takes it as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

OCSF_VERSION = "1.3.0"
CATEGORY_UID = 2  # Findings
CATEGORY_NAME = "Findings"
CLASS_UID = 2004  # Detection Finding
CLASS_NAME = "Detection Finding"
ACTIVITY_CREATE = 1
"""activity_id 1 Create: a new finding (herdwatch never updates or closes one; 2 Update, 3 Close exist)."""
STATUS_NEW = 1
"""status_id 1 New (0 Unknown, 2 In Progress, 3 Suppressed, 4 Resolved, 99 Other)."""
SEVERITY_IDS = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
"""herdwatch severity -> OCSF severity_id (0 Unknown, 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical,
6 Fatal, 99 Other)."""
SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
PRODUCT = {"name": "herdwatch", "vendor_name": "herdwatch", "uid": "herdwatch"}


def type_uid(activity_id: int = ACTIVITY_CREATE) -> int:
    """OCSF: type_uid = class_uid * 100 + activity_id."""
    return CLASS_UID * 100 + activity_id


def _epoch_ms(value: Any) -> int:
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


@cache
def herdwatch_version() -> str:
    try:
        return metadata.version("herdwatch")
    except metadata.PackageNotFoundError:
        return "0"


def detection_finding(f: dict[str, Any], product_version: str | None = None) -> dict[str, Any]:
    """The OCSF Detection Finding for one finding dict (Finding.to_dict())."""
    product_version = product_version or herdwatch_version()
    severity = str(f.get("severity", "")).lower()
    severity_id = SEVERITY_IDS.get(severity, 0)
    time_ms = _epoch_ms(f["time"])
    kind = str(f.get("kind", "unknown"))
    host = str(f.get("host_id", ""))
    image = str(f.get("image_id", ""))
    family = str(f.get("image_family", ""))
    subject = str(f.get("subject", ""))
    score = float(f.get("score", 0.0))
    explanation = str(f.get("explanation", ""))
    return {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": CATEGORY_NAME,
        "class_uid": CLASS_UID,
        "class_name": CLASS_NAME,
        "type_uid": type_uid(),
        "type_name": f"{CLASS_NAME}: Create",
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES.get(severity_id, "Unknown"),
        "status_id": STATUS_NEW,
        "status": "New",
        "time": time_ms,
        "message": explanation,
        "confidence_score": round(score * 100),
        "is_alert": severity_id >= SEVERITY_IDS["medium"],
        "metadata": {
            "version": OCSF_VERSION,
            "product": {**PRODUCT, "version": product_version},
            "uid": str(f.get("finding_id", "")),
            "event_code": kind,
        },
        "finding_info": {
            "uid": str(f.get("finding_id", "")),
            "title": f"{kind.replace('_', ' ')}: {subject}" if subject else kind.replace("_", " "),
            "desc": explanation,
            "types": [kind],
            "created_time": time_ms,
            "first_seen_time": time_ms,
            "last_seen_time": time_ms,
            "analytic": {"name": kind, "type_id": 3, "type": "Statistical", "uid": kind},
        },
        "device": {"hostname": host, "uid": host, "type_id": 6, "type": "Virtual",
                   "image": {"uid": image, "name": family}},
        "resources": [{"uid": host, "type": "host", "labels": [f"image:{image}", f"family:{family}"]}],
        "unmapped": {"herdwatch": {"kind": kind, "subject": subject, "score": score,
                                   "image_family": family, "details": f.get("details", {})}},
    }
