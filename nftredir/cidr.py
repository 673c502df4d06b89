"""CIDRs as ints: parsing, and merging for an nftables interval set. IPv4, and IPv6 for dual stack.

A mesh's exclusion list can hold tens of thousands of CIDRs. As `ipaddress.IPv4Network`
objects they cost ~8 µs and ~400 bytes each to build, and sorting or collapsing them costs
seconds at 50,000; as ints the whole path stays well under the cost of FSM's own
iptables-restore for the same list. IPv4 keeps its one-regex fast path; an IPv6 value (it has
a ':') goes through inet_pton.
"""

from __future__ import annotations

import re
import struct
from _socket import AF_INET6, inet_aton, inet_ntoa, inet_ntop, inet_pton  # not socket: its enums, selectors and array cost ~1.5 ms
from collections.abc import Iterable, Iterator, Sequence
from functools import cache, partial
from itertools import repeat
from operator import and_, itemgetter, lt
from typing import NamedTuple

# The patterns are compiled when first used (~1 ms together): a run with no CIDR needs none.
_CIDR = r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})/(\d{1,3})"
# The same shape, valid: octets 0-255 without leading zeros, a length 0-32. One match of this
# is the fast path; _CIDR only serves to say what is wrong with a value that fails it.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_LENGTH = r"3[0-2]|[12]?[0-9]"
_VALID = rf"({_IPV4})/({_LENGTH})"
# A whole list at once, one value per line (parse_many).
_VALID_LINES = rf"(?:{_IPV4}/(?:{_LENGTH})\n)*{_IPV4}/(?:{_LENGTH})"
# IPv6: hex groups, '::', an optional dotted tail (inet_pton judges the address itself); the
# length is decimal without leading zeros.
_V6 = r"([0-9A-Fa-f:.]+)/(0|[1-9][0-9]{0,2})"


@cache
def _pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_ALL = 0xFFFFFFFF
_ALL6 = (1 << 128) - 1
NETMASKS = [~(_ALL >> length) & _ALL for length in range(33)]  # IPv4 network masks by prefix length
_BITS = {4: 32, 6: 128}
_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses


def dotted(value: int) -> str:
    """An address as a.b.c.d."""
    return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def dotted_many(values: Sequence[int]) -> Iterator[str]:
    """Each address as a.b.c.d, as `dotted` writes it, converted in C: packed once, then one
    inet_ntoa per address (a set's tens of thousands, with no Python code run per address)."""
    packed = struct.pack(f">{len(values)}I", *values)
    return map(inet_ntoa, map(itemgetter(0), struct.iter_unpack("4s", packed)))


def colon(value: int) -> str:
    """An IPv6 address in its canonical (RFC 5952) text."""
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


class Cidr(NamedTuple):
    """A network: its first address as an int, its prefix length, and its IP version (4 or 6)."""

    network: int
    prefixlen: int
    version: int = 4

    @property
    def bits(self) -> int:
        """The address width: 32 or 128."""
        return _BITS[self.version]

    @property
    def last(self) -> int:
        return self.network | ((_ALL if self.version == 4 else _ALL6) >> self.prefixlen)

    @property
    def address(self) -> str:
        return dotted(self.network) if self.version == 4 else colon(self.network)

    @property
    def is_host(self) -> bool:
        """One address (/32 or /128): the kernel lists it without its prefix."""
        return self.prefixlen == self.bits

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"


_new_cidr = partial(tuple.__new__, Cidr)  # a Cidr from a tuple; Cidr's own __new__ is a Python function


def parse(text: str) -> Cidr:
    """`a.b.c.d/len` or an IPv6 `addr/len` as a Cidr, host bits masked off (as iptables does with
    `-d 10.0.0.1/8`).

    Raises ValueError saying what is wrong.
    """
    valid = _pattern(_VALID).fullmatch(text)
    if valid is not None:
        address, length = valid.groups()
        prefixlen = int(length)
        return Cidr(int.from_bytes(inet_aton(address), "big") & NETMASKS[prefixlen], prefixlen)
    if ":" in text:
        return parse_ipv6(text)
    match = _pattern(_CIDR, re.ASCII).fullmatch(text)
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


def parse_many(texts: Sequence[str]) -> list[Cidr] | None:
    """Every text parsed as `parse` would, when all are valid IPv4 CIDRs; None otherwise (then
    `parse` each, to find the first bad one and say why).

    The bulk path for a list of tens of thousands: one regex match judges the whole list, and
    the addresses are converted in one struct call, so no value is matched twice.
    """
    joined = "\n".join(texts)
    if not texts or joined.count("\n") != len(texts) - 1 or not _pattern(_VALID_LINES).fullmatch(joined):
        return None
    # Every line is address/length, so splitting at both separators alternates the two. Each step
    # below is one C-level pass (map, zip, slicing): no Python code runs per value.
    fields = joined.replace("/", "\n").split("\n")
    lengths = list(map(int, fields[1::2]))
    addresses = struct.unpack(f">{len(lengths)}I", b"".join(map(inet_aton, fields[0::2])))
    networks = map(and_, addresses, map(NETMASKS.__getitem__, lengths))
    return list(map(_new_cidr, zip(networks, lengths, repeat(4))))


def parse_ipv6(text: str) -> Cidr:
    """An IPv6 `addr/len` as a Cidr. Zone ids (`fe80::1%eth0/64`) and IPv4-mapped ranges
    (`::ffff:10.0.0.0/104`) are refused: a zone means nothing in a route-free match, and no
    packet in an inet table carries a mapped address (a socket that connects to one sends IPv4),
    so either would silently match nothing."""
    if "%" in text:
        raise ValueError("zone ids ('%...') are not allowed in a range")
    match = _pattern(_V6, re.ASCII).fullmatch(text)
    if match is None:
        raise ValueError("expected an IPv6 addr/len, such as fd00::/8 (the length in decimal, no leading zeros)")
    address, length = match.groups()
    prefixlen = int(length)
    if prefixlen > 128:
        raise ValueError(f"prefix length {prefixlen} is over 128")
    try:
        value = int.from_bytes(inet_pton(AF_INET6, address), "big")
    except OSError:
        raise ValueError(f"{address!r} is not an IPv6 address") from None
    network = value & ~(_ALL6 >> prefixlen) & _ALL6
    if prefixlen >= 96 and network >> 32 == 0xFFFF:
        ipv4 = f"{dotted(network & _ALL)}/{prefixlen - 96}"
        raise ValueError(f"an IPv4-mapped range matches no packet: write the IPv4 range {ipv4}")
    return Cidr(network, prefixlen, 6)


def split(first: int, last: int, version: int = 4) -> Iterator[Cidr]:
    """The fewest CIDRs covering exactly first..last: the largest aligned block each time."""
    bits = _BITS[version]
    while first <= last:
        size = first & -first if first else 1 << bits  # the largest block aligned at `first`
        while first + size - 1 > last:
            size >>= 1
        yield Cidr(first, bits + 1 - size.bit_length(), version)
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
    """The same addresses as the fewest CIDRs, in address order. All of one IP version.

    nft 1.0.6 refuses overlapping intervals in a set even with auto-merge, so overlapping and
    adjacent ranges are merged here, deterministically; what they match does not change. A
    range that merges with nothing stays the Cidr it was (the common case, kept cheap: tens of
    thousands of ranges, plain ints and tuples, no per-range call).
    """
    # By first address alone (a C-level key, 4x faster than comparing the tuples): blocks that
    # share one are merged whatever their order.
    ordered = sorted(cidrs, key=itemgetter(0))
    if not ordered:
        return []
    version = ordered[0].version
    host = _ALL if version == 4 else _ALL6
    # The usual list: no range overlaps or touches the next, so nothing merges. One pass of C
    # loops says so (each gap is at least one address) before any per-range Python runs.
    lows = list(map(itemgetter(0), ordered))
    ends = [low | host >> length for low, length, _ in ordered]
    if all(map(lt, map((1).__add__, ends), lows[1:])):
        return ordered
    out: list[Cidr] = []
    first, last, alone = -1, -2, None
    for block in ordered:
        low = block.network
        high = low | (host >> block.prefixlen)
        if low <= last + 1:
            if high > last:
                last = high
            alone = None
            continue
        if alone is not None:
            out.append(alone)
        elif first >= 0:
            out.extend(split(first, last, version))
        first, last, alone = low, high, block
    if alone is not None:
        out.append(alone)
    else:
        out.extend(split(first, last, version))
    return out


def by_version(cidrs: Iterable[Cidr], version: int) -> tuple[Cidr, ...]:
    """The CIDRs of one IP version, in the order given."""
    return tuple(cidr for cidr in cidrs if cidr.version == version)
