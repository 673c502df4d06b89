"""Differential kernel tests: nftredir against FSM's own iptables rules, probe for probe.

For each scenario two identical pod/world topologies (lab/netlab.py; built once, and reset
to no ruleset and no tracked connection before each scenario) are used. One gets
FSM's script (`render --format iptables`, loaded with `iptables-restore --noflush`, nf_tables
backend; in dual mode also its IPv6 counterpart under `ip6tables-restore --noflush`), the other
`nftredir apply` with the same options, run as a user would. The same probes go to both, and
the verdicts (which listener answered, on which local address, from which peer, with which
original destination) must be identical. The only thing that differs between the two sides is
the ruleset.

Every scenario probes both families: in ipv4 mode (FSM's) IPv6 must pass untouched on both
sides, in dual mode (`--ip-family dual`) IPv6 must get the IPv4 rules' meaning. The probing
identities have gids unlike their uids (the app's gid is the sidecar's uid), so a rule that
matched the gid where it should match the uid would answer differently. One scenario changes
every constant (the proxy UID and every sidecar port), so a default written into the
templates answers differently too.

The breakage tests at the end load deliberately wrong variants of nftredir's ruleset and
require the same comparison to fail on the probes each mistake should show.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import os
import shutil
from collections.abc import Callable, Iterator
from functools import cache

import pytest

from nftredir.render import IP6TABLES_HEADER, render
from lab import netlab as nl
from lab.netlab import Probe, Verdict
from tests.scenarios import as_flags, config_of

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("ip6tables-restore") is None,
    reason="needs root, iproute2, iptables-restore and ip6tables-restore",
)

APP = 8080
APP_UID = 1000
# Every constant changed (scenario "every_constant"): the defaults then belong to nobody.
CUSTOM = {
    "proxy_uid": "1700", "proxy_admin_port": "16000", "proxy_outbound_port": "16001",
    "proxy_inbound_port": "16003", "prometheus_port": "16010", "probe_ports": "16901,16902,16903",
    "healthcheck_port": "16904",
}
CUSTOM_UID = int(CUSTOM["proxy_uid"])
CUSTOM_PORTS = tuple(int(p) for key, text in CUSTOM.items() if key != "proxy_uid" for p in text.split(","))
APP_PORTS = (APP, 9090, 7070)  # 9090 and 7070 are the inbound exclusions below
PROXY_PORTS = (nl.ADMIN_PORT, nl.PROMETHEUS_PORT, *nl.HEALTH_PORTS, nl.HEALTHCHECK_PORT)
LISTENING = (*APP_PORTS, *CUSTOM_PORTS)  # the pod listens on the default proxy ports anyway
# (uid, gid): root; the app with the sidecar's uid as its gid; the sidecar, and the custom
# scenario's sidecar, with gids of their own.
IDENTITIES = ((0, 0), (APP_UID, nl.SIDECAR_UID), (nl.SIDECAR_UID, 2000), (CUSTOM_UID, 2000))

# Outbound destinations the lists are about; all routed out of eth0 (the default route).
PLAIN = nl.WORLD_DST  # in no list
EXCLUDED, EXCLUDED_NET = "198.51.100.7", "198.51.100.0/24"
INCLUDED, INCLUDED_NET = "100.64.0.7", "100.64.0.0/16"
BOTH, BOTH_NET = "100.64.5.5", "100.64.5.0/24"  # BOTH_NET is excluded, and inside INCLUDED_NET
PLAIN6 = nl.WORLD6_DST
EXCLUDED6, EXCLUDED6_NET = "2001:db8:51::7", "2001:db8:51::/48"
INCLUDED6, INCLUDED6_NET = "2001:db8:6400::7", "2001:db8:6400::/40"
BOTH6, BOTH6_NET = "2001:db8:6405::5", "2001:db8:6405::/48"  # excluded, and inside INCLUDED6_NET
OUT_PORTS = (6379, 5432)
IN_PORTS = (7070, 9090)


def edges(net: str) -> list[str]:
    """The addresses at a range's edges: just below, first, last, just above."""
    block = ipaddress.ip_network(net)
    first, last = block.network_address, block.broadcast_address
    return [str(first - 1), str(first), str(last), str(last + 1)]


def _filler(second_octet: int, count: int) -> list[str]:
    """`count` /32s that match no probe; every other address, so nft cannot merge them."""
    return [f"10.{second_octet}.{i // 100}.{i % 100 * 2 + 1}/32" for i in range(count)]


def _filler6(group: int, count: int) -> list[str]:
    """The same for IPv6: `count` /128s, every other address."""
    return [f"2001:db8:ff{group:02x}::{i * 2 + 1:x}/128" for i in range(count)]


EVERY_LIST = {
    "outbound_ip_range_exclusion_list": f"{EXCLUDED_NET},{BOTH_NET}",
    "outbound_ip_range_inclusion_list": INCLUDED_NET,
    "outbound_port_exclusion_list": ",".join(map(str, OUT_PORTS)),
    "inbound_port_exclusion_list": ",".join(map(str, IN_PORTS)),
    "network_interface_exclusion_list": "eth1",
}
PODIP = {"local_proxy_mode": "podip", "pod_ip": nl.POD_ETH0}

SCENARIOS: dict[str, dict[str, str]] = {
    "no_lists": {},
    **{name: {name + "_list": EVERY_LIST[name + "_list"]} for name in (
        "outbound_ip_range_exclusion", "outbound_ip_range_inclusion", "outbound_port_exclusion",
        "inbound_port_exclusion", "network_interface_exclusion")},
    "all_lists": EVERY_LIST,
    "overlapping_cidrs": {
        "outbound_ip_range_exclusion_list": f"198.51.100.0/25,{EXCLUDED_NET},{BOTH_NET},{BOTH}/32,{BOTH_NET}",
        "outbound_ip_range_inclusion_list": f"100.64.0.0/24,{INCLUDED_NET},{INCLUDED}/32,100.0.0.0/8",
    },
    # Inclusions covering loopback, the pod's own subnet and the eth1-only range: the lo and
    # sidecar rules still come first.
    "inclusions_only": {
        "outbound_ip_range_inclusion_list": f"{INCLUDED_NET},127.0.0.0/8,10.99.0.0/24,{nl.ETH1_ONLY_NET}",
    },
    "interface_wildcard": {"network_interface_exclusion_list": "eth+"},
    "podip": PODIP,
    "podip_all_lists": {**EVERY_LIST, **PODIP},
    # 1,000 CIDRs per list, the probed address matching only the last one.
    "long_lists": {
        "outbound_ip_range_exclusion_list": ",".join([*_filler(200, 999), EXCLUDED_NET]),
        "outbound_ip_range_inclusion_list": ",".join([*_filler(201, 999), INCLUDED_NET]),
    },
    "every_constant": {**EVERY_LIST, **PODIP, **CUSTOM},
}

# The IPv6 lists each scenario gets in dual mode, appended to its IPv4 ones.
IPV6_LISTS: dict[str, dict[str, str]] = {
    "outbound_ip_range_exclusion": {"outbound_ip_range_exclusion_list": f"{EXCLUDED6_NET},{BOTH6_NET}"},
    "outbound_ip_range_inclusion": {"outbound_ip_range_inclusion_list": INCLUDED6_NET},
    "all_lists": {"outbound_ip_range_exclusion_list": f"{EXCLUDED6_NET},{BOTH6_NET}",
                  "outbound_ip_range_inclusion_list": INCLUDED6_NET},
    "overlapping_cidrs": {
        "outbound_ip_range_exclusion_list": f"2001:db8:51::/49,{EXCLUDED6_NET},{BOTH6_NET},{BOTH6}/128,2001:db8:51:8000::/49",
        "outbound_ip_range_inclusion_list": f"2001:db8:6400::/48,{INCLUDED6_NET},{INCLUDED6}/128,2001:db8:6000::/36",
    },
    "inclusions_only": {"outbound_ip_range_inclusion_list": f"{INCLUDED6_NET},::1/128,fd99::/64,{nl.ETH1_ONLY_NET6}"},
    "podip_all_lists": {"outbound_ip_range_exclusion_list": f"{EXCLUDED6_NET},{BOTH6_NET}",
                        "outbound_ip_range_inclusion_list": INCLUDED6_NET},
    "long_lists": {
        "outbound_ip_range_exclusion_list": ",".join([*_filler6(0, 999), EXCLUDED6_NET]),
        "outbound_ip_range_inclusion_list": ",".join([*_filler6(1, 999), INCLUDED6_NET]),
    },
    "every_constant": {"outbound_ip_range_exclusion_list": f"{EXCLUDED6_NET},{BOTH6_NET}",
                       "outbound_ip_range_inclusion_list": INCLUDED6_NET},
}


def dual(options: dict[str, str], ipv6_lists: dict[str, str]) -> dict[str, str]:
    """The scenario in dual mode: its IPv6 lists added, the pod's IPv6 address in podip mode."""
    merged = {**options, "ip_family": "dual"}
    for name, text in ipv6_lists.items():
        merged[name] = ",".join(filter(None, [options.get(name, ""), text]))
    if "pod_ip" in options:
        merged["pod_ip"] = f"{options['pod_ip']},{nl.POD6_ETH0}"
    return merged


for _name, _options in list(SCENARIOS.items()):
    SCENARIOS[f"dual_{_name}"] = dual(_options, IPV6_LISTS.get(_name, {}))
# Inclusions of one family only: once any range is included, the other family is not redirected.
SCENARIOS["dual_ipv4_inclusions_only"] = dual({"outbound_ip_range_inclusion_list": INCLUDED_NET}, {})
SCENARIOS["dual_ipv6_inclusions_only"] = dual({}, {"outbound_ip_range_inclusion_list": INCLUDED6_NET})

Case = tuple[str, int, int, Probe, str]  # (label, uid, gid, probe, side: "pod" or "world")


@cache
def cases(custom: bool = False) -> list[Case]:
    """The same probes for every scenario: outbound from the pod as every identity, inbound
    from the world on both interfaces, both families; with the custom constants' UID and
    ports too where a scenario sets them (`custom`)."""
    outbound = [
        Probe(PLAIN, 80), Probe(EXCLUDED, 80), Probe(INCLUDED, 80), Probe(BOTH, 80),
        *(Probe(INCLUDED, port) for port in OUT_PORTS),
        Probe(PLAIN, nl.ADMIN_PORT), Probe("127.0.0.1", nl.ADMIN_PORT),
        Probe("127.0.0.1", APP), Probe("127.0.0.2", APP),
        Probe(nl.POD_ETH0, APP), Probe(nl.POD_ETH1, APP),
        Probe(nl.ETH1_DST, 443),  # out of eth1
        Probe(PLAIN, 53, "udp"), Probe(INCLUDED, 53, "udp"),
        Probe(PLAIN6, 80), Probe(BOTH6, 80),
        *(Probe(dst, 80) for net in (EXCLUDED6_NET, INCLUDED6_NET, BOTH6_NET) for dst in edges(net)),
        *(Probe(INCLUDED6, port) for port in OUT_PORTS),
        Probe(PLAIN6, nl.ADMIN_PORT), Probe("::1", nl.ADMIN_PORT), Probe("::1", APP),
        Probe(nl.POD6_ETH0, APP), Probe(nl.POD6_ETH1, APP),
        Probe(nl.ETH1_DST6, 443),  # out of eth1
        Probe(PLAIN6, 53, "udp"), Probe(INCLUDED6, 53, "udp"),
    ]
    pod_addresses = (nl.POD_ETH0, nl.POD_ETH1, nl.POD6_ETH0, nl.POD6_ETH1)
    inbound = [
        *(Probe(dst, port) for dst in pod_addresses
          for port in (*APP_PORTS, *PROXY_PORTS, *(CUSTOM_PORTS if custom else ()))),
        Probe(nl.POD_ETH0, APP, "udp"), Probe(nl.POD6_ETH0, APP, "udp"),
    ]
    iface = {nl.POD_ETH0: "eth0", nl.POD_ETH1: "eth1", nl.POD6_ETH0: "eth0", nl.POD6_ETH1: "eth1"}
    identities = IDENTITIES if custom else [i for i in IDENTITIES if i[0] != CUSTOM_UID]
    return [(f"out uid={uid} {p}", uid, gid, p, "pod") for uid, gid in identities for p in outbound] + [
        (f"in {iface[p.dst]} {p}", 0, 0, p, "world") for p in inbound
    ]


def is_custom(scenario: str) -> bool:
    return "proxy_uid" in SCENARIOS[scenario]


def probe_lab(lab: nl.PodWorld, scenario: str) -> list[Verdict]:
    ns = {"pod": lab.pod, "world": lab.world}
    probes = [(ns[side], uid, p, gid) for _, uid, gid, p, side in cases(is_custom(scenario))]
    return [v.masked() for v in nl.probe_cases(probes)]


def mismatches(scenario: str, fsm: list[Verdict], nftredir: list[Verdict]) -> list[tuple[str, Verdict, Verdict]]:
    labelled = zip(cases(is_custom(scenario)), fsm, nftredir, strict=True)
    return [(label, f, n) for (label, *_), f, n in labelled if f != n]


def assert_same(scenario: str, fsm: list[Verdict], nftredir: list[Verdict]) -> None:
    bad = mismatches(scenario, fsm, nftredir)
    table = nl.format_mismatches(bad).replace("expected", "FSM     ", 1).replace("actual", "nftredir", 1)
    assert not bad, f"{len(bad)} of {len(fsm)} probes differ:\n{table}"


def load_fsm(lab: nl.PodWorld, options: dict[str, str]) -> None:
    """FSM's script under iptables-restore, and in dual mode its IPv6 counterpart under
    ip6tables-restore: the two parts of `render --format iptables`, split as a user would."""
    text = render(config_of(**options), "iptables")
    ipv4, _, ipv6 = text.partition(IP6TABLES_HEADER + "\n")
    lab.pod.run(["iptables-restore", "--noflush"], input=ipv4)
    if options.get("ip_family") == "dual":
        assert ipv6.startswith("*nat\n"), text
        lab.pod.run(["ip6tables-restore", "--noflush"], input=ipv6)
    else:
        assert not ipv6


def load_nftredir(lab: nl.PodWorld, options: dict[str, str]) -> None:
    result = lab.pod.nftredir("apply", *as_flags(options))
    assert result.returncode == 0, result.stderr


def in_parallel(*calls: Callable[[], object]) -> list:
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


@pytest.fixture(scope="module")
def labs() -> Iterator[tuple[nl.PodWorld, nl.PodWorld]]:
    """Two pod worlds, built side by side: FSM's and nftredir's."""
    with contextlib.ExitStack() as stack:
        worlds = [nl.pod_world(LISTENING), nl.pod_world(LISTENING)]
        with concurrent.futures.ThreadPoolExecutor(len(worlds)) as pool:
            futures = [pool.submit(world.__enter__) for world in worlds]
        for world, future in zip(worlds, futures):
            if future.exception() is None:  # whichever was built is torn down, whatever failed
                stack.push(world.__exit__)
        yield tuple(future.result() for future in futures)


_fsm_cache: dict[str, list[Verdict]] = {}


def fsm_verdicts(lab: nl.PodWorld, scenario: str) -> list[Verdict]:
    """FSM's verdicts for a scenario (probed once per module run)."""
    if scenario not in _fsm_cache:
        lab.reset()
        load_fsm(lab, SCENARIOS[scenario])
        _fsm_cache[scenario] = probe_lab(lab, scenario)
    return _fsm_cache[scenario]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nftredir_answers_every_probe_as_fsm_does(scenario: str, labs) -> None:
    options = SCENARIOS[scenario]
    fsm_lab, nftredir_lab = labs
    nftredir_lab.reset()
    load_nftredir(nftredir_lab, options)
    fsm, nftredir = in_parallel(lambda: fsm_verdicts(fsm_lab, scenario), lambda: probe_lab(nftredir_lab, scenario))
    # The probes must mean something: FSM's rules NATed some IPv4 connections to a pod listener,
    # IPv6 ones exactly in dual mode, and let others through to the world.
    natted = {v.local.startswith("[") for v in fsm if v.listener.startswith("pod:") and v.orig_dst and v.local}
    assert natted == ({False, True} if scenario.startswith("dual_") else {False}), scenario
    assert "world" in {v.listener for v in fsm}
    assert_same(scenario, fsm, nftredir)


def test_the_custom_constants_leave_no_default_in_the_ruleset() -> None:
    """What no probe can show (the admin-port ACCEPT after the REDIRECT never matches, FSM's
    quirk): with every constant changed, no default is left in any format."""
    config = config_of(**SCENARIOS["dual_every_constant"])
    defaults = (nl.SIDECAR_UID, nl.OUTBOUND_PORT, nl.INBOUND_PORT, *PROXY_PORTS)
    for fmt in ("nft", "json", "iptables"):
        text = render(config, fmt)
        assert not [d for d in defaults if str(d) in text], fmt


# --------------------------------------------------------------------------- breakages
# Each breakage edits the nft text nftredir renders for a scenario and names probes whose
# verdict it must change. The comparison against FSM has to fail on at least those.


def _drop_line(text: str, needle: str) -> str:
    lines = text.splitlines(keepends=True)
    hits = [line for line in lines if needle in line]
    assert len(hits) == 1, (needle, hits)
    return "".join(line for line in lines if line is not hits[0])


def _swap_lines(text: str, first: str, second: str) -> str:
    lines = text.splitlines(keepends=True)
    i, j = (next(k for k, line in enumerate(lines) if needle in line) for needle in (first, second))
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def _replace(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    return text


OUT_INCLUDED = {f"out uid={uid} tcp {INCLUDED}:80" for uid in (nl.SIDECAR_UID, APP_UID)}

# name -> (scenario, mutation of the nft text, labels of probes that must differ)
BREAKAGES: dict[str, tuple[str, Callable[[str], str], set[str]]] = {
    "drop the UID 1500 bypass": (
        "all_lists", lambda t: _drop_line(t, "meta skuid 1500 counter return"),
        {f"out uid=1500 tcp {INCLUDED}:80"},
    ),
    "drop the 15904 return": (
        "all_lists", lambda t: _drop_line(t, "tcp dport 15904 counter return"),
        {f"in eth0 tcp {nl.POD_ETH0}:15904"},
    ),
    "swap the exclusion and inclusion order": (
        "all_lists",
        lambda t: _swap_lines(t, "daddr @outbound_ip_range_exclusions", "daddr @outbound_ip_range_inclusions"),
        {f"out uid={uid} tcp {BOTH}:80" for uid in (0, APP_UID)},
    ),
    "redirect UDP too": (
        "all_lists", lambda t: _replace(t, ("meta l4proto tcp", "meta l4proto { tcp, udp }")),
        {f"out uid={APP_UID} udp {INCLUDED}:53", f"in eth0 udp {nl.POD_ETH0}:{APP}"},
    ),
    "exempt 127.0.0.0/8 instead of 127.0.0.1/32": (
        "all_lists",
        lambda t: _replace(t, ("ip daddr != 127.0.0.1 ", "ip daddr != 127.0.0.0/8 "),
                           ("ip daddr 127.0.0.1 ", "ip daddr 127.0.0.0/8 ")),
        {"out uid=1500 tcp 127.0.0.2:8080"},
    ),
    # The probing identities' gids are not their uids.
    "match the gid instead of the uid": (
        "all_lists", lambda t: _replace(t, ("meta skuid", "meta skgid")), OUT_INCLUDED,
    ),
    # ipv4 mode leaves IPv6 alone, as FSM does.
    "redirect IPv6 inbound in ipv4 mode": (
        "all_lists",
        lambda t: _replace(t, ("meta nfproto ipv4 meta l4proto tcp counter jump PROXY_INBOUND",
                               "meta l4proto tcp counter jump PROXY_INBOUND")),
        {f"in eth0 tcp [{nl.POD6_ETH0}]:{APP}"},
    ),
    "redirect IPv6 outbound in ipv4 mode": (
        "outbound_port_exclusion",
        lambda t: _replace(t, ("meta nfproto ipv4 meta l4proto tcp counter jump PROXY_OUTPUT",
                               "meta l4proto tcp counter jump PROXY_OUTPUT")),
        {f"out uid={APP_UID} tcp [{PLAIN6}]:80"},
    ),
    # Every constant changed: a default written into the templates answers differently.
    "hard-code the proxy UID 1500": (
        "every_constant", lambda t: _replace(t, (f"skuid {CUSTOM_UID}", "skuid 1500")),
        {f"out uid={CUSTOM_UID} tcp {INCLUDED}:80", f"out uid=1500 tcp {INCLUDED}:80"},
    ),
    "hard-code the healthcheck port 15904": (
        "every_constant", lambda t: _replace(t, ("dport 16904 ", "dport 15904 ")),
        {f"in eth0 tcp {nl.POD_ETH0}:16904", f"in eth0 tcp {nl.POD_ETH0}:15904"},
    ),
    "hard-code the Prometheus port 15010": (
        "every_constant", lambda t: _replace(t, ("dport 16010 ", "dport 15010 ")),
        {f"in eth0 tcp {nl.POD_ETH0}:16010", f"in eth0 tcp {nl.POD_ETH0}:15010"},
    ),
    # Dual mode: each IPv6 twin and set is needed, and the ranges' edges are exact.
    "dual: drop the IPv6 sidecar re-entry": (
        "dual_all_lists", lambda t: _drop_line(t, 'oifname "lo" ip6 daddr != ::1'),
        {f"out uid=1500 tcp [{nl.POD6_ETH0}]:{APP}", f"out uid=1500 tcp [{nl.POD6_ETH1}]:{APP}"},
    ),
    "dual: drop the IPv6 exclusions": (
        "dual_all_lists", lambda t: _drop_line(t, "ip6 daddr @outbound_ip6_range_exclusions"),
        {f"out uid={APP_UID} tcp [{BOTH6}]:80"},
    ),
    "dual: an IPv6 exclusion one address short": (
        "dual_outbound_ip_range_exclusion",
        lambda t: _replace(t, (EXCLUDED6_NET, "2001:db8:51::/49")),
        {f"out uid={APP_UID} tcp [{edges(EXCLUDED6_NET)[2]}]:80"},
    ),
    "dual: redirect IPv6 although only IPv4 ranges are included": (
        "dual_ipv4_inclusions_only", lambda t: _replace(t, ('counter return comment "not included"', 'counter jump PROXY_REDIRECT comment "not included"')),
        {f"out uid={APP_UID} tcp [{PLAIN6}]:80"},
    ),
    "dual: podip without the IPv6 DNAT": (
        "dual_podip", lambda t: _drop_line(t, "dnat ip6 to"),
        {f"out uid=1500 tcp [::1]:{APP}"},
    ),
}


def test_the_unbroken_ruleset_loaded_with_nft_matches_fsm(labs) -> None:
    fsm_lab, lab = labs
    lab.reset()
    lab.pod.run(["nft", "-f", "-"], input=render(config_of(**SCENARIOS["dual_all_lists"])))
    assert_same("dual_all_lists", fsm_verdicts(fsm_lab, "dual_all_lists"), probe_lab(lab, "dual_all_lists"))


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_comparison_catches(breakage: str, labs) -> None:
    scenario, mutate, must_differ = BREAKAGES[breakage]
    fsm_lab, lab = labs
    text = render(config_of(**SCENARIOS[scenario]))
    broken = mutate(text)
    assert broken != text
    lab.reset()
    lab.pod.run(["nft", "-f", "-"], input=broken)
    fsm, nftredir = in_parallel(lambda: fsm_verdicts(fsm_lab, scenario), lambda: probe_lab(lab, scenario))
    with pytest.raises(AssertionError, match="probes differ"):
        assert_same(scenario, fsm, nftredir)
    bad = mismatches(scenario, fsm, nftredir)
    assert must_differ <= {label for label, *_ in bad}, nl.format_mismatches(bad)
