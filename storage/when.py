"""Reading times typed on the command line: ISO-8601 (a time without zone is UTC), a date, `now`, or
a relative time such as `-2h`, `-90m`, `-7d`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_REL = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    t = text.strip()
    if t.lower() == "now":
        return now
    m = _REL.match(t)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        value = datetime.fromisoformat(t.replace(" ", "T", 1) if len(t) > 10 else t)
    except ValueError as e:
        raise ValueError(f"cannot read time {text!r}: use ISO-8601 (2026-03-01T12:00:00Z), a date "
                         "(2026-03-01), 'now' or a relative time like -2h / -7d") from e
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def sql_time(t: datetime) -> str:
    """The text form a DateTime64(6, 'UTC') parameter accepts."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
