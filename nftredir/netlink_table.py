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
import _socket  # not socket: its enums, selectors and array cost ~1.5 ms of every apply
import struct
from typing import NamedTuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
NFTA_TABLE_FLAGS = 2
NFTA_TABLE_USERDATA = 6
NFT_MSG_GETOBJ = 19
NFTA_OBJ_TABLE = 1
NFTA_OBJ_NAME = 2
NFTA_OBJ_TYPE = 3
NFT_OBJECT_COUNTER = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
UDATA_COMMENT = 0
UDATA_NFTVER = 1
UDATA_NFTBLD = 2
OWNER = 2  # NFT_TABLE_F_OWNER
# NFT_TABLE_F_*, named as nft prints them; `persist` (Linux 6.9) is newer than nft 1.0.6.
FLAG_NAMES = {1: "dormant", OWNER: "owner", 4: "persist"}
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


def _attribute(kind: int, value: bytes) -> bytes:
    attribute = struct.pack("=HH", 4 + len(value), kind) + value
    return attribute + b"\0" * (-len(attribute) % 4)


def _query(message: int, family: str, attributes: bytes, timeout: float) -> dict[int, bytes]:
    """One NFT_MSG_GET* request for one object: the attributes of the object the kernel answers
    with. Raises FileNotFoundError when there is no such object, PermissionError without
    CAP_NET_ADMIN."""
    body = struct.pack("=BBH", FAMILIES[family], 0, 0) + attributes  # struct nfgenmsg
    header = struct.pack("=IHHII", 16 + len(body), NFNL_SUBSYS_NFTABLES << 8 | message, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(timeout)
        sock.send(header + body)
        return _answer(sock)
    finally:
        sock.close()


def _answer(sock: _socket.socket) -> dict[int, bytes]:
    """The attributes of the object in the kernel's reply to one request, up to its ACK."""
    found: dict[int, bytes] = {}
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            payload = data[offset + 16 : offset + length]
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", payload)
                if code == 0:
                    return found
                if -code == errno.ENOENT:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
                raise OSError(-code, os.strerror(-code))
            if kind == NLMSG_DONE:
                return found
            if kind >> 8 == NFNL_SUBSYS_NFTABLES:
                found = _attributes(payload[4:])
            if length < 16:
                return found
            offset += (length + 3) & ~3


def read_table(family: str, name: str, timeout: float = 5.0) -> Table:
    """Table `family name` of this namespace, as the kernel holds it.

    Raises FileNotFoundError when there is no such table, PermissionError without CAP_NET_ADMIN.
    """
    found = _query(NFT_MSG_GETTABLE, family, _attribute(NFTA_TABLE_NAME, name.encode() + b"\0"), timeout)
    flags = found.get(NFTA_TABLE_FLAGS, b"\0\0\0\0")
    return Table(int.from_bytes(flags[:4], "big"), found.get(NFTA_TABLE_USERDATA, b""))


def has_counter(family: str, table: str, name: str, timeout: float = 5.0) -> bool:
    """Whether table `family table` holds the named counter `name`. Raises as read_table."""
    attributes = (_attribute(NFTA_OBJ_TABLE, table.encode() + b"\0") + _attribute(NFTA_OBJ_NAME, name.encode() + b"\0")
                  + _attribute(NFTA_OBJ_TYPE, struct.pack(">I", NFT_OBJECT_COUNTER)))
    try:
        return bool(_query(NFT_MSG_GETOBJ, family, attributes, timeout))
    except FileNotFoundError:
        return False


def table_stamp(family: str, name: str, timeout: float = 5.0) -> Stamp | None:
    """The stamp of table `family name` in this namespace; None when the table has none.

    Raises FileNotFoundError when there is no such table, PermissionError without CAP_NET_ADMIN.
    """
    return read_table(family, name, timeout).stamp
