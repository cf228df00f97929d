"""Printing query results: an aligned table for people, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from storage.query_client import QueryResult

FORMATS = ("table", "json", "csv")


def _cell(value: Any, width: int = 80) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(result: QueryResult, fmt: str = "table", max_width: int = 80) -> str:
    if fmt == "json":
        return json.dumps(result.dicts(), ensure_ascii=False, indent=None if len(result.rows) > 50 else 2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(result.columns)
        for row in result.rows:
            w.writerow([v if isinstance(v, str | int | float) or v is None else json.dumps(v) for v in row])
        return buf.getvalue().rstrip("\n")
    if not result.columns:  # the embedded engine names no columns for an empty result
        return "(0 rows)"
    cells = [[_cell(v, max_width) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.append(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    return "\n".join(lines)
