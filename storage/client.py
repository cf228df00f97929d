"""The one ClickHouse client factory. chdb:///abs/path opens the embedded engine in this process;
http(s)://... reaches a ClickHouse server. Same clickhouse-connect API either way.

Embedded caveat: a process can open exactly one chDB path in its lifetime, and a path can be open in
one process only. Several databases inside one path are fine (tests use one database each).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from contract.settings import StorageSettings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StorageError(RuntimeError):
    pass


def make_private_dir(path: Path) -> None:
    """Create the embedded store's directory readable by its owner only (0700); tighten an existing one.

    The store holds every host's processes, logins and configuration: other local users must not read it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, 0o700)


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb://")


def connect(settings: StorageSettings | None = None, *, create_database: bool = True) -> Client:
    """A client bound to settings.database (created if missing)."""
    settings = settings or StorageSettings()
    dsn = settings.resolved_dsn()
    db = settings.database
    if not _IDENT.match(db):
        raise StorageError(f"database name {db!r} must be a plain identifier (letters, digits, _)")
    if is_embedded(dsn):
        path = dsn.removeprefix("chdb://")
        if path not in ("", "memory") and not path.startswith("/"):
            raise StorageError(f"embedded DSN needs an absolute path, e.g. chdb:///srv/herdwatch (got {dsn})")
        if path.startswith("/"):
            make_private_dir(Path(path))
    elif urlparse(dsn).scheme not in ("http", "https", "clickhouse", "clickhouses"):
        raise StorageError(f"unsupported storage DSN {dsn!r}: use chdb:///abs/path or http(s)://host:8123")
    try:
        if create_database:
            bootstrap = clickhouse_connect.get_client(dsn=dsn)
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        return clickhouse_connect.get_client(dsn=dsn, database=db)
    except Exception as e:
        hint = ("another process may own this embedded store: stop it, or query through it "
                "(`herdwatch sql` finds a running owner automatically)") if is_embedded(dsn) else \
               "check that the ClickHouse server is up and the DSN's user/password are right"
        raise StorageError(f"cannot open ClickHouse at {dsn}: {e}\n  fix: {hint}") from e
