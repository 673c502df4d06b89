"""The validated configuration: every value that shapes the ruleset, checked once.

Raw text from any source (flags, environment, files) comes in as `Item`s that remember where
they came from, so an error can name the source. Nothing leaves this module unvalidated: the
renderer only ever sees a `Config`, whose fields are ints, CIDRs (nftredir.cidr), an IPv4 address and interface
names restricted to characters that are inert in nft syntax.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nftredir import cidr
from nftredir.cidr import Cidr
from nftredir.errors import ConfigError
from nftredir.nft_keywords import KEYWORDS

LOCAL_PROXY_MODES = ("localhost", "podip")

# dev_valid_name() in the kernel: at most IFNAMSIZ-1 bytes, no '/', ':' or whitespace.
IFNAMSIZ = 16
# Characters Linux accepts in a name but nft cannot carry literally inside a quoted string
# ('"', '\\') or would read as its own wildcard ('*').
_NFT_UNSAFE_IFNAME_CHARS = '"\\*'
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}", re.ASCII)
# Numbers are plain decimals: no sign, no leading zeros (which YAML 1.1 and inet_aton read as
# octal), so a value means the same in a flag, a variable and a file (_refuse_leading_zeros).
_PORT_RE = re.compile(r"\d{1,5}", re.ASCII)
_UID_RE = re.compile(r"\d{1,10}", re.ASCII)
# Kept short, and keyword-free (below), so the name is a plain nft identifier in every position.
_TABLE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel


class Item(NamedTuple):
    """One raw value and the place it came from (a flag, a variable, a file position)."""

    text: str
    source: Any  # a str, or an object whose str() names the place (sources.documents.Where)


@dataclass(frozen=True)
class Config:
    """Everything that shapes the ruleset. Defaults are FSM's constants."""

    outbound_ip_range_exclusions: tuple[Cidr, ...] = ()
    outbound_ip_range_inclusions: tuple[Cidr, ...] = ()
    outbound_port_exclusions: tuple[int, ...] = ()
    inbound_port_exclusions: tuple[int, ...] = ()
    network_interface_exclusions: tuple[str, ...] = ()
    local_proxy_mode: str = "localhost"
    pod_ip: ipaddress.IPv4Address | None = None
    table: str = "nftredir"
    proxy_uid: int = 1500
    proxy_admin_port: int = 15000
    proxy_outbound_port: int = 15001
    proxy_inbound_port: int = 15003
    prometheus_port: int = 15010
    probe_ports: tuple[int, ...] = (15901, 15902, 15903)
    healthcheck_port: int = 15904
    sources: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # field -> Item.source


def describe(text: str, limit: int = 60) -> str:
    """Quote a user's value for a one-line message: escaped, and cut when long."""
    shown = text if len(text) <= limit else text[:limit]
    quoted = repr(shown)
    if len(text) > limit:
        quoted += f"… ({len(text.encode('utf-8', 'surrogateescape'))} bytes)"
    return quoted


def split_items(text: str, source: Any) -> list[Item]:
    """Split a comma-separated value; whitespace around items and empty items are dropped."""
    return [Item(part.strip(), source) for part in text.split(",") if part.strip()]


def option_items(name: str, text: str, source: Any) -> list[Item]:
    """One value given for option `name`: split if the option is a list, whole otherwise."""
    return split_items(text, source) if OPTIONS[name].is_list else [Item(text, source)]


def parse_cidr(item: Item) -> Cidr:
    if ":" in item.text:
        raise ConfigError(item.source, item.text, "IPv6 ranges are not supported yet (FSM programs IPv4 only)")
    try:
        return cidr.parse(item.text)
    except ValueError as exc:
        raise ConfigError(item.source, item.text, f"not an IPv4 CIDR: {exc}") from None


def _refuse_leading_zeros(item: Item, what: str) -> None:
    if item.text[:1] == "0" and len(item.text) > 1 and item.text.isdigit():
        raise ConfigError(item.source, item.text, f"not a {what}: leading zeros are not accepted (write it in plain decimal)")


def parse_port(item: Item) -> int:
    _refuse_leading_zeros(item, "port")
    if not _PORT_RE.fullmatch(item.text) or not 1 <= int(item.text) <= 65535:
        raise ConfigError(item.source, item.text, "not a port: must be an integer from 1 to 65535")
    return int(item.text)


def parse_ifname(item: Item) -> str:
    name = item.text
    if not name:
        raise ConfigError(item.source, name, "an interface name cannot be empty")
    if len(name.encode("utf-8", "surrogateescape")) >= IFNAMSIZ:
        raise ConfigError(item.source, name, f"interface names are at most {IFNAMSIZ - 1} bytes")
    if name in (".", ".."):
        raise ConfigError(item.source, name, "not a valid interface name")
    for char in name:
        if not char.isascii() or not char.isprintable():
            reason = "control characters" if char.isascii() else "non-ASCII characters"
            raise ConfigError(item.source, name, f"interface names may not contain {reason}")
        if char in "/: ":
            raise ConfigError(item.source, name, f"Linux refuses {char!r} in interface names")
        if char in _NFT_UNSAFE_IFNAME_CHARS:
            raise ConfigError(item.source, name, f"{char!r} is not accepted in interface names")
    if name.startswith("@"):
        # libnftables' JSON parser reads a string starting with '@' as a set reference.
        raise ConfigError(item.source, name, "'@' is not accepted at the start of an interface name")
    if "+" in name[:-1]:
        raise ConfigError(item.source, name, "'+' is only allowed at the end (a prefix wildcard, as in iptables)")
    return name


def parse_pod_ip(item: Item) -> ipaddress.IPv4Address:
    """A pod's own IPv4 address: unicast, and neither loopback nor unspecified."""
    if not _IPV4_RE.fullmatch(item.text):
        raise ConfigError(item.source, item.text, "not an IPv4 address")
    try:
        address = ipaddress.IPv4Address(item.text)
    except ValueError as exc:
        raise ConfigError(item.source, item.text, f"not an IPv4 address: {exc}") from None
    for wrong, what in ((address.is_unspecified, "the unspecified address"), (address.is_loopback, "a loopback address"),
                        (address.is_multicast, "a multicast address"), (address == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
                        (address.is_reserved, "a reserved (class E) address")):
        if wrong:
            raise ConfigError(item.source, item.text, f"{what} cannot be a pod's IP")
    return address


def parse_uid(item: Item) -> int:
    _refuse_leading_zeros(item, "UID")
    if not _UID_RE.fullmatch(item.text) or int(item.text) > MAX_UID:
        raise ConfigError(item.source, item.text, f"not a UID: must be an integer from 0 to {MAX_UID}")
    return int(item.text)


def parse_mode(item: Item) -> str:
    mode = item.text.lower()
    if mode not in LOCAL_PROXY_MODES:
        raise ConfigError(item.source, item.text, "must be 'localhost' or 'podip'")
    return mode


def parse_table(item: Item) -> str:
    if not _TABLE_RE.fullmatch(item.text):
        raise ConfigError(
            item.source, item.text, "table names are 1-32 characters: a lowercase letter, then a-z, 0-9 or '_'"
        )
    if item.text in KEYWORDS:
        raise ConfigError(item.source, item.text, "an nft keyword cannot be a table name (nft -f could not read it back)")
    return item.text


class Option(NamedTuple):
    """How one option's raw items become one `Config` field."""

    field: str
    parse: Callable[[Item], Any]
    is_list: bool


# The option names are the flag names without '--'; other sources map onto these.
OPTIONS: dict[str, Option] = {
    "outbound-ip-range-exclusion-list": Option("outbound_ip_range_exclusions", parse_cidr, True),
    "outbound-ip-range-inclusion-list": Option("outbound_ip_range_inclusions", parse_cidr, True),
    "outbound-port-exclusion-list": Option("outbound_port_exclusions", parse_port, True),
    "inbound-port-exclusion-list": Option("inbound_port_exclusions", parse_port, True),
    "network-interface-exclusion-list": Option("network_interface_exclusions", parse_ifname, True),
    "local-proxy-mode": Option("local_proxy_mode", parse_mode, False),
    "pod-ip": Option("pod_ip", parse_pod_ip, False),
    "table": Option("table", parse_table, False),
    "proxy-uid": Option("proxy_uid", parse_uid, False),
    "proxy-admin-port": Option("proxy_admin_port", parse_port, False),
    "proxy-outbound-port": Option("proxy_outbound_port", parse_port, False),
    "proxy-inbound-port": Option("proxy_inbound_port", parse_port, False),
    "prometheus-port": Option("prometheus_port", parse_port, False),
    "probe-ports": Option("probe_ports", parse_port, True),
    "healthcheck-port": Option("healthcheck_port", parse_port, False),
}


def _unique(values: Iterable[object]) -> tuple:
    """Drop duplicates, keeping the first occurrence (FSM's merge does the same)."""
    return tuple(dict.fromkeys(values))


def build_config(raw: Mapping[str, list[Item]]) -> Config:
    """Validate raw items per option name (see OPTIONS) into a Config.

    A list option takes every item given; a scalar option takes the last one. Options that
    are absent keep FSM's defaults. Raises ConfigError naming the first bad item.
    """
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, items in raw.items():
        option = OPTIONS.get(name)
        if option is None:
            raise ConfigError(items[0].source if items else name, name, "unknown option")
        if name == "pod-ip":
            continue  # only read in podip mode, below: POD_IP may be IPv6 in a localhost-mode pod
        if option.is_list:
            values[option.field] = _unique(option.parse(item) for item in items)
        elif items:
            values[option.field] = option.parse(items[-1])
        if items:
            sources[option.field] = items[-1].source
    if values.get("local_proxy_mode") == "podip":
        pod_ip = raw.get("pod-ip")
        if not pod_ip:
            mode = raw["local-proxy-mode"][-1]
            raise ConfigError(
                mode.source, mode.text, "podip mode needs the pod's IPv4 address: pass --pod-ip or set POD_IP"
            )
        values["pod_ip"] = parse_pod_ip(pod_ip[-1])
        sources["pod_ip"] = pod_ip[-1].source
    return Config(**values, sources=sources)
