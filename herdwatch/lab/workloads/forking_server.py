"""A tiny forking HTTP service: every request is answered by a short-lived forked worker."""

from __future__ import annotations

import socketserver
import sys


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        body = b"ok\n"
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True


def main(argv: list[str]) -> int:
    port = int(argv[0]) if argv else 8080
    with Server(("0.0.0.0", port), Handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
