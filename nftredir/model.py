"""The model: a table as canonical objects, from a live listing or from the batch `apply` sends.

Both sides are libnftables JSON: the live side is `list table inet <table>` output (from
nftredir.kernel), the desired side the batch `apply` would send (nftredir.render). Each is
reduced to a canonical `Ruleset` in which what does not change meaning is gone:

- handles, counter values (of rules and of named counters), and element order;
- prefixes: a /32 (/128) prefix is the plain address, as the kernel lists it;
- interval sets: overlapping or adjacent intervals are merged (nftredir.cidr), as far as the
  kernel may list them split or joined;
- payload dependencies nft hides when listing: in an inet table `meta nfproto ipv4` before an
  `ip ...` match, and `meta l4proto tcp` before a `tcp ...` match, add nothing, and the listing
  drops them (nftredir's podip DNAT rule is written with `meta nfproto ipv4`, listed without);
- base chain priorities are numbers (`dstnat` is -100) in JSON on both sides.

Pure: no kernel, so it is tested with captured listings.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from _socket import inet_aton  # not socket: see netlink_table
from typing import Any

from nftredir import cidr
from nftredir.cidr import dotted
from nftredir.nft_text import expression_text, value_text

FAMILY = "inet"
# `meta nfproto X` is implied by a later payload match on these protocols (inet family).
_NFPROTO_PAYLOADS = {"ipv4": {"ip"}, "ipv6": {"ip6"}}


@dataclass(frozen=True)
class Rule:
    """One rule, compared by its canonical expressions and comment only."""

    key: str  # canonical expression list as JSON: what comparison uses
    text: str  # the same in nft syntax, without the comment: what a person reads
    comment: str | None = None
    handle: int | None = field(default=None, compare=False)
    packets: int | None = field(default=None, compare=False)
    bytes: int | None = field(default=None, compare=False)

    @property
    def line(self) -> str:
        return self.text + (f" comment {json.dumps(self.comment)}" if self.comment is not None else "")


@dataclass(frozen=True)
class Chain:
    name: str
    type: str | None = None
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None
    rules: tuple[Rule, ...] = ()

    HEADER = ("type", "hook", "prio", "policy")

    def header(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.HEADER}


@dataclass(frozen=True)
class NamedSet:
    name: str
    type: str
    flags: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()  # canonical text, in canonical order
    object: str = "set"  # "set" or "map": the nft object it is

    FIELDS = ("type", "flags", "elements")


@dataclass(frozen=True)
class Ruleset:
    """One inet table, canonical. Dict order is the order objects were listed or added."""

    table: str
    flags: tuple[str, ...] = ()  # the table's own: dormant, owner
    comment: str | None = None
    sets: dict[str, NamedSet] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    others: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> canonical JSON

    TABLE_FIELDS = ("flags", "comment")


# ---------------------------------------------------------------------------------------------
# Values and expressions


def _is_interval_type(datatype: str) -> bool:
    return datatype in ("ipv4_addr", "ipv6_addr", "inet_service")


def _address_or_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.count(".") == 3:  # IPv4, the common case, without ipaddress's cost
            try:
                return int.from_bytes(inet_aton(value), "big")
            except OSError:
                return None
        try:
            return int(ipaddress.ip_address(value))
        except ValueError:
            return None
    return None


def _bounds(datatype: str, value: Any) -> tuple[int, int] | None:
    """An element as an inclusive (low, high) interval of integers, or None if it is not one."""
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        address = _address_or_int(prefix.get("addr")) if isinstance(prefix, dict) else None
        length, bits = (prefix.get("len") if isinstance(prefix, dict) else None), (32 if datatype == "ipv4_addr" else 128)
        if address is None or not isinstance(length, int) or not 0 <= length <= bits:
            return None
        host = (1 << (bits - length)) - 1
        return address & ~host, address | host
    if isinstance(value, dict) and "range" in value and len(value["range"]) == 2:
        low, high = (_address_or_int(v) for v in value["range"])
        return (low, high) if low is not None and high is not None else None
    number = _address_or_int(value)
    return (number, number) if number is not None else None


def _ipv4_bounds(values: list[Any]) -> list[tuple[int, int]] | None:
    """The elements of an IPv4 set as (low, high), for the common shapes (a plain address, a
    prefix) in a few C-level passes over the whole list: a set can hold tens of thousands.
    None for any other shape."""
    try:
        addresses = [value if type(value) is str else value["prefix"]["addr"] for value in values]
        lengths = [32 if type(value) is str else value["prefix"]["len"] for value in values]
        if not all(type(length) is int for length in lengths) or not all(0 <= length <= 32 for length in lengths):
            return None
        if not all(type(address) is str and address.count(".") == 3 for address in addresses):
            return None  # inet_aton would also take shorthands such as "10.1"
        numbers = struct.unpack(f">{len(addresses)}I", b"".join([inet_aton(address) for address in addresses]))
    except (OSError, KeyError, TypeError):
        return None
    return [(number & cidr.NETMASKS[length], number | (0xFFFFFFFF >> length)) for number, length in zip(numbers, lengths)]


def _interval_text(datatype: str, low: int, high: int) -> str:
    if datatype == "inet_service":
        return str(low) if low == high else f"{low}-{high}"
    if datatype == "ipv4_addr":
        return _ipv4_interval_texts([[low, high]])[0]
    first, last = ipaddress.IPv6Address(low), ipaddress.IPv6Address(high)
    nets = list(ipaddress.summarize_address_range(first, last))
    if len(nets) == 1:
        net = nets[0]
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return f"{first}-{last}"


def _ipv4_interval_texts(intervals: list[list[int]]) -> tuple[str, ...]:
    """Each IPv4 interval as the kernel lists it: an address, a prefix, or a range. In one loop
    without a call per interval but `dotted`: a set can hold 50,000."""
    texts = []
    append = texts.append
    for low, high in intervals:
        size = high - low + 1
        if size & (size - 1) == 0 and low & (size - 1) == 0:  # one aligned block: a prefix
            length = 33 - size.bit_length()
            append(dotted(low) if length == 32 else f"{dotted(low)}/{length}")
        else:
            append(f"{dotted(low)}-{dotted(high)}")
    return tuple(texts)


def canonical_elements(datatype: str, flags: Iterable[str], elements: Iterable[Any]) -> tuple[str, ...]:
    """A set's elements as sorted canonical text; interval sets with adjacent intervals merged."""
    values = [_unwrap_elem(e) for e in elements]
    if _is_interval_type(datatype):
        fast = _ipv4_bounds(values) if datatype == "ipv4_addr" else None
        bounds = fast if fast is not None else [_bounds(datatype, v) for v in values]
        if all(b is not None for b in bounds):
            if "interval" in flags:
                merged = cidr.merge_intervals(bounds)  # type: ignore[arg-type]
                if datatype == "ipv4_addr":
                    return _ipv4_interval_texts(merged)
                return tuple(_interval_text(datatype, low, high) for low, high in merged)
            return tuple(value_text(v) for _, v in sorted(zip(bounds, values), key=lambda pair: pair[0]))
    return tuple(sorted({value_text(v) for v in values}))


def _unwrap_elem(element: Any) -> Any:
    """An element without its per-element extras (timeout, expires, counter, comment)."""
    if type(element) is str:  # the common case, first
        return element
    if isinstance(element, dict) and "elem" in element:
        return _unwrap_elem(element["elem"].get("val"))
    if isinstance(element, list) and len(element) == 2:  # a map element: [key, value]
        return [_unwrap_elem(element[0]), element[1]]
    return element


def _canonical_value(value: Any) -> Any:
    """A match's right-hand side, as the kernel lists it."""
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        try:
            net = ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False)
        except (ValueError, KeyError, TypeError):
            return value
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    if isinstance(value, dict) and "set" in value and isinstance(value["set"], list):
        items = [_canonical_value(_unwrap_elem(v)) for v in value["set"]]
        return {"set": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, list):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _payload_protocol(expr: dict[str, Any]) -> str | None:
    match = expr.get("match")
    if isinstance(match, dict) and isinstance(match.get("left"), dict):
        payload = match["left"].get("payload")
        if isinstance(payload, dict):
            return payload.get("protocol")
    return None


def _meta_match(expr: dict[str, Any]) -> tuple[str, Any] | None:
    """(key, value) for `meta KEY == VALUE`, else None."""
    match = expr.get("match")
    if not isinstance(match, dict) or match.get("op", "==") != "==":
        return None
    left = match.get("left")
    if isinstance(left, dict) and isinstance(left.get("meta"), dict):
        return left["meta"].get("key"), match.get("right")
    return None


# Where /etc/protocols is missing (a minimal image without netbase), libnftables lists
# protocol numbers instead of names; both mean the same.
_PROTOCOL_NAMES = {"l4proto": {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}, "nfproto": {2: "ipv4", 10: "ipv6"}}


def _named_protocol(expr: dict[str, Any]) -> dict[str, Any]:
    """`meta l4proto 6` as `meta l4proto tcp`, so a listing without /etc/protocols compares equal."""
    meta = _meta_match(expr)
    if meta is None or meta[0] not in _PROTOCOL_NAMES or not isinstance(meta[1], int):
        return expr
    name = _PROTOCOL_NAMES[meta[0]].get(meta[1])
    return expr if name is None else {"match": {**expr["match"], "right": name}}


def canonical_expressions(exprs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A rule's expressions as the kernel lists them, with counter values stripped."""
    exprs = [_named_protocol(expr) if isinstance(expr, dict) else expr for expr in exprs]
    out: list[dict[str, Any]] = []
    for index, expr in enumerate(exprs):
        if not isinstance(expr, dict):
            out.append(expr)
            continue
        if "counter" in expr:
            out.append({"counter": None})
            continue
        later = {_payload_protocol(e) for e in exprs[index + 1 :] if isinstance(e, dict)}
        meta = _meta_match(expr)
        if meta is not None and isinstance(meta[1], str):  # not an anonymous set: { tcp, udp }
            key, value = meta
            if key == "nfproto" and _NFPROTO_PAYLOADS.get(value, set()) & later:
                continue  # implied by the later `ip ...` match; nft hides it when listing
            if key == "l4proto" and value in later:
                continue  # implied by the later `tcp ...` match; nft hides it when listing
        if "match" in expr and isinstance(expr["match"], dict):
            match = dict(expr["match"])
            match["right"] = _canonical_value(match.get("right"))
            match.setdefault("op", "==")
            out.append({"match": match})
            continue
        out.append(expr)
    return out


def make_rule(obj: dict[str, Any]) -> Rule:
    """A canonical Rule from a libnftables rule object (listed or from a batch)."""
    exprs = canonical_expressions(list(obj.get("expr", [])))
    packets = bytes_ = None
    for expr in obj.get("expr", []):
        if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
            packets = packets or 0
            bytes_ = bytes_ or 0
            packets += int(expr["counter"].get("packets", 0))
            bytes_ += int(expr["counter"].get("bytes", 0))
    return Rule(
        key=json.dumps(exprs, sort_keys=True),
        text=" ".join(expression_text(e) for e in exprs),
        comment=obj.get("comment"),
        handle=obj.get("handle"),
        packets=packets,
        bytes=bytes_,
    )


# ---------------------------------------------------------------------------------------------
# Both sides


class _Builder:
    """Accumulates one table's objects in the order they arrive."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.sets: dict[str, NamedSet] = {}
        self.chains: dict[str, Chain] = {}
        self.rules: dict[str, list[Rule]] = {}
        self.others: dict[tuple[str, str], str] = {}
        self.flags: tuple[str, ...] = ()
        self.comment: str | None = None

    def set_table(self, obj: dict[str, Any]) -> None:
        flags = obj.get("flags", [])
        self.flags = tuple(sorted([flags] if isinstance(flags, str) else flags))
        self.comment = obj.get("comment")

    def mine(self, obj: dict[str, Any]) -> bool:
        return obj.get("family", FAMILY) == FAMILY and obj.get("table", obj.get("name")) == self.table

    def add_set(self, object: str, obj: dict[str, Any]) -> None:
        type_ = obj.get("type", "")
        type_ = " . ".join(type_) if isinstance(type_, list) else str(type_)
        if object == "map":
            value_type = obj.get("map", "")
            type_ += " : " + (" . ".join(value_type) if isinstance(value_type, list) else str(value_type))
        flags = obj.get("flags", [])
        flags = tuple(sorted([flags] if isinstance(flags, str) else flags))
        elements = obj.get("elem", [])
        self.sets[obj["name"]] = NamedSet(
            obj["name"], type_, flags, canonical_elements(str(obj.get("type")), flags, elements), object
        )

    def add_chain(self, obj: dict[str, Any]) -> None:
        if obj["name"] in self.chains:
            return
        prio = obj.get("prio")
        self.chains[obj["name"]] = Chain(
            obj["name"], obj.get("type"), obj.get("hook"), int(prio) if isinstance(prio, int) else prio, obj.get("policy")
        )
        self.rules.setdefault(obj["name"], [])

    def add_rule(self, obj: dict[str, Any]) -> None:
        chain = obj.get("chain", "")
        if chain not in self.chains:
            self.add_chain({"name": chain})
        self.rules[chain].append(make_rule(obj))

    def add_other(self, kind: str, obj: dict[str, Any]) -> None:
        # A named counter's values count, like a rule's counter, and change nothing.
        ignored = ("handle", "family", "table", *(("packets", "bytes") if kind == "counter" else ()))
        body = {k: v for k, v in obj.items() if k not in ignored}
        self.others[(kind, str(obj.get("name", "")))] = json.dumps(body, sort_keys=True)

    def build(self) -> Ruleset:
        chains = {name: Chain(**{**chain.__dict__, "rules": tuple(self.rules[name])}) for name, chain in self.chains.items()}
        return Ruleset(self.table, self.flags, self.comment, dict(self.sets), chains, dict(self.others))


def from_listing(listing: dict[str, Any] | None, table: str) -> Ruleset | None:
    """The live table from `list table inet <table>` JSON; None when the table is absent."""
    if listing is None:
        return None
    builder = _Builder(table)
    found = False
    for item in listing.get("nftables", []):
        (kind, obj), = item.items()
        if kind == "metainfo" or not isinstance(obj, dict) or not builder.mine(obj):
            continue
        if kind == "table":
            found = True
            builder.set_table(obj)
        elif kind in ("set", "map"):
            builder.add_set(kind, obj)
        elif kind == "chain":
            builder.add_chain(obj)
        elif kind == "rule":
            builder.add_rule(obj)
        else:
            builder.add_other(kind, obj)
    return builder.build() if found else None


def from_batch(batch: dict[str, Any], table: str) -> Ruleset:
    """What the batch `apply` sends leaves in `inet <table>`: the objects it adds after it
    deletes the table (nftredir's batches add, delete, then add everything)."""
    commands = batch.get("nftables", [])
    deleted = [i for i, command in enumerate(commands) if "table" in command.get("delete", {})]
    added = [command["add"] for command in commands[(deleted[-1] + 1 if deleted else 0):] if "add" in command]
    return from_listing({"nftables": added}, table) or Ruleset(table)
