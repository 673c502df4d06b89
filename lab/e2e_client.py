"""The client of lab/e2e.py, run inside a namespace as the app, the sidecar's UID or the world.

`python3 -I e2e_client.py TIMEOUT < connections.json` opens each connection in turn
({"dst", "port", "send"}), sends `send` if given, reads the answer to its end and prints, per
connection, the local address it connected from (what Envoy logs as the downstream remote
address, or the upstream sees as its peer) and the answer, or the error. Standard library only,
like lab/netlab.py's children.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any


def address(sa: tuple[Any, ...]) -> str:
    """host:port, [host]:port for IPv6: as Envoy's access log and lab/netlab.py write them."""
    return f"[{sa[0]}]:{sa[1]}" if ":" in sa[0] else f"{sa[0]}:{sa[1]}"


def connect(dst: str, port: int, send: str | None, timeout: float) -> dict[str, str]:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)  # a hang guard: every answer comes at once
            s.connect((dst, port))
            local = address(s.getsockname())
            if send:
                s.sendall(send.encode())
            data = b""
            while len(data) < 65536 and (chunk := s.recv(4096)):
                data += chunk
        return {"local": local, "reply": data.decode(errors="replace")}
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    timeout = float(sys.argv[1])
    conns = json.load(sys.stdin)
    json.dump([connect(c["dst"], c["port"], c.get("send"), timeout) for c in conns], sys.stdout)


if __name__ == "__main__":
    main()
