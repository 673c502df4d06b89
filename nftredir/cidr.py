"""IPv4 CIDRs as two ints: parsing, and merging for an nftables interval set.

A mesh's exclusion list can hold tens of thousands of CIDRs. As `ipaddress.IPv4Network`
objects they cost ~8 µs and ~400 bytes each to build, and sorting or collapsing them costs
seconds at 50,000; as two ints the whole path stays well under the cost of FSM's own
iptables-restore for the same list.
"""

from __future__ import annotations

import re
from socket import inet_aton
from collections.abc import Iterable, Iterator
from typing import NamedTuple

_CIDR_RE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})/(\d{1,3})", re.ASCII)
# The same shape, valid: octets 0-255 without leading zeros, a length 0-32. One match of this
# is the fast path; _CIDR_RE only serves to say what is wrong with a value that fails it.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_VALID_RE = re.compile(rf"({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})/(3[0-2]|[12]?[0-9])")
_ALL = 0xFFFFFFFF


def dotted(value: int) -> str:
    """An address as a.b.c.d."""
    return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


class Cidr(NamedTuple):
    """An IPv4 network: its first address as an int, and its prefix length."""

    network: int
    prefixlen: int

    @property
    def last(self) -> int:
        return self.network | (_ALL >> self.prefixlen)

    @property
    def address(self) -> str:
        return dotted(self.network)

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"


def parse(text: str) -> Cidr:
    """`a.b.c.d/len` as a Cidr, host bits masked off (as iptables does with `-d 10.0.0.1/8`).

    Raises ValueError saying what is wrong.
    """
    valid = _VALID_RE.fullmatch(text)
    if valid is not None:
        address, length = valid.groups()
        prefixlen = int(length)
        return Cidr(int.from_bytes(inet_aton(address), "big") & ~(_ALL >> prefixlen) & _ALL, prefixlen)
    match = _CIDR_RE.fullmatch(text)
    if match is None:
        raise ValueError("expected a.b.c.d/len, such as 10.0.0.0/8")
    *octets, length = match.groups()
    for number in (*octets, length):  # one rule for every number: no leading zeros
        if len(number) > 1 and number[0] == "0":
            raise ValueError(f"leading zeros are not permitted in {number!r}")
    for octet in octets:
        if int(octet) > 255:
            raise ValueError(f"octet {octet} is over 255")
    raise ValueError(f"prefix length {int(length)} is over 32")


def split(first: int, last: int) -> Iterator[Cidr]:
    """The fewest CIDRs covering exactly first..last: the largest aligned block each time."""
    while first <= last:
        size = first & -first if first else 1 << 32  # the largest block aligned at `first`
        while first + size - 1 > last:
            size >>= 1
        yield Cidr(first, 33 - size.bit_length())
        first += size


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Inclusive [first, last] intervals, overlapping and adjacent ones joined, in order."""
    merged: list[list[int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def merge(cidrs: Iterable[Cidr]) -> list[Cidr]:
    """The same addresses as the fewest CIDRs, in address order.

    nft 1.0.6 refuses overlapping intervals in a set even with auto-merge, so overlapping and
    adjacent ranges are merged here, deterministically; what they match does not change.
    """
    given = {(c.network, c.last): c for c in cidrs}  # a range that merged with nothing stays as given
    return [
        c for first, last in merge_intervals(given)
        for c in ((given[(first, last)],) if (first, last) in given else split(first, last))
    ]
