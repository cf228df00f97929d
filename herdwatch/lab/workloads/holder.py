"""A new listening socket that accepts nothing (the "new listener" attack): python -m ... PORT"""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> int:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(argv[0])))
    srv.listen(1)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
