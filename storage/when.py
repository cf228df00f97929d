"""Reading times typed on the command line, the same way for every command and option.

Accepted:
- ISO-8601: `2026-03-01T12:00:00Z`, `2026-03-01 12:00`, a date `2026-03-01` (a time without zone is UTC);
- epoch seconds `1772366400` (or `1772366400.5`), epoch milliseconds `1772366400000`;
- `now`, `today` (midnight UTC), `yesterday` (midnight UTC the day before);
- relative: `-30d`, `-2h`, `-90m`, `-45s`, `-1w`, `30d ago`, `2h ago`, `2 hours ago`, `90 minutes ago`.

A leading minus is read as an option by argparse (`--since -30d`); herdwatch.cli joins such a value to its
option before parsing, so it works for every time option of every command.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds", "seconds": "seconds",
          "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
          "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
          "d": "days", "day": "days", "days": "days",
          "w": "weeks", "week": "weeks", "weeks": "weeks"}
_NUM = r"(\d+(?:\.\d+)?)\s*([a-z]+)"
_MINUS = re.compile(rf"^-\s*{_NUM}$")
_AGO = re.compile(rf"^{_NUM}\s+ago$")
_EPOCH = re.compile(r"^\d{9,13}(?:\.\d+)?$")
EPOCH_MS_FROM = 100_000_000_000
"""A bare number at least this large is epoch milliseconds (seconds would be the year 5138)."""
RELATIVE = re.compile(r"^-\d+(?:\.\d+)?[a-zA-Z]+$")
"""What a relative time with a leading minus looks like (for herdwatch.cli)."""
HELP = ("ISO-8601 (2026-03-01T12:00:00Z; UTC if no zone), a date, epoch seconds or ms, now, today, yesterday, "
        "or relative: -30d, -2h, '2h ago'")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    t = text.strip().lower()
    if t == "now":
        return now
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if t == "today":
        return midnight
    if t == "yesterday":
        return midnight - timedelta(days=1)
    m = _MINUS.match(t) or _AGO.match(t)
    if m:
        unit = _UNITS.get(m.group(2))
        if unit is None:
            raise ValueError(f"cannot read time {text!r}: unknown unit {m.group(2)!r}; use s, m, h, d or w "
                             "(e.g. -30d, 2h ago)")
        return now - timedelta(**{unit: float(m.group(1))})
    if _EPOCH.match(t):
        value = float(t)
        return datetime.fromtimestamp(value / 1000 if value >= EPOCH_MS_FROM else value, UTC)
    try:
        iso = text.strip()
        value_dt = datetime.fromisoformat(iso.replace(" ", "T", 1) if len(iso) > 10 else iso)
    except ValueError as e:
        raise ValueError(f"cannot read time {text!r}: use ISO-8601 (2026-03-01T12:00:00Z), a date "
                         "(2026-03-01), epoch seconds, 'now', 'yesterday' or a relative time like -2h, -7d, "
                         "'30d ago'") from e
    return value_dt if value_dt.tzinfo else value_dt.replace(tzinfo=UTC)


def sql_time(t: datetime) -> str:
    """The text form a DateTime64(6, 'UTC') parameter accepts."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
