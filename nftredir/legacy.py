"""Legacy xtables (ip_tables, not nf_tables) in this namespace, without any iptables binary.

The kernel lists the legacy tables a namespace has in /proc/net/ip_tables_names (and
ip6_tables_names, arp_tables_names), which exist only while the legacy modules are loaded.
Whether a table holds rules is answered by IPT_SO_GET_INFO, the getsockopt iptables-legacy
itself starts with: an empty table has one entry per built-in chain (its policy) plus the
final error entry; any rule or user chain adds more. IPT_SO_GET_ENTRIES then gives the entries
themselves, from which come the user chains' names (FSM_PROXY_INBOUND, ...) and the targets
used (REDIRECT, ...). Only listed tables are asked about, so nothing here makes the kernel load
a legacy module.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from pathlib import Path
from typing import NamedTuple

SO_GET_INFO = 64  # IPT_SO_GET_INFO == IP6T_SO_GET_INFO (IPT_BASE_CTL)
SO_GET_ENTRIES = 65  # IPT_SO_GET_ENTRIES == IP6T_SO_GET_ENTRIES
_GETINFO = struct.Struct("=32sI5I5III")  # struct ipt_getinfo
_GET_ENTRIES_HEADER = 40  # struct ipt_get_entries: name[32], size, then the 8-aligned entries
# Where target_offset and next_offset (two u16) sit in struct ipt_entry / ip6t_entry: after
# struct ipt_ip (84 bytes) or ip6t_ip6 (136) and the nfcache word.
_OFFSETS_AT = {"ip": 88, "ip6": 140}
_TARGET_HEADER = 32  # struct xt_entry_target: target_size, name[29], revision; then its data
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
    chains: tuple[str, ...] = ()  # its user-defined chains
    targets: tuple[str, ...] = ()  # the targets its rules use (REDIRECT, DNAT, ...), sorted


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


def parse_entries(family: str, blob: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(user chains, targets used) from the entries IPT_SO_GET_ENTRIES returned.

    A user chain starts with an entry whose target is ERROR with the chain's name as its data;
    the table ends with an ERROR entry named "ERROR". Jumps and verdicts have an empty name.
    """
    chains: list[str] = []
    targets: set[str] = set()
    offset = 0
    while offset + _OFFSETS_AT[family] + 4 <= len(blob):
        target_offset, next_offset = struct.unpack_from("=HH", blob, offset + _OFFSETS_AT[family])
        if next_offset == 0:
            break
        at = offset + target_offset
        target = blob[at + 2 : at + 31].split(b"\0")[0].decode("ascii", "replace")
        if target == "ERROR":
            chain = blob[at + _TARGET_HEADER : at + _TARGET_HEADER + 30].split(b"\0")[0].decode("ascii", "replace")
            if chain != "ERROR":
                chains.append(chain)
        elif target:
            targets.add(target)
        offset += next_offset
    return tuple(chains), tuple(sorted(targets))


def _getsockopt(family: str, option: int, buffer: ctypes.Array) -> bytes:
    _, sock_family, level = KINDS[family]
    libc = ctypes.CDLL(None, use_errno=True)
    size = ctypes.c_uint(len(buffer))
    with socket.socket(sock_family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        if libc.getsockopt(sock.fileno(), level, option, buffer, ctypes.byref(size)) != 0:
            raise OSError(ctypes.get_errno(), f"getsockopt {option} on legacy table {family}")
    return buffer.raw


def _get_info(family: str, name: str) -> bytes:
    return _getsockopt(family, SO_GET_INFO, ctypes.create_string_buffer(name.encode(), _GETINFO.size))


def _get_entries(family: str, name: str, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(_GET_ENTRIES_HEADER + size)
    struct.pack_into("=32sI", buffer, 0, name.encode(), size)
    return _getsockopt(family, SO_GET_ENTRIES, buffer)[_GET_ENTRIES_HEADER:]


def tables(proc: Path = Path("/proc/net")) -> list[LegacyTable]:
    """Every legacy table of the namespace, with how many rules it holds when that can be read."""
    result = []
    for family, names in table_names(proc).items():
        for name in names:
            table = LegacyTable(family, name, None)
            if KINDS[family][1] is not None:
                try:
                    info = _get_info(family, name)
                    size = _GETINFO.unpack(info)[-1]
                    table = LegacyTable(family, name, extra_entries(info), *parse_entries(family, _get_entries(family, name, size)))
                except OSError:  # no CAP_NET_ADMIN, or the table changed between the two calls
                    pass
            result.append(table)
    return result
