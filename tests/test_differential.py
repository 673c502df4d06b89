"""Differential kernel tests: nftredir against FSM's own iptables rules, probe for probe.

For each scenario two identical pod/world topologies are built (tests/netlab.py). One gets
FSM's script (`render --format iptables`, loaded with `iptables-restore --noflush`, nf_tables
backend), the other `nftredir apply` with the same options, run as a user would. The same
probes go to both, and the verdicts (which listener answered, on which local address, from
which peer, with which original destination) must be identical. The only thing that differs
between the two sides is the ruleset.

The breakage tests at the end load deliberately wrong variants of nftredir's ruleset and
require the same comparison to fail on the probes each mistake should show.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from nftredir.render import render
from tests import netlab as nl
from tests.conftest import Netns as CliNetns
from tests.netlab import Probe, Verdict
from tests.scenarios import as_flags, config_of

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables-restore") is None,
    reason="needs root, iproute2 and iptables-restore",
)

APP = 8080
APP_PORTS = (APP, 9090, 7070)  # 9090 and 7070 are the inbound exclusions below
APP_UID = 1000
UIDS = (0, APP_UID, nl.SIDECAR_UID)
PROXY_PORTS = (nl.ADMIN_PORT, nl.PROMETHEUS_PORT, *nl.HEALTH_PORTS, nl.HEALTHCHECK_PORT)

# Outbound destinations the lists are about; all routed out of eth0 (the default route).
PLAIN = nl.WORLD_DST  # in no list
EXCLUDED, EXCLUDED_NET = "198.51.100.7", "198.51.100.0/24"
INCLUDED, INCLUDED_NET = "100.64.0.7", "100.64.0.0/16"
BOTH, BOTH_NET = "100.64.5.5", "100.64.5.0/24"  # BOTH_NET is excluded, and inside INCLUDED_NET
OUT_PORTS = (6379, 5432)
IN_PORTS = (7070, 9090)


def _filler(second_octet: int, count: int) -> list[str]:
    """`count` /32s that match no probe; every other address, so nft cannot merge them."""
    return [f"10.{second_octet}.{i // 100}.{i % 100 * 2 + 1}/32" for i in range(count)]


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
}

Case = tuple[str, int, Probe, str]  # (label, uid, probe, side: "pod" or "world")


def cases() -> list[Case]:
    """The same probes for every scenario: outbound from the pod as three UIDs, inbound
    from the world on both interfaces."""
    outbound = [
        Probe(PLAIN, 80), Probe(EXCLUDED, 80), Probe(INCLUDED, 80), Probe(BOTH, 80),
        *(Probe(INCLUDED, port) for port in OUT_PORTS),
        Probe(PLAIN, nl.ADMIN_PORT), Probe("127.0.0.1", nl.ADMIN_PORT),
        Probe("127.0.0.1", APP), Probe("127.0.0.2", APP),
        Probe(nl.POD_ETH0, APP), Probe(nl.POD_ETH1, APP),
        Probe(nl.ETH1_DST, 443),  # out of eth1
        Probe(PLAIN, 53, "udp"), Probe(INCLUDED, 53, "udp"),
    ]
    inbound = [
        *(Probe(dst, port) for dst in (nl.POD_ETH0, nl.POD_ETH1) for port in (*APP_PORTS, *PROXY_PORTS)),
        Probe(nl.POD_ETH0, APP, "udp"),
    ]
    iface = {nl.POD_ETH0: "eth0", nl.POD_ETH1: "eth1"}
    return [(f"out uid={uid} {p}", uid, p, "pod") for uid in UIDS for p in outbound] + [
        (f"in {iface[p.dst]} {p}", 0, p, "world") for p in inbound
    ]


def probe_lab(lab: nl.PodWorld) -> list[Verdict]:
    ns = {"pod": lab.pod, "world": lab.world}
    verdicts = nl.probe_cases([(ns[side], uid, p) for _, uid, p, side in cases()], timeout=2.0)
    return [v.masked() for v in verdicts]


def mismatches(fsm: list[Verdict], nftredir: list[Verdict]) -> list[tuple[str, Verdict, Verdict]]:
    return [(label, f, n) for (label, *_), f, n in zip(cases(), fsm, nftredir, strict=True) if f != n]


def assert_same(fsm: list[Verdict], nftredir: list[Verdict]) -> None:
    bad = mismatches(fsm, nftredir)
    table = nl.format_mismatches(bad).replace("expected", "FSM     ", 1).replace("actual", "nftredir", 1)
    assert not bad, f"{len(bad)} of {len(fsm)} probes differ:\n{table}"


def load_fsm(lab: nl.PodWorld, options: dict[str, str]) -> None:
    lab.pod.run(["iptables-restore", "--noflush"], input=render(config_of(**options), "iptables"))


def load_nftredir(lab: nl.PodWorld, options: dict[str, str]) -> None:
    result = CliNetns(lab.pod.name).nftredir("apply", *as_flags(options))
    assert result.returncode == 0, result.stderr


def in_parallel(*calls: Callable[[], list[Verdict]]) -> list[list[Verdict]]:
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


@contextlib.contextmanager
def two_labs() -> Iterator[tuple[nl.PodWorld, nl.PodWorld]]:
    with nl.pod_world(APP_PORTS) as fsm_lab, nl.pod_world(APP_PORTS) as nftredir_lab:
        yield fsm_lab, nftredir_lab


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nftredir_answers_every_probe_as_fsm_does(scenario: str) -> None:
    options = SCENARIOS[scenario]
    with two_labs() as (fsm_lab, nftredir_lab):
        load_fsm(fsm_lab, options)
        load_nftredir(nftredir_lab, options)
        fsm, nftredir = in_parallel(lambda: probe_lab(fsm_lab), lambda: probe_lab(nftredir_lab))
    # The probes must mean something: FSM's rules redirected some and let others through.
    assert {"pod:15001", "world"} <= {v.listener for v in fsm} or scenario == "interface_wildcard"
    assert_same(fsm, nftredir)


# --------------------------------------------------------------------------- breakages
# Each breakage edits the nft text nftredir renders for EVERY_LIST and names probes whose
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


BREAKAGES: dict[str, tuple[Callable[[str], str], set[str]]] = {
    "drop the UID 1500 bypass": (
        lambda t: _drop_line(t, "meta skuid 1500 counter return"),
        {f"out uid=1500 tcp {INCLUDED}:80"},
    ),
    "drop the 15904 return": (
        lambda t: _drop_line(t, "tcp dport 15904 counter return"),
        {f"in eth0 tcp {nl.POD_ETH0}:15904"},
    ),
    "swap the exclusion and inclusion order": (
        lambda t: _swap_lines(t, "daddr @outbound_ip_range_exclusions", "daddr @outbound_ip_range_inclusions"),
        {f"out uid={uid} tcp {BOTH}:80" for uid in (0, APP_UID)},
    ),
    "redirect UDP too": (
        lambda t: _replace(t, ("meta l4proto tcp", "meta l4proto { tcp, udp }")),
        {f"out uid={APP_UID} udp {INCLUDED}:53", f"in eth0 udp {nl.POD_ETH0}:{APP}"},
    ),
    "exempt 127.0.0.0/8 instead of 127.0.0.1/32": (
        lambda t: _replace(t, ("ip daddr != 127.0.0.1 ", "ip daddr != 127.0.0.0/8 "),
                           ("ip daddr 127.0.0.1 ", "ip daddr 127.0.0.0/8 ")),
        {"out uid=1500 tcp 127.0.0.2:8080"},
    ),
}


@pytest.fixture(scope="module")
def breakage_lab() -> Iterator[tuple[list[Verdict], nl.PodWorld]]:
    """FSM's verdicts for EVERY_LIST, and a second pod world to load broken rulesets into."""
    with two_labs() as (fsm_lab, nftredir_lab):
        load_fsm(fsm_lab, EVERY_LIST)
        yield probe_lab(fsm_lab), nftredir_lab


def test_the_unbroken_ruleset_loaded_with_nft_matches_fsm(breakage_lab) -> None:
    fsm, lab = breakage_lab
    lab.pod.run(["nft", "-f", "-"], input=render(config_of(**EVERY_LIST)))
    assert_same(fsm, probe_lab(lab))


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_comparison_catches(breakage: str, breakage_lab) -> None:
    fsm, lab = breakage_lab
    mutate, must_differ = BREAKAGES[breakage]
    text = render(config_of(**EVERY_LIST))
    broken = mutate(text)
    assert broken != text
    lab.pod.run(["nft", "-f", "-"], input=broken)  # replaces table inet nftredir
    nftredir = probe_lab(lab)
    with pytest.raises(AssertionError, match="probes differ"):
        assert_same(fsm, nftredir)
    bad = mismatches(fsm, nftredir)
    assert must_differ <= {label for label, *_ in bad}, nl.format_mismatches(bad)
