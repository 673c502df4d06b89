"""The validated configuration: every value that shapes the ruleset, checked once.

Raw text from any source (flags, environment, files) comes in as `Item`s that remember where
they came from, so an error can name the source. Nothing leaves this module unvalidated: the
renderer only ever sees a `Config`, whose fields are ints, CIDRs (nftredir.cidr), the pod's
addresses and interface names restricted to characters that are inert in nft syntax.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nftredir import cidr
from nftredir.cidr import Cidr
from nftredir.errors import ConfigError
from nftredir.nft_keywords import KEYWORDS

LOCAL_PROXY_MODES = ("localhost", "podip")
# ipv4: FSM's behaviour, IPv6 untouched; dual: IPv6 TCP redirected too, with the same meaning.
IP_FAMILIES = ("ipv4", "dual")
CIDR_OPTIONS = ("outbound-ip-range-exclusion-list", "outbound-ip-range-inclusion-list")

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
    source: Any  # a str, or an object whose str() names the place (sources.documents.FieldSource)


@dataclass(frozen=True)
class Config:
    """Everything that shapes the ruleset. Defaults are FSM's constants."""

    outbound_ip_range_exclusions: tuple[Cidr, ...] = ()
    outbound_ip_range_inclusions: tuple[Cidr, ...] = ()
    outbound_port_exclusions: tuple[int, ...] = ()
    inbound_port_exclusions: tuple[int, ...] = ()
    network_interface_exclusions: tuple[str, ...] = ()
    local_proxy_mode: str = "localhost"
    ip_family: str = "ipv4"
    pod_ip: ipaddress.IPv4Address | None = None
    pod_ip6: ipaddress.IPv6Address | None = None  # read only in dual podip mode
    table: str = "nftredir"
    proxy_uid: int = 1500
    proxy_admin_port: int = 15000
    proxy_outbound_port: int = 15001
    proxy_inbound_port: int = 15003
    prometheus_port: int = 15010
    probe_ports: tuple[int, ...] = (15901, 15902, 15903)
    healthcheck_port: int = 15904
    sources: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # field -> Item.source


def split_items(text: str, source: Any) -> list[Item]:
    """Split a comma-separated value; whitespace around items and empty items are dropped."""
    return [Item(part.strip(), source) for part in text.split(",") if part.strip()]


def option_items(name: str, text: str, source: Any) -> list[Item]:
    """One value given for option `name`: split if the option is a list, whole otherwise."""
    return split_items(text, source) if OPTIONS[name].is_list else [Item(text, source)]


def parse_cidr(item: Item) -> Cidr:
    """An IPv4 or IPv6 CIDR; whether IPv6 is allowed is build_config's call (--ip-family)."""
    try:
        return cidr.parse(item.text)
    except ValueError as exc:
        kind = "an IPv6" if ":" in item.text else "an IPv4"
        raise ConfigError(item.source, item.text, f"not {kind} CIDR: {exc}") from None


def item_texts(items: Sequence[Item]) -> Sequence[str]:
    """The items' texts; a list read from a document (sources.documents.ListItems) has them
    without making its Items."""
    texts = getattr(items, "texts", None)
    return texts if texts is not None else [item.text for item in items]


def parse_cidrs(items: Sequence[Item]) -> Iterable[Cidr]:
    """A CIDR list: in bulk when every value is a valid IPv4 CIDR (a MeshConfig can list 50,000),
    else one by one, which names the first bad value."""
    parsed = cidr.parse_many(item_texts(items))
    return map(parse_cidr, items) if parsed is None else parsed


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


def parse_pod_ip6(item: Item) -> ipaddress.IPv6Address:
    """The pod's IPv6 address: one a packet can be DNATed to (no zone, not ::, ::1, multicast,
    link-local or IPv4-mapped)."""
    try:
        address = ipaddress.IPv6Address(item.text)
    except ValueError as exc:
        raise ConfigError(item.source, item.text, f"not an IPv6 address: {exc}") from None
    if address.scope_id is not None:
        raise ConfigError(item.source, item.text, "not a pod address: zone ids are not allowed")
    if any((address.is_unspecified, address.is_loopback, address.is_multicast, address.is_link_local,
            address.ipv4_mapped)):
        raise ConfigError(item.source, item.text, "not a pod address: unspecified, loopback, multicast, "
                          "link-local and IPv4-mapped addresses are refused")
    return address


def parse_pod_ips(item: Item) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv6Address | None]:
    """`--pod-ip`'s value: up to one IPv4 and one IPv6 address, comma-separated, in either order
    (POD_IPS, the downward API's status.podIPs, is written this way)."""
    found: dict[int, Any] = {}
    for part in split_items(item.text, item.source) or [item]:
        address = parse_pod_ip6(part) if ":" in part.text else parse_pod_ip(part)
        if address.version in found:
            raise ConfigError(item.source, item.text,
                              f"more than one IPv{address.version} address: give at most one IPv4 and one IPv6")
        found[address.version] = address
    return found.get(4), found.get(6)


def parse_ip_family(item: Item) -> str:
    family = item.text.lower()
    if family not in IP_FAMILIES:
        raise ConfigError(item.source, item.text, "must be 'ipv4' or 'dual'")
    return family


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


class Mesh(NamedTuple):
    """Where FSM's MeshConfig holds an option: `spec.<section>.<field>`, items of `type`."""

    section: str
    field: str
    type: type


# FSM's merge of a MeshConfig list with the pod's annotation (MergeIPRangeLists puts the pod's
# ranges first, MergePortExclusionLists the global ports first).
POD_FIRST, GLOBAL_FIRST = "pod first", "global first"


class Option(NamedTuple):
    """Everything about one option, written once: how its raw items become one `Config` field,
    how the CLI shows it, and where FSM's objects hold it. The CLI flags, the environment, the
    config file, MeshConfig, annotations, `nftredir config` and the README's table all come from
    OPTIONS; the default is the Config field's."""

    field: str
    parse: Callable[[Item], Any]
    is_list: bool
    metavar: str
    help: str
    mesh: Mesh | None = None
    annotation: str | None = None  # the pod annotation FSM reads it from
    merge: str | None = None  # POD_FIRST or GLOBAL_FIRST when both MeshConfig and the pod give it
    also_env: tuple[str, ...] = ()  # variables read too, in order (the downward API's names)
    parse_list: Callable[[Sequence[Item]], Iterable[Any]] | None = None  # a list's bulk `parse`

    @property
    def default(self) -> Any:
        return Config.__dataclass_fields__[self.field].default

    def default_text(self) -> str | None:
        """The default as a user would type it, or None when there is none."""
        value = self.default
        if value is None or value == ():
            return None
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


_FLOMESH = "flomesh.io/"

# The option names are the flag names without '--'; other sources map onto these.
OPTIONS: dict[str, Option] = {
    "outbound-ip-range-exclusion-list": Option(
        "outbound_ip_range_exclusions", parse_cidr, True, "CIDR,...",
        "Outbound ranges never sent to the sidecar (IPv6 ones with --ip-family dual).",
        Mesh("traffic", "outboundIPRangeExclusionList", str), _FLOMESH + "outbound-ip-range-exclusion-list", POD_FIRST,
        parse_list=parse_cidrs),
    "outbound-ip-range-inclusion-list": Option(
        "outbound_ip_range_inclusions", parse_cidr, True, "CIDR,...",
        "If set, only traffic to these outbound ranges goes to the sidecar (a family with none is not redirected); "
        "exclusions still win.",
        Mesh("traffic", "outboundIPRangeInclusionList", str), _FLOMESH + "outbound-ip-range-inclusion-list", POD_FIRST,
        parse_list=parse_cidrs),
    "outbound-port-exclusion-list": Option(
        "outbound_port_exclusions", parse_port, True, "PORT,...", "Outbound TCP ports never sent to the sidecar.",
        Mesh("traffic", "outboundPortExclusionList", int), _FLOMESH + "outbound-port-exclusion-list", GLOBAL_FIRST),
    "inbound-port-exclusion-list": Option(
        "inbound_port_exclusions", parse_port, True, "PORT,...", "Inbound TCP ports never sent to the sidecar.",
        Mesh("traffic", "inboundPortExclusionList", int), _FLOMESH + "inbound-port-exclusion-list", GLOBAL_FIRST),
    "network-interface-exclusion-list": Option(
        "network_interface_exclusions", parse_ifname, True, "IFACE,...",
        "Interfaces whose traffic bypasses the sidecar both ways; a trailing '+' matches a prefix, as in iptables.",
        Mesh("traffic", "networkInterfaceExclusionList", str)),
    "local-proxy-mode": Option(
        "local_proxy_mode", parse_mode, False, "MODE",
        "localhost or podip: in podip mode the sidecar's calls to 127.0.0.1 (and ::1) are sent to the pod IP.",
        Mesh("sidecar", "localProxyMode", str)),
    "ip-family": Option(
        "ip_family", parse_ip_family, False, "FAMILY",
        "ipv4 (FSM's behaviour): only IPv4 TCP is redirected, IPv6 is untouched; "
        "dual: IPv6 TCP too, with the same rules (::1 for 127.0.0.1)."),
    "pod-ip": Option(
        "pod_ip", parse_pod_ips, False, "IP[,IP6]",
        "The pod's addresses, read only in podip mode: its IPv4 address, and in dual mode its IPv6 address too.",
        also_env=("POD_IPS", "POD_IP")),
    "table": Option("table", parse_table, False, "NAME", "The nftables table nftredir owns (family inet)."),
    "proxy-uid": Option("proxy_uid", parse_uid, False, "UID", "UID the sidecar runs as; its traffic is never redirected."),
    "proxy-admin-port": Option("proxy_admin_port", parse_port, False, "PORT", "Sidecar admin port."),
    "proxy-outbound-port": Option(
        "proxy_outbound_port", parse_port, False, "PORT", "Sidecar outbound listener, where outbound TCP is redirected."),
    "proxy-inbound-port": Option(
        "proxy_inbound_port", parse_port, False, "PORT", "Sidecar inbound listener, where inbound TCP is redirected."),
    "prometheus-port": Option("prometheus_port", parse_port, False, "PORT", "Sidecar Prometheus listener, not redirected inbound."),
    "probe-ports": Option("probe_ports", parse_port, True, "PORT,...", "Sidecar probe listeners, not redirected inbound."),
    "healthcheck-port": Option(
        "healthcheck_port", parse_port, False, "PORT", "fsm-healthcheck port, which bypasses the sidecar inbound."),
}


def _unique(values: Iterable[object]) -> tuple:
    """Drop duplicates, keeping the first occurrence (FSM's merge does the same)."""
    return tuple(dict.fromkeys(values))


def _refuse_ipv6_ranges(raw: Mapping[str, Sequence[Item]], values: Mapping[str, object]) -> None:
    """In ipv4 mode (FSM's) an IPv6 range would be dropped silently: refuse the first one."""
    for name in CIDR_OPTIONS:
        if any(c.version == 6 for c in values.get(OPTIONS[name].field, ())):  # type: ignore[attr-defined]
            item = next(item for item in raw[name] if ":" in item.text)
            raise ConfigError(item.source, item.text, "an IPv6 range: IPv6 is redirected only with --ip-family dual")


def _pod_ips(raw: Mapping[str, Sequence[Item]], values: dict[str, object], sources: dict[str, Any]) -> None:
    """podip mode's pod addresses: the IPv4 one always, the IPv6 one in dual mode."""
    dual = values.get("ip_family") == "dual"
    wanted = "IPv4 and IPv6 addresses" if dual else "IPv4 address"
    given = raw.get("pod-ip")
    if not given:
        mode = raw["local-proxy-mode"][-1]
        raise ConfigError(
            mode.source, mode.text, f"podip mode needs the pod's {wanted}: pass --pod-ip or set POD_IPS or POD_IP"
        )
    # Repeated (`--pod-ip 10.0.0.5 --pod-ip fd00::5`), the last address of each family counts.
    found = {address.version: (address, item) for item in given for address in parse_pod_ips(item) if address}
    item = given[-1]
    if 4 not in found:
        raise ConfigError(item.source, item.text, f"not an IPv4 address: podip mode needs the pod's {wanted}")
    if dual and 6 not in found:
        raise ConfigError(
            item.source, item.text,
            "no IPv6 address: podip mode with --ip-family dual needs the pod's IPv6 address too "
            "(--pod-ip IPV4,IPV6 or POD_IPS from the downward API's status.podIPs)",
        )
    values["pod_ip"], sources["pod_ip"] = found[4][0], found[4][1].source
    if dual:
        values["pod_ip6"], sources["pod_ip6"] = found[6][0], found[6][1].source


def build_config(raw: Mapping[str, Sequence[Item]]) -> Config:
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
            continue  # only read in podip mode, below: POD_IP may be anything in a localhost-mode pod
        if option.is_list:
            values[option.field] = _unique(option.parse_list(items) if option.parse_list else map(option.parse, items))
        elif items:
            values[option.field] = option.parse(items[-1])
        if items:
            sources[option.field] = items[-1].source
    if values.get("ip_family", "ipv4") == "ipv4":
        _refuse_ipv6_ranges(raw, values)
    if values.get("local_proxy_mode") == "podip":
        _pod_ips(raw, values, sources)
    return Config(**values, sources=sources)
