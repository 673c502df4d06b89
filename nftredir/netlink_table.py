"""A table's own attributes read straight from the kernel: one NFT_MSG_GETTABLE over netlink,
only the standard library.

Two readers need it. `Kernel.list_table` takes a table's flags and comment from here: libnftables
1.0.6 prints flags in JSON from freed memory and never prints the comment, and its text listing,
which has both right, fetches every set element first (0.2 s at 50,000 ranges). And doctor
reads the version stamp nftables >= 1.1.5 keeps in table userdata ("table: Embed creating nft
version into userdata"): NFTNL_UDATA_TABLE_NFTVER (type 1: four bytes, major, minor, micro and
the stable release) and NFTNL_UDATA_TABLE_NFTBLD (type 2: the build time, a big-endian 64-bit
count of seconds), which Debian 12's 1.0.6 neither writes nor shows.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
NFTA_TABLE_FLAGS = 2
NFTA_TABLE_USERDATA = 6
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
UDATA_COMMENT = 0
UDATA_NFTVER = 1
UDATA_NFTBLD = 2
# NFT_TABLE_F_*, named as nft prints them; `persist` (Linux 6.9) is newer than nft 1.0.6.
FLAG_NAMES = {1: "dormant", 2: "owner", 4: "persist"}
OWNER = 2
FAMILIES = {"ip": 2, "ip6": 10, "inet": 1, "arp": 3, "bridge": 7, "netdev": 5}  # NFPROTO_*


class Stamp(NamedTuple):
    """The userspace that created a table: (major, minor, micro, stable) and its build time."""

    version: tuple[int, int, int, int]
    built: int | None  # seconds since the epoch, when recorded

    def __str__(self) -> str:
        major, minor, micro, stable = self.version
        return f"{major}.{minor}.{micro}" + (f".{stable}" if stable else "")


class Table(NamedTuple):
    """What the kernel holds for a table itself: NFT_TABLE_F_* flags and the userdata TLVs."""

    flags: int
    userdata: bytes

    @property
    def flag_names(self) -> list[str]:
        """The flags as nft spells them, sorted; an unknown bit as its hex value."""
        return sorted(FLAG_NAMES.get(1 << bit, hex(1 << bit)) for bit in range(32) if self.flags >> bit & 1)

    @property
    def comment(self) -> str | None:
        """The table's comment (userdata type 0, NUL-terminated), or None."""
        text = _userdata_fields(self.userdata).get(UDATA_COMMENT)
        return None if text is None else text.rstrip(b"\0").decode("utf-8", "replace")

    @property
    def stamp(self) -> Stamp | None:
        return parse_userdata(self.userdata)


def _attributes(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]  # without NLA_F_NESTED / byte-order bits
        offset += (length + 3) & ~3
    return found


def _userdata_fields(userdata: bytes) -> dict[int, bytes]:
    """A table's userdata TLVs (u8 type, u8 length, value) by type."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 2 <= len(userdata):
        kind, length = userdata[offset], userdata[offset + 1]
        fields[kind] = userdata[offset + 2 : offset + 2 + length]
        offset += 2 + length
    return fields


def parse_userdata(userdata: bytes) -> Stamp | None:
    """The stamp in a table's userdata TLVs, or None if it has none."""
    fields = _userdata_fields(userdata)
    version = fields.get(UDATA_NFTVER)
    if version is None or len(version) != 4:
        return None
    built = fields.get(UDATA_NFTBLD)
    return Stamp(tuple(version), int.from_bytes(built, "big") if built and len(built) == 8 else None)  # type: ignore[arg-type]


def _request(family: str, name: str) -> bytes:
    attr_name = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(attr_name), NFTA_TABLE_NAME) + attr_name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", FAMILIES[family], 0, 0) + attr  # struct nfgenmsg
    kind = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body


def read_table(family: str, name: str, timeout: float = 5.0) -> Table:
    """Table `family name` of this namespace, as the kernel holds it.

    Raises FileNotFoundError when there is no such table, PermissionError without CAP_NET_ADMIN.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.send(_request(family, name))
        table = Table(0, b"")
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
                payload = data[offset + 16 : offset + length]
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code == 0:
                        return table
                    if -code == errno.ENOENT:
                        raise FileNotFoundError(errno.ENOENT, f"no table {family} {name}")
                    raise OSError(-code, os.strerror(-code))
                if kind == NLMSG_DONE:
                    return table
                if kind >> 8 == NFNL_SUBSYS_NFTABLES:
                    found = _attributes(payload[4:])
                    flags = found.get(NFTA_TABLE_FLAGS, b"\0\0\0\0")
                    table = Table(int.from_bytes(flags[:4], "big"), found.get(NFTA_TABLE_USERDATA, b""))
                if length < 16:
                    return table
                offset += (length + 3) & ~3


def table_stamp(family: str, name: str, timeout: float = 5.0) -> Stamp | None:
    """The stamp of table `family name` in this namespace; None when the table has none.

    Raises FileNotFoundError when there is no such table, PermissionError without CAP_NET_ADMIN.
    """
    return read_table(family, name, timeout).stamp
