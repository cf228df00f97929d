"""The attacker's side, run in the lab's attacker namespace only: a listener that accepts reverse shells
and holds them open without ever sending a command, and an HTTP server for the dropper's script.

    python -m herdwatch.lab.workloads.attacker LISTEN_PORT HTTP_PORT
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading

PAYLOAD = b"#!/bin/sh\n: > /tmp/.lab-dropped\nsleep 0.2\n"
"""What the dropper fetches and runs: it leaves a file and ends after about 200 ms."""


def hold_connections(port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    held = []
    while True:
        conn, _ = srv.accept()
        held.append(conn)  # kept open, nothing is sent: the shell on the other end just waits


class Payload(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    listen_port, http_port = int(argv[0]), int(argv[1])
    threading.Thread(target=hold_connections, args=(listen_port,), daemon=True).start()
    http.server.ThreadingHTTPServer(("0.0.0.0", http_port), Payload).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
