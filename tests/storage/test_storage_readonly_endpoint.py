"""The query endpoint: read-only whatever the request says, and it cannot be exhausted by a client.

A real endpoint on 127.0.0.1 over a store of the test's own. Every loop here is bounded and stops by itself.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract.settings import StorageSettings
from storage import signals
from storage.client import connect
from storage.endpoint import QueryEndpoint
from storage.query_client import EndpointQueryClient, QueryError
from storage.readonly import UnsafeQuery
from storage.schema import migrate

pytestmark = pytest.mark.integration

READ_TIMEOUT = 1.0
SECRET = "herdwatch-endpoint-secret"


@pytest.fixture
def served(storage_settings: StorageSettings, tmp_path: Path) -> Iterator[tuple[QueryEndpoint, Any, Path]]:
    client = connect(storage_settings)
    migrate(client)
    client.command("CREATE TABLE canary (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.command("INSERT INTO canary VALUES (1)")
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    (tmp_path / "out").mkdir()
    settings = storage_settings.model_copy(update={"var_dir": tmp_path / "var"})
    endpoint = QueryEndpoint(client, settings, workers=2, queued=1, read_timeout=READ_TIMEOUT,
                             write_timeout=5.0, max_body=4096).start()
    try:
        yield endpoint, client, tmp_path
    finally:
        endpoint.stop()


def _unchanged(client: Any, tmp_path: Path) -> None:
    assert client.query("SELECT count() FROM canary").result_rows[0][0] == 1
    assert list((tmp_path / "out").iterdir()) == []


def _port(endpoint: QueryEndpoint) -> int:
    return int(endpoint.url.rsplit(":", 1)[1])


def _raw(endpoint: QueryEndpoint, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send a hand-made request; the status and JSON answer (status 0 if the server closed without one)."""
    with socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    if not data:
        return 0, {}
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b"{}"
    return status, json.loads(payload or b"{}")


def _post(endpoint: QueryEndpoint, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(req).encode()
    return _raw(endpoint, f"POST /query HTTP/1.0\nAuthorization: Bearer {endpoint.token}\n"
                          f"Content-Length: {len(body)}\n", body)


def test_readonly_flag_in_the_body_is_ignored(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, client, tmp = served
    attacks = ["DROP TABLE canary", "INSERT INTO canary VALUES (9)",
               "CREATE TABLE made_by_attacker (a UInt8) ENGINE = Memory",
               "SELECT 1) # '\n; DROP TABLE canary; SELECT * FROM (SELECT 1 # '",
               f"SELECT $$'$$ AS y) ; SELECT * FROM file($${tmp}/secret.txt$$, $$LineAsString$$); SELECT * FROM "
               "(SELECT $$'$$",
               f"SELECT file('{tmp}/secret.txt')",
               f"INSERT INTO FUNCTION file('{tmp}/out/f.csv', 'CSV', 'a UInt8') SELECT 1",
               f"SELECT 1 INTO OUTFILE '{tmp}/out/g.txt'"]
    for sql in attacks:
        for flag in (False, 0, "false", None):
            status, answer = _post(endpoint, {"sql": sql, "readonly": flag})
            assert status == 400 and answer.get("refused") is True, (sql, flag, answer)
            assert SECRET not in json.dumps(answer)
            _unchanged(client, tmp)
    remote = EndpointQueryClient(endpoint.url, endpoint.token)
    with pytest.raises(UnsafeQuery, match="only read statements"):
        remote.query("DROP TABLE canary")
    assert remote.query("SELECT count() AS n FROM canary").rows == [[1]]
    assert "canary" in {r[0] for r in remote.query("SHOW TABLES").rows}
    _unchanged(client, tmp)


@pytest.mark.parametrize(("length_header", "status"), [
    ("", 411),
    ("Content-Length: -1\n", 400),
    ("Content-Length: abc\n", 400),
    ("Content-Length: 1e3\n", 400),
    ("Content-Length: 4097\n", 413),
    ("Content-Length: 99999999999999999999\n", 413),
    ("Transfer-Encoding: chunked\n", 411),
])
def test_content_length_is_validated(served: tuple[QueryEndpoint, Any, Path], length_header: str,
                                     status: int) -> None:
    endpoint, client, tmp = served
    before = time.monotonic()
    got, answer = _raw(endpoint, f"POST /query HTTP/1.0\nAuthorization: Bearer {endpoint.token}\n{length_header}",
                       b'{"sql": "SELECT 1"}')
    assert got == status and answer["error"], answer
    assert time.monotonic() - before < READ_TIMEOUT  # answered at once, not after waiting for a body
    _unchanged(client, tmp)


def test_a_short_body_is_cut_off(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, _, _ = served
    before = time.monotonic()
    status, _ = _raw(endpoint, f"POST /query HTTP/1.0\nAuthorization: Bearer {endpoint.token}\n"
                               "Content-Length: 100\n", b'{"sql": ', timeout=READ_TIMEOUT * 8)
    assert status in (0, 400)
    assert time.monotonic() - before < READ_TIMEOUT * 4


def test_slowloris_is_cut_off(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, _, _ = served
    timeouts = signals.endpoint_timeout.value()
    header = b"POST /query HTTP/1.0\r\nX-Slow: " + b"a" * 200
    before = time.monotonic()
    cut_off = False
    with socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=5) as s:
        for byte in header:  # one byte every 50 ms: each arrives well within any per-read timeout
            try:
                s.sendall(bytes([byte]))
            except OSError:
                cut_off = True
                break
            time.sleep(0.05)
            if time.monotonic() - before > READ_TIMEOUT * 6:
                break
        if not cut_off:
            try:
                cut_off = s.recv(1024) == b""
            except OSError:
                cut_off = True
    assert cut_off
    assert time.monotonic() - before < READ_TIMEOUT * 6
    assert signals.endpoint_timeout.value() > timeouts


def test_workers_are_bounded_and_the_rest_refused(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, _, _ = served
    busy = signals.endpoint_busy.value()
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=5) for _ in range(3)]
    try:
        for s in idle:  # two workers each hold one; one waits in the queue of one
            s.sendall(b"POST /query HTTP/1.0\r\n")
        time.sleep(0.3)
        refused = [_raw(endpoint, "POST /query HTTP/1.0\n", timeout=5)[0] for _ in range(20)]
        assert refused == [503] * 20
        assert signals.endpoint_busy.value() - busy >= 20
        assert threading.active_count() <= threads_before  # no thread per connection
    finally:
        for s in idle:
            s.close()
    remote = EndpointQueryClient(endpoint.url, endpoint.token, timeout=5)
    deadline = time.monotonic() + READ_TIMEOUT * 5
    while True:  # the idle ones are cut off or closed: the endpoint serves again
        try:
            assert remote.query("SELECT 1 AS one").rows == [[1]]
            break
        except QueryError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_idle_connections_holding_workers_are_released(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, _, _ = served
    idle = [socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=5) for _ in range(3)]
    try:
        time.sleep(READ_TIMEOUT * 2.5)  # the idle ones stay open on our side, but the server let them go
        remote = EndpointQueryClient(endpoint.url, endpoint.token, timeout=5)
        assert remote.query("SELECT 2 AS two").rows == [[2]]
    finally:
        for s in idle:
            s.close()


def test_wrong_token_is_refused_before_the_body(served: tuple[QueryEndpoint, Any, Path]) -> None:
    endpoint, _, _ = served
    status, answer = _raw(endpoint, "POST /query HTTP/1.0\nAuthorization: Bearer wrong\nContent-Length: 5\n")
    assert status == 401 and "token" in answer["error"]
