"""Legacy xtables (ip_tables, not nf_tables) in this namespace, without any iptables binary.

The kernel lists the legacy tables a namespace has in /proc/net/ip_tables_names (and
ip6_tables_names, arp_tables_names), which exist only while the legacy modules are loaded.
Whether a table holds rules is answered by IPT_SO_GET_INFO, the getsockopt iptables-legacy
itself starts with: an empty table has one entry per built-in chain (its policy) plus the
final error entry; any rule or user chain adds more. Only listed tables are asked about, so
nothing here makes the kernel load a legacy module.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from pathlib import Path
from typing import NamedTuple

SO_GET_INFO = 64  # IPT_SO_GET_INFO == IP6T_SO_GET_INFO (IPT_BASE_CTL)
_GETINFO = struct.Struct("=32sI5I5III")  # struct ipt_getinfo
# family -> (names file, socket family, getsockopt level)
KINDS = {
    "ip": ("ip_tables_names", socket.AF_INET, socket.IPPROTO_IP),
    "ip6": ("ip6_tables_names", socket.AF_INET6, socket.IPPROTO_IPV6),
    "arp": ("arp_tables_names", None, None),
}


class LegacyTable(NamedTuple):
    family: str  # "ip", "ip6" or "arp"
    name: str  # "nat", "filter", ...
    rules: int | None  # entries beyond an empty table's; None when it could not be asked


def table_names(proc: Path = Path("/proc/net")) -> dict[str, list[str]]:
    """Legacy tables by family, for the families whose module is loaded."""
    found = {}
    for family, (filename, _, _) in KINDS.items():
        path = proc / filename
        if path.exists():
            found[family] = path.read_text().split()
    return found


def extra_entries(info: bytes) -> int:
    """Entries of a struct ipt_getinfo beyond an empty table's (policies and the error entry)."""
    _name, valid_hooks, *rest = _GETINFO.unpack(info)
    num_entries = rest[10]
    return num_entries - bin(valid_hooks).count("1") - 1


def _get_info(family: str, name: str) -> bytes:
    _, sock_family, level = KINDS[family]
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(name.encode(), _GETINFO.size)
    size = ctypes.c_uint(_GETINFO.size)
    with socket.socket(sock_family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        if libc.getsockopt(sock.fileno(), level, SO_GET_INFO, buffer, ctypes.byref(size)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"IPT_SO_GET_INFO {family} {name}")
    return buffer.raw


def tables(proc: Path = Path("/proc/net")) -> list[LegacyTable]:
    """Every legacy table of the namespace, with how many rules it holds when that can be read."""
    result = []
    for family, names in table_names(proc).items():
        for name in names:
            rules = None
            if KINDS[family][1] is not None:
                try:
                    rules = extra_entries(_get_info(family, name))
                except OSError:  # no CAP_NET_ADMIN, or the table went away
                    rules = None
            result.append(LegacyTable(family, name, rules))
    return result
