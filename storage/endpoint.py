"""The local query endpoint of the process that owns an embedded store.

Only one process may open an embedded (chDB) store; the sink owns it while the pipeline runs. This small
HTTP server on 127.0.0.1 lets other local processes (`herdwatch sql`, the demo) query through it. Every
request needs the bearer token written, with the URL, to a 0600 file under the var dir
(`query-endpoint.<database>.json`); the file is removed when the owner stops.

POST /query  {"sql": "...", "params": {...}}  ->  200 {"columns", "types", "rows"}
                                              ->  400 {"error", "refused": true} when the SQL is refused
Every query runs through storage.readonly (one read statement, readonly = 1 set here); nothing in the
request can ask for more (a "readonly" field, if sent, is ignored).

It cannot be exhausted by a client: `workers` threads serve connections and at most `queued` more wait;
any further connection gets 503 at once. A request must arrive whole (request line, headers, body) within
`read_timeout` seconds of its turn, however slowly it trickles, and its answer must be taken within
`write_timeout`; a watchdog closes connections that overrun. The body needs a valid Content-Length of at
most `max_body` bytes (chunked bodies are refused), so the server never reads without a limit.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from contract.settings import StorageSettings
from storage import signals
from storage.query_client import DirectQueryClient, QueryError, endpoint_file
from storage.readonly import UnsafeQuery

log = logging.getLogger("herdwatch.sink.endpoint")
MAX_BODY = 1024 * 1024
WORKERS = 4
QUEUED = 8
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 60.0
_BUSY_BODY = b'{"error": "the query endpoint is busy: retry in a moment", "busy": true}'
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode() + _BUSY_BODY)


class _Watchdog:
    """Closes connections whose deadline passed (a slow sender or a slow reader), checked every tick."""

    def __init__(self, tick: float = 0.1) -> None:
        self.tick = tick
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-endpoint-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[sock] = time.monotonic() + seconds

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                late = [s for s, deadline in self._deadlines.items() if deadline <= now]
                for s in late:
                    del self._deadlines[s]
            for s in late:
                signals.endpoint_timeout.emit()
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)  # the handler's blocked read or write returns at once


class _BoundedServer(HTTPServer):
    """An HTTP server with a fixed number of worker threads and a bounded queue of waiting connections."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int,
                 queued: int) -> None:
        super().__init__(address, handler)
        # one slot per connection being served or waiting; the queue itself never holds more than the slots
        self._slots = threading.BoundedSemaphore(workers + queued)
        self._waiting: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue()
        self._workers = [threading.Thread(target=self._work, name=f"query-endpoint-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        # hand over only if a worker is idle or the bounded queue has room; otherwise 503 now
        if self._slots.acquire(blocking=False):
            self._waiting.put((request, client_address))
        else:
            signals.endpoint_busy.emit()
            try:
                request.settimeout(0.5)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._waiting.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("query endpoint: connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            self._waiting.put(None)


class QueryEndpoint:
    def __init__(self, client: Any, settings: StorageSettings, port: int = 0, *, workers: int = WORKERS,
                 queued: int = QUEUED, read_timeout: float = READ_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 max_body: int = MAX_BODY) -> None:
        if workers < 1 or queued < 0:
            raise ValueError(f"query endpoint needs workers >= 1 and queued >= 0 (got {workers}, {queued})")
        self.queries = DirectQueryClient(client)
        self.settings = settings
        self.token = secrets.token_urlsafe(32)
        self.path = endpoint_file(settings)
        self.watchdog = _Watchdog()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = read_timeout  # each socket operation; the watchdog bounds the whole request

            def setup(self) -> None:
                super().setup()
                endpoint.watchdog.arm(self.connection, read_timeout)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    endpoint.watchdog.disarm(self.connection)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization", "")
                if not hmac.compare_digest(auth.encode(), f"Bearer {endpoint.token}".encode()):
                    return self._send(401, {"error": "missing or wrong token (read it from "
                                                     f"{endpoint.path})"})
                if self.path != "/query":
                    return self._send(404, {"error": "POST /query"})
                body = self._body()
                if body is None:
                    return
                try:
                    req = json.loads(body)
                    sql, params = str(req["sql"]), dict(req.get("params") or {})
                except (ValueError, KeyError, TypeError) as e:
                    signals.endpoint_bad_request.emit(why="json")
                    return self._send(400, {"error": f'bad request: {e}; send {{"sql": "...", "params": {{}}}}'})
                endpoint.watchdog.disarm(self.connection)  # the query's own time is bounded by the engine
                try:
                    result = endpoint.queries.query(sql, params)
                except UnsafeQuery as e:
                    return self._send(400, {"error": str(e), "refused": True})
                except QueryError as e:
                    return self._send(400, {"error": str(e)})
                self._send(200, result.to_json())

            def _body(self) -> bytes | None:
                """The request body, read only up to a validated Content-Length; None after an error reply."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    signals.endpoint_bad_request.emit(why="chunked")
                    self._send(411, {"error": "chunked bodies are refused: send a Content-Length"})
                    return None
                raw = self.headers.get("Content-Length")
                if raw is None:
                    signals.endpoint_bad_request.emit(why="no_length")
                    self._send(411, {"error": "Content-Length is required"})
                    return None
                if not raw.strip().isdigit():
                    signals.endpoint_bad_request.emit(why="bad_length")
                    self._send(400, {"error": f"Content-Length must be a whole number of bytes (got {raw!r})"})
                    return None
                length = int(raw)
                if length > max_body:
                    signals.endpoint_bad_request.emit(why="too_large")
                    self._send(413, {"error": f"request larger than {max_body} bytes"})
                    return None
                body = self.rfile.read(length)
                if len(body) != length:
                    signals.endpoint_bad_request.emit(why="short_body")
                    self._send(400, {"error": f"body ended after {len(body)} of {length} bytes"})
                    return None
                return body

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                endpoint.watchdog.arm(self.connection, write_timeout)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

        self.server = _BoundedServer(("127.0.0.1", port), Handler, workers, queued)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="query-endpoint",
                                        daemon=True)

    def start(self) -> QueryEndpoint:
        self.watchdog.start()
        self._thread.start()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"url": self.url, "token": self.token, "pid": os.getpid(),
                "dsn": self.settings.resolved_dsn(), "database": self.settings.database}
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        log.info("query endpoint on %s (token in %s)", self.url, self.path)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.watchdog.stop()
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass
