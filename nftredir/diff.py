"""Drift: the live table against the desired ruleset, compared like with like.

Both sides are libnftables JSON: the live side is `list table inet <table>` output (from
nftredir.kernel), the desired side is the batch `apply` would send (nftredir.render). Each is
reduced to a canonical `Ruleset` in which what does not change meaning is gone:

- handles, counter values, and element order (elements are sorted);
- prefixes: a /32 (/128) prefix is the plain address, as the kernel lists it;
- interval sets: overlapping or adjacent intervals are merged, as far as the kernel may list
  them split or joined;
- payload dependencies nft hides when listing: in an inet table `meta nfproto ipv4` before an
  `ip ...` match, and `meta l4proto tcp` before a `tcp ...` match, add nothing, and the listing
  drops them (nftredir's podip DNAT rule is written with `meta nfproto ipv4`, listed without);
- base chain priorities are numbers (`dstnat` is -100) in JSON on both sides.

`compare` then lists the differences as plain data (the JSON shape below) and `unified`
prints both sides as nft text in a unified diff (`-` live, `+` desired). Everything here is
pure: no kernel, so it is tested with captured listings.

JSON shape of `report(...)` (what `nftredir diff --format json` prints):

    {"table": {"family": "inet", "name": "nftredir"},
     "installed": true,            # the live table exists
     "identical": false,           # no differences
     "differences": [DIFFERENCE, ...]}

Each DIFFERENCE has "object" ("table", "set", "chain" or "rule", or another nft object kind
such as "map" or "flowtable" found live), "change" ("missing": desired, not live; "extra":
live, not desired; "changed": both, different), "name", "live" and "desired" (the object on
each side, null where absent), and by kind:

- table: "missing" (everything else is then missing too, and not listed again), or "changed":
  live/desired are {"family", "name", "flags", "comment"}, with "fields" (a dormant table
  redirects nothing, whatever its rules say).
- set: live/desired are {"type", "flags", "elements"}; "changed" adds "fields" (which of
  type/flags/elements differ), "elements_missing" and "elements_extra" (canonical text).
- chain: live/desired are {"type", "hook", "prio", "policy", "rules"} (the first four null for
  a regular chain; "rules" as for a rule below, so a missing or extra chain's rules are not
  listed separately); "changed" adds "fields" (which of type/hook/prio/policy differ).
- rule: "name" is the chain; live/desired are {"index", "rule", "comment"} with "index" the
  0-based position in the chain, "rule" the nft text without the comment, and on the live side
  also "handle". A rule that moved is listed as extra at its old place and missing at its new.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from socket import inet_aton
from typing import Any

from nftredir import cidr

FAMILY = "inet"
_UNQUALIFIED_META = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
_IFNAME_META = {"iifname", "oifname"}
_BARE_RE = re.compile(r"[@A-Za-z0-9_.:/-]+")
_VERDICTS = ("accept", "drop", "return", "continue", "queue")
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
    kind: str = "set"  # "set" or "map"

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


def _is_interval_type(kind: str) -> bool:
    return kind in ("ipv4_addr", "ipv6_addr", "inet_service")


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


def _bounds(kind: str, value: Any) -> tuple[int, int] | None:
    """An element as an inclusive (low, high) interval of integers, or None if it is not one."""
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        address = _address_or_int(prefix.get("addr")) if isinstance(prefix, dict) else None
        length, bits = (prefix.get("len") if isinstance(prefix, dict) else None), (32 if kind == "ipv4_addr" else 128)
        if address is None or not isinstance(length, int) or not 0 <= length <= bits:
            return None
        host = (1 << (bits - length)) - 1
        return address & ~host, address | host
    if isinstance(value, dict) and "range" in value and len(value["range"]) == 2:
        low, high = (_address_or_int(v) for v in value["range"])
        return (low, high) if low is not None and high is not None else None
    number = _address_or_int(value)
    return (number, number) if number is not None else None


def _interval_text(kind: str, low: int, high: int) -> str:
    if kind == "inet_service":
        return str(low) if low == high else f"{low}-{high}"
    if kind == "ipv4_addr":
        blocks = list(islice(cidr.split(low, high), 2))
        if len(blocks) == 1:
            return blocks[0].address if blocks[0].prefixlen == 32 else str(blocks[0])
        return f"{cidr.dotted(low)}-{cidr.dotted(high)}"
    first, last = ipaddress.IPv6Address(low), ipaddress.IPv6Address(high)
    nets = list(ipaddress.summarize_address_range(first, last))
    if len(nets) == 1:
        net = nets[0]
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return f"{first}-{last}"


def canonical_elements(kind: str, flags: Iterable[str], elements: Iterable[Any]) -> tuple[str, ...]:
    """A set's elements as sorted canonical text; interval sets with adjacent intervals merged."""
    values = [_unwrap_elem(e) for e in elements]
    if _is_interval_type(kind):
        bounds = [_bounds(kind, v) for v in values]
        if all(b is not None for b in bounds):
            if "interval" in flags:
                return tuple(_interval_text(kind, low, high) for low, high in cidr.merge_intervals(bounds))  # type: ignore[arg-type]
            return tuple(value_text(v) for _, v in sorted(zip(bounds, values), key=lambda pair: pair[0]))
    return tuple(sorted({value_text(v) for v in values}))


def _unwrap_elem(element: Any) -> Any:
    """An element without its per-element extras (timeout, expires, counter, comment)."""
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


def value_text(value: Any, quote: bool = False) -> str:
    """A value in nft syntax: 80, 10.0.0.0/8, 1-5, "eth0", @set, { 1, 2 }."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value) if quote or not _BARE_RE.fullmatch(value) else value
    if isinstance(value, dict):
        if "prefix" in value and isinstance(value["prefix"], dict):
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "range" in value and isinstance(value["range"], list) and len(value["range"]) == 2:
            return f"{value_text(value['range'][0])}-{value_text(value['range'][1])}"
        if "set" in value and isinstance(value["set"], list):
            return "{ " + ", ".join(value_text(v, quote) for v in value["set"]) + " }"
    if isinstance(value, list):  # flags, as in `ct state established,related`
        return ",".join(value_text(v, quote) for v in value)
    return json.dumps(value, sort_keys=True)


def _left_text(left: Any) -> tuple[str, bool]:
    """The left side of a match in nft syntax, and whether string values there are quoted."""
    if isinstance(left, dict):
        if isinstance(left.get("meta"), dict):
            key = left["meta"].get("key", "")
            return (key if key in _UNQUALIFIED_META else f"meta {key}"), key in _IFNAME_META
        if isinstance(left.get("payload"), dict):
            payload = left["payload"]
            if "protocol" in payload:
                return f"{payload['protocol']} {payload.get('field')}", False
            return f"@{payload.get('base')},{payload.get('offset')},{payload.get('len')}", False
        if isinstance(left.get("ct"), dict):
            ct = left["ct"]
            return " ".join(str(w) for w in ("ct", ct.get("dir"), ct.get("key")) if w), False
    return json.dumps(left, sort_keys=True), False


def expression_text(expr: Any) -> str:
    """One expression in nft syntax; kinds nftredir does not write fall back to their JSON."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return json.dumps(expr, sort_keys=True)
    (kind, body), = expr.items()
    if kind == "match" and isinstance(body, dict):
        left, quote = _left_text(body.get("left"))
        op = body.get("op", "==")
        shown_op = "" if op in ("==", "in") else f"{op} "
        return f"{left} {shown_op}{value_text(body.get('right'), quote)}"
    if kind == "counter":
        return "counter"
    if kind in _VERDICTS and body is None:
        return kind
    if kind in ("jump", "goto") and isinstance(body, dict):
        return f"{kind} {body.get('target')}"
    if kind == "redirect" and isinstance(body, dict) and set(body) <= {"port"}:
        return f"redirect to :{body['port']}" if "port" in body else "redirect"
    if kind in ("dnat", "snat") and isinstance(body, dict) and set(body) <= {"family", "addr", "port"}:
        family = f"{body['family']} " if "family" in body else ""
        port = f":{body['port']}" if "port" in body else ""
        return f"{kind} {family}to {value_text(body.get('addr', ''))}{port}"
    if kind == "masquerade" and body is None:
        return "masquerade"
    if kind == "log" and isinstance(body, dict) and set(body) <= {"prefix"}:
        return f"log prefix {json.dumps(body['prefix'])}" if body else "log"
    return json.dumps(expr, sort_keys=True)


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
# Parsing both sides


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

    def add_set(self, kind: str, obj: dict[str, Any]) -> None:
        type_ = obj.get("type", "")
        type_ = " . ".join(type_) if isinstance(type_, list) else str(type_)
        if kind == "map":
            value_type = obj.get("map", "")
            type_ += " : " + (" . ".join(value_type) if isinstance(value_type, list) else str(value_type))
        flags = obj.get("flags", [])
        flags = tuple(sorted([flags] if isinstance(flags, str) else flags))
        elements = obj.get("elem", [])
        self.sets[obj["name"]] = NamedSet(
            obj["name"], type_, flags, canonical_elements(str(obj.get("type")), flags, elements), kind
        )

    def add_elements(self, obj: dict[str, Any]) -> None:
        old = self.sets.get(obj.get("name", ""))
        if old is None:
            return
        kind = old.type.split(" ")[0]
        merged = list(old.elements) + [value_text(_unwrap_elem(e)) for e in obj.get("elem", [])]
        self.sets[old.name] = NamedSet(old.name, old.type, old.flags, _recanonical(kind, old.flags, merged), old.kind)

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


def _recanonical(kind: str, flags: tuple[str, ...], texts: list[str]) -> tuple[str, ...]:
    """Canonical elements again from canonical text (after adding elements to a set)."""
    values: list[Any] = []
    for text in texts:
        if "-" in text and not text.startswith("-"):
            low, high = text.split("-", 1)
            values.append({"range": [int(low) if low.isdigit() else low, int(high) if high.isdigit() else high]})
        elif "/" in text:
            addr, length = text.split("/", 1)
            values.append({"prefix": {"addr": addr, "len": int(length)}})
        else:
            values.append(int(text) if text.isdigit() else text)
    return canonical_elements(kind, flags, values)


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


def from_batch(batch: dict[str, Any], table: str) -> Ruleset | None:
    """What the batch leaves in `inet <table>` when applied to an empty ruleset (None: no table)."""
    builder: _Builder | None = None
    for command in batch.get("nftables", []):
        (verb, body), = command.items()
        if verb == "metainfo" or not isinstance(body, dict):
            continue
        (kind, obj), = body.items()
        if not isinstance(obj, dict) or obj.get("family", FAMILY) != FAMILY or obj.get("table", obj.get("name")) != table:
            continue
        if kind == "table":
            if verb in ("add", "create"):
                builder = builder or _Builder(table)
            elif verb in ("delete", "destroy"):
                builder = None
            elif verb == "flush" and builder is not None:
                builder = _Builder(table)
            continue
        if builder is None:
            continue
        if verb in ("add", "create") and kind in ("set", "map"):
            builder.add_set(kind, obj)
        elif verb in ("add", "create") and kind == "element":
            builder.add_elements(obj)
        elif verb in ("add", "create") and kind == "chain":
            builder.add_chain(obj)
        elif verb in ("add", "create") and kind == "rule":
            builder.add_rule(obj)
        elif verb in ("add", "create"):
            builder.add_other(kind, obj)
    return builder.build() if builder is not None else None


# ---------------------------------------------------------------------------------------------
# Comparing


def table_json(ruleset: Ruleset) -> dict[str, Any]:
    return {"family": FAMILY, "name": ruleset.table, "flags": list(ruleset.flags), "comment": ruleset.comment}


def set_json(s: NamedSet) -> dict[str, Any]:
    return {"type": s.type, "flags": list(s.flags), "elements": list(s.elements)}


def _rule_json(rule: Rule, index: int, live: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "rule": rule.text, "comment": rule.comment}
    if live:
        out["handle"] = rule.handle
    return out


def _chain_json(chain: Chain, live: bool) -> dict[str, Any]:
    return {**chain.header(), "rules": [_rule_json(r, i, live) for i, r in enumerate(chain.rules)]}


def ordered_names(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Names in the desired order, then names only live has, sorted."""
    return [*desired, *sorted(name for name in live if name not in desired)]


def _difference(obj: str, change: str, name: str, live: Any, desired: Any, **extra: Any) -> dict[str, Any]:
    return {"object": obj, "change": change, "name": name, "live": live, "desired": desired, **extra}


def _rule_differences(chain: str, live: tuple[Rule, ...], desired: tuple[Rule, ...]) -> Iterator[dict[str, Any]]:
    matcher = difflib.SequenceMatcher(None, list(live), list(desired), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(paired):
            yield _difference(
                "rule", "changed", chain, _rule_json(live[i1 + k], i1 + k, True), _rule_json(desired[j1 + k], j1 + k, False)
            )
        for i in range(i1 + paired, i2):
            yield _difference("rule", "extra", chain, _rule_json(live[i], i, True), None)
        for j in range(j1 + paired, j2):
            yield _difference("rule", "missing", chain, None, _rule_json(desired[j], j, False))


def compare(live: Ruleset | None, desired: Ruleset) -> list[dict[str, Any]]:
    """Every difference that changes meaning, in the JSON shape of this module's docstring."""
    if live is None:
        return [_difference("table", "missing", desired.table, None, {"family": FAMILY, "name": desired.table})]
    out: list[dict[str, Any]] = []
    fields = [f for f in Ruleset.TABLE_FIELDS if getattr(live, f) != getattr(desired, f)]
    if fields:  # a dormant table redirects nothing, whatever its rules say
        out.append(_difference("table", "changed", desired.table, table_json(live), table_json(desired), fields=fields))
    for name in ordered_names(desired.sets, live.sets):
        have, want = live.sets.get(name), desired.sets.get(name)
        kind = (want or have).kind  # type: ignore[union-attr]
        if have is None:
            out.append(_difference(kind, "missing", name, None, set_json(want)))  # type: ignore[arg-type]
        elif want is None:
            out.append(_difference(kind, "extra", name, set_json(have), None))
        elif have != want:
            fields = [f for f in NamedSet.FIELDS + ("kind",) if getattr(have, f) != getattr(want, f)]
            have_elements, want_elements = set(have.elements), set(want.elements)
            out.append(
                _difference(
                    kind, "changed", name, set_json(have), set_json(want), fields=fields,
                    elements_missing=[e for e in want.elements if e not in have_elements],
                    elements_extra=[e for e in have.elements if e not in want_elements],
                )
            )
    for name in ordered_names(desired.chains, live.chains):
        have_chain, want_chain = live.chains.get(name), desired.chains.get(name)
        if have_chain is None:
            out.append(_difference("chain", "missing", name, None, _chain_json(want_chain, False)))  # type: ignore[arg-type]
            continue
        if want_chain is None:
            out.append(_difference("chain", "extra", name, _chain_json(have_chain, True), None))
            continue
        fields = [f for f in Chain.HEADER if getattr(have_chain, f) != getattr(want_chain, f)]
        if fields:
            out.append(
                _difference("chain", "changed", name, have_chain.header(), want_chain.header(), fields=fields)
            )
        out.extend(_rule_differences(name, have_chain.rules, want_chain.rules))
    for kind, name in ordered_names(desired.others, live.others):  # type: ignore[type-var]
        have_other, want_other = live.others.get((kind, name)), desired.others.get((kind, name))
        if have_other != want_other:
            change = "missing" if have_other is None else "extra" if want_other is None else "changed"
            out.append(
                _difference(
                    kind, change, name, json.loads(have_other) if have_other else None,
                    json.loads(want_other) if want_other else None,
                )
            )
    return out


def report(live: Ruleset | None, desired: Ruleset, differences: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole comparison as `nftredir diff --format json` prints it."""
    differences = compare(live, desired) if differences is None else differences
    return {
        "table": {"family": FAMILY, "name": desired.table},
        "installed": live is not None,
        "identical": not differences,
        "differences": differences,
    }


# ---------------------------------------------------------------------------------------------
# Text


def ruleset_lines(ruleset: Ruleset | None, order: Ruleset | None = None) -> list[str]:
    """The canonical ruleset as `nft list table` text: no handles, no counter values.

    Sets and chains come in `order`'s order (the desired side) and then the rest by name, so
    that both sides of a diff line up however the live objects were created.
    """
    if ruleset is None:
        return []
    reference = order or ruleset
    lines = [f"table {FAMILY} {ruleset.table} {{"]
    if ruleset.flags:
        lines.append(f"\tflags {','.join(ruleset.flags)}")
    if ruleset.comment is not None:
        lines.append(f"\tcomment {json.dumps(ruleset.comment)}")
    blocks: list[list[str]] = []
    for name in ordered_names(reference.sets, ruleset.sets):
        if name not in ruleset.sets:
            continue
        s = ruleset.sets[name]
        block = [f"\t{s.kind} {s.name} {{", f"\t\ttype {s.type}"]
        if s.flags:
            block.append(f"\t\tflags {','.join(s.flags)}")
        if s.elements:
            block.append(f"\t\telements = {{ {', '.join(s.elements)} }}")
        blocks.append([*block, "\t}"])
    for name in ordered_names(reference.chains, ruleset.chains):
        if name not in ruleset.chains:
            continue
        chain = ruleset.chains[name]
        block = [f"\tchain {chain.name} {{"]
        if chain.hook is not None:
            block.append(f"\t\ttype {chain.type} hook {chain.hook} priority {chain.prio}; policy {chain.policy};")
        block += [f"\t\t{rule.line}" for rule in chain.rules]
        blocks.append([*block, "\t}"])
    for kind, name in ordered_names(reference.others, ruleset.others):  # type: ignore[type-var]
        if (kind, name) in ruleset.others:
            blocks.append([f"\t{kind} {name} {ruleset.others[(kind, name)]}"])
    for index, block in enumerate(blocks):
        if index:
            lines.append("")
        lines += block
    return [*lines, "}"]


def unified(live: Ruleset | None, desired: Ruleset, context: int = 3) -> str:
    """A unified diff in nft syntax, `-` live and `+` desired; empty when they are identical."""
    live_name = f"live: table {FAMILY} {desired.table}" + ("" if live is not None else " (absent)")
    lines = difflib.unified_diff(
        ruleset_lines(live, desired), ruleset_lines(desired), fromfile=live_name,
        tofile=f"desired: table {FAMILY} {desired.table}", lineterm="", n=context,
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


def desired_ruleset(batch: dict[str, Any], table: str) -> Ruleset:
    ruleset = from_batch(batch, table)
    if ruleset is None:  # render always adds the table; an empty batch wants an empty table
        return Ruleset(table)
    return ruleset


@dataclass(frozen=True)
class Drift:
    """One comparison: the live table (None if absent), the desired one, and what differs."""

    live: Ruleset | None
    desired: Ruleset
    differences: list[dict[str, Any]]

    @property
    def identical(self) -> bool:
        return not self.differences

    def text(self) -> str:
        """The unified diff; empty when identical.

        Should two rules differ only where their nft text looks the same (say a number and a
        string of digits), the text would hide it, so such differences are listed as JSON.
        """
        text = unified(self.live, self.desired)
        if self.differences and not text:
            text = "".join(f"# {json.dumps(d, sort_keys=True)}\n" for d in self.differences)
        return text

    def report(self) -> dict[str, Any]:
        return report(self.live, self.desired, self.differences)


def drift(listing: dict[str, Any] | None, batch: dict[str, Any], table: str) -> Drift:
    """Compare `list table` JSON (None: no table) with the batch `apply` would send."""
    live, desired = from_listing(listing, table), desired_ruleset(batch, table)
    return Drift(live, desired, compare(live, desired))
