"""The local query endpoint of the process that owns an embedded store.

Only one process may open an embedded (chDB) store; the sink owns it while the pipeline runs. This small
HTTP server on 127.0.0.1 lets other local processes (`herdwatch sql`, the demo) query through it. Every
request needs the bearer token written, with the URL, to a 0600 file under the var dir
(`query-endpoint.<database>.json`); the file is removed when the owner stops.

POST /query  {"sql": "...", "params": {...}, "readonly": true}  ->  {"columns", "types", "rows"}
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from contract.settings import StorageSettings
from storage.query_client import DirectQueryClient, QueryError, endpoint_file
from storage.readonly import UnsafeQuery

log = logging.getLogger("herdwatch.sink.endpoint")
MAX_BODY = 1024 * 1024


class QueryEndpoint:
    def __init__(self, client: Any, settings: StorageSettings, port: int = 0) -> None:
        self.queries = DirectQueryClient(client)
        self.settings = settings
        self.token = secrets.token_urlsafe(32)
        self.path = endpoint_file(settings)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization", "")
                if not hmac.compare_digest(auth.encode(), f"Bearer {endpoint.token}".encode()):
                    return self._send(401, {"error": "missing or wrong token (read it from "
                                                     f"{endpoint.path})"})
                if self.path != "/query":
                    return self._send(404, {"error": "POST /query"})
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._send(413, {"error": f"request larger than {MAX_BODY} bytes"})
                try:
                    req = json.loads(self.rfile.read(length))
                    sql, params = str(req["sql"]), dict(req.get("params") or {})
                    readonly = bool(req.get("readonly", True))
                except (ValueError, KeyError, TypeError) as e:
                    return self._send(400, {"error": f"bad request: {e}"})
                try:
                    result = endpoint.queries.query(sql, params, readonly=readonly)
                except (QueryError, UnsafeQuery) as e:
                    return self._send(400, {"error": str(e)})
                self._send(200, result.to_json())

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="query-endpoint",
                                        daemon=True)

    def start(self) -> QueryEndpoint:
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
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass
