"""What the namespace's IPv4 routing looks like, read from /proc (no iproute2 needed).

`nftredir validate` picks the destinations it probes from this: an address the pod has a route
to, and the pod's own addresses (which are routed over `lo`, where other rules apply).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from nftredir.cidr import Cidr

_RTF_UP = 0x1
_RTF_REJECT = 0x200  # unreachable, prohibit and blackhole routes


class Route(NamedTuple):
    """One route of the main table: where it leads (as a Cidr) and through which interface."""

    iface: str
    dst: Cidr


def _hex_address(text: str) -> int:
    # /proc prints the big-endian address as a host-order integer: undo that byte order.
    return int.from_bytes(bytes.fromhex(text), sys.byteorder)


def parse_routes(text: str) -> list[Route]:
    """The usable routes in /proc/net/route's text (header line first)."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = int(fields[3], 16)
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        mask = _hex_address(fields[7])
        routes.append(Route(fields[0], Cidr(_hex_address(fields[1]) & mask, bin(mask).count("1"))))
    return routes


def parse_local_addresses(text: str) -> set[int]:
    """The namespace's own IPv4 addresses from /proc/net/fib_trie's text (`/32 host LOCAL`)."""
    addresses: set[int] = set()
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("|--", "+--")):
            last = stripped.split()[1]
        elif last and stripped.startswith("/32 host LOCAL"):
            a, b, c, d = (int(part) for part in last.split("/")[0].split("."))
            addresses.add(a << 24 | b << 16 | c << 8 | d)
    return addresses


def routes(proc: Path = Path("/proc/net")) -> list[Route]:
    return parse_routes((proc / "route").read_text())


def local_addresses(proc: Path = Path("/proc/net")) -> set[int]:
    return parse_local_addresses((proc / "fib_trie").read_text())
