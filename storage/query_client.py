"""Asking the store questions from any local process: `open_query_client(settings).query(sql, params)`.

- Server DSN (http(s)://...): talks to the ClickHouse server directly.
- Embedded DSN (chdb://...): only one process may open the store. If a sink owns it, its query endpoint
  (127.0.0.1, token in a 0600 file under the var dir) answers; otherwise the store is opened here.

Results are plain JSON-able values either way (times as ISO-8601 UTC text), so callers cannot tell which
path answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from contract.settings import StorageSettings
from storage.readonly import UnsafeQuery, run_read_only


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows}


class QueryError(RuntimeError):
    pass


class QueryClient(Protocol):
    """Runs one read statement (storage.readonly decides what that is); there is no way to ask for writes."""

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        ...

    def close(self) -> None: ...


def plain(value: Any) -> Any:
    """A JSON-able form of a ClickHouse value (naive datetimes from the engine are UTC)."""
    if isinstance(value, datetime):
        t = value if value.tzinfo else value.replace(tzinfo=UTC)
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    return value


class DirectQueryClient:
    """Runs read statements on a clickhouse-connect client (embedded engine in this process, or a server).

    Every query goes through storage.readonly.run_read_only: refused ones raise UnsafeQuery before anything
    runs; engine errors while running raise QueryError.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        try:
            res = run_read_only(self.client, sql, params)
        except UnsafeQuery:
            raise
        except Exception as e:
            raise QueryError(_short(e)) from e
        return QueryResult(list(res.column_names), [t.name for t in res.column_types],
                           [[plain(v) for v in row] for row in res.result_rows])

    def close(self) -> None:
        pass


class EndpointQueryClient:
    """Sends queries to the query endpoint of the sink process that owns the embedded store."""

    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        body = json.dumps({"sql": sql, "params": params or {}}).encode()
        req = urllib.request.Request(f"{self.url}/query", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read())
            except ValueError:
                answer = {}
            if answer.get("refused"):
                raise UnsafeQuery(answer["error"]) from e
            raise QueryError(answer.get("error") or str(e)) from e
        except urllib.error.URLError as e:
            raise QueryError(f"the sink's query endpoint at {self.url} did not answer: {e.reason}") from e
        except OSError as e:  # reset or timed out mid-answer
            raise QueryError(f"the sink's query endpoint at {self.url} broke off: {e}") from e
        return QueryResult(data["columns"], data["types"], data["rows"])

    def close(self) -> None:
        pass


def _short(e: Exception) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(e).__name__


def endpoint_file(settings: StorageSettings) -> Path:
    return settings.var_dir / f"query-endpoint.{settings.database}.json"


def read_endpoint(settings: StorageSettings) -> dict[str, Any] | None:
    """The running owner's endpoint description, or None if no live owner serves this store."""
    path = endpoint_file(settings)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("dsn") != settings.resolved_dsn() or info.get("database") != settings.database:
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None  # the owner died without cleaning up
    return info


def open_query_client(settings: StorageSettings | None = None, *, prefer_endpoint: bool = True) -> QueryClient:
    """A query client for this store: the owner's endpoint if one serves it, else a direct connection."""
    from storage.client import connect, is_embedded
    from storage.schema import migrate

    settings = settings or StorageSettings()
    if is_embedded(settings.resolved_dsn()) and prefer_endpoint:
        info = read_endpoint(settings)
        if info:
            remote = EndpointQueryClient(info["url"], info["token"], timeout=300.0)
            try:
                remote.query("SELECT 1")
                return remote
            except QueryError:  # a stale file whose pid was reused: open the store ourselves
                pass
    client = connect(settings)
    # an empty store answers with empty tables instead of "unknown table"; a read-only server account
    # cannot migrate: query what is there
    with contextlib.suppress(Exception):
        migrate(client)
    return DirectQueryClient(client)
