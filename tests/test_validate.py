"""`nftredir validate` against the kernel: a pod namespace with routes through veths to a world
namespace that answers every TCP connection, the ruleset applied, then broken on purpose."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab import netlab
from tests.conftest import REPO

PREFIX = "nrva"
TIMEOUT = "3"  # generous: a positive check needs one loopback handshake within it, on any machine
EVERY_LIST = [
    "--outbound-ip-range-exclusion-list", "192.0.2.0/24",
    "--outbound-ip-range-inclusion-list", "10.0.0.0/8,198.51.100.0/24",
    "--outbound-port-exclusion-list", "6379",
    "--inbound-port-exclusion-list", "7070",
    "--network-interface-exclusion-list", "eth1",
]
PODIP = ["--local-proxy-mode", "podip", "--pod-ip", netlab.POD_ETH0]
# The world: every TCP connection to any address lands on one listener, so a probe that is not
# redirected really connects somewhere outside the pod.
WORLD_NFT = f"""table ip world {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        meta l4proto tcp redirect to :{netlab.WORLD_PORT}
    }}
}}
"""


@dataclasses.dataclass(frozen=True)
class Pod:
    ns: netlab.Netns

    def nftredir(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ns.argv([sys.executable, "-m", "nftredir", *argv]),
            capture_output=True, text=True, timeout=120, cwd=REPO,  # a hang guard only
        )

    def validate(self, *flags: str) -> tuple[int, dict]:
        result = self.nftredir("validate", "--format", "json", "--timeout", TIMEOUT, *flags)
        assert result.returncode in (0, 1), result.stderr
        assert result.stderr == ""
        return result.returncode, json.loads(result.stdout)

    def nft(self, *argv: str) -> str:
        return self.ns.run(["nft", *argv]).stdout

    def delete_rule(self, chain: str, comment: str) -> None:
        listing = json.loads(self.nft("-j", "-a", "list", "chain", "inet", "nftredir", chain))["nftables"]
        (handle,) = [o["rule"]["handle"] for o in listing if "rule" in o and o["rule"].get("comment") == comment]
        self.nft("delete", "rule", "inet", "nftredir", chain, "handle", str(handle))


@pytest.fixture
def pod() -> Iterator[Pod]:
    """pod (eth0: default route, eth1: 192.0.2.0/24) <-> world, as in lab/netlab.py."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(netlab.netns(netlab.unique_name("pod", PREFIX)))
        world = stack.enter_context(netlab.netns(netlab.unique_name("world", PREFIX)))
        for pod_if, world_if, pod_ip, world_ip in (
            ("eth0", "pod0", netlab.POD_ETH0, netlab.WORLD_ETH0),
            ("eth1", "pod1", netlab.POD_ETH1, netlab.WORLD_ETH1),
        ):
            ns.run(["ip", "link", "add", pod_if, "type", "veth", "peer", "name", world_if, "netns", world.name])
            ns.run(["ip", "addr", "add", f"{pod_ip}/24", "dev", pod_if])
            world.run(["ip", "addr", "add", f"{world_ip}/24", "dev", world_if])
            ns.run(["ip", "link", "set", pod_if, "up"])
            world.run(["ip", "link", "set", world_if, "up"])
        ns.run(["ip", "route", "add", "default", "via", netlab.WORLD_ETH0])
        ns.run(["ip", "route", "add", netlab.ETH1_ONLY_NET, "via", netlab.WORLD_ETH1])
        world.run(["nft", "-f", "-"], input=WORLD_NFT)
        stack.enter_context(netlab.serve(world, [netlab.Listener("world", netlab.WORLD_PORT)]))
        yield Pod(ns)


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def check(report: dict, name: str) -> dict:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return found


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {"table", "outbound-redirect", "proxy-bypass", "inbound-reentry"}),
        (EVERY_LIST, {"table", "outbound-redirect", "proxy-bypass", "excluded-ip-range", "excluded-port",
                      "excluded-interface", "inbound-reentry"}),
        (PODIP, {"table", "outbound-redirect", "proxy-bypass", "inbound-reentry", "podip-dnat"}),
    ],
    ids=["default", "every-list", "podip"],
)
def test_validate_passes_right_after_apply(pod, flags, expected):
    applied = pod.nftredir("apply", *flags)
    assert applied.returncode == 0, applied.stderr
    code, report = pod.validate(*flags)
    assert code == 0 and report["ok"], report
    assert statuses(report) == dict.fromkeys(expected, "pass")
    outbound = check(report, "outbound-redirect")
    assert "landed on the outbound listener 127.0.0.1:15001" in outbound["got"]


def test_every_list_probes_what_the_lists_name(pod):
    assert pod.nftredir("apply", *EVERY_LIST).returncode == 0
    _, report = pod.validate(*EVERY_LIST)
    # The redirected destination is included and harmless; the excluded one is excluded.
    assert "198.51.100.1:80" in check(report, "outbound-redirect")["summary"]
    assert "192.0.2.1:9" in check(report, "excluded-ip-range")["summary"]  # a port nothing serves
    assert ":6379" in check(report, "excluded-port")["summary"]
    # Out of eth1 to the world's own address, which answers: a real connection, not ours.
    assert "connect: connected" in check(report, "excluded-interface")["got"]


def test_apply_validate_fails_the_init_container_when_the_redirect_does_not_hold(pod):
    applied = pod.nftredir("apply", "--validate", "--timeout", TIMEOUT)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "validate: the redirect holds" in applied.stdout
    # A firewall rule now resets connections to the outbound listener: the redirect cannot hold.
    pod.nft("add", "table", "ip", "other")
    pod.nft("add", "chain", "ip", "other", "out", "{ type filter hook output priority 0; }")
    pod.nft("add", "rule", "ip", "other", "out", "tcp", "dport", "15001", "reject", "with", "tcp", "reset")
    again = pod.nftredir("apply", "--validate", "--timeout", TIMEOUT)
    assert again.returncode == 1
    assert "FAIL outbound-redirect" in again.stdout


BREAKAGES = {
    # the sidecar's own traffic is redirected back to itself: a loop
    "no-skuid-bypass": (("delete_rule", "PROXY_OUTPUT", "sidecar's own traffic: no loop"), {"proxy-bypass"}),
    "wrong-outbound-port": (
        ("replace_redirect", "PROXY_REDIRECT", "to the sidecar's outbound listener", "15002"), {"outbound-redirect"}
    ),
    "no-redirect": (("flush", "PROXY_REDIRECT", "PROXY_IN_REDIRECT"), {"outbound-redirect", "inbound-reentry"}),
    "table-removed": (("delete_table",), {"outbound-redirect", "inbound-reentry"}),
}


def _break(pod: Pod, how: tuple[str, ...]) -> None:
    kind, *args = how
    if kind == "delete_rule":
        pod.delete_rule(*args)
    elif kind == "replace_redirect":
        chain, comment, port = args
        pod.delete_rule(chain, comment)
        pod.nft("insert", "rule", "inet", "nftredir", chain, "meta", "l4proto", "tcp", "redirect", "to", f":{port}")
    elif kind == "flush":
        for chain in args:
            pod.nft("flush", "chain", "inet", "nftredir", chain)
    else:
        pod.nft("delete", "table", "inet", "nftredir")


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validate_fails_naming_the_check_when_the_ruleset_is_broken(pod, breakage):
    how, failing = BREAKAGES[breakage]
    assert pod.nftredir("apply").returncode == 0
    _break(pod, how)
    code, report = pod.validate()
    assert code == 1 and not report["ok"]
    assert {name for name, status in statuses(report).items() if status == "fail"} == failing
    for name in failing:
        failed = check(report, name)
        assert failed["expected"] and failed["got"] and failed["expected"] != failed["got"]
    text = pod.nftredir("validate", "--timeout", TIMEOUT)
    assert text.returncode == 1
    for name in failing:
        assert f"FAIL {name}: " in text.stdout
    assert "the redirect does NOT hold" in text.stdout


def test_a_removed_table_is_named(pod):
    assert pod.nftredir("apply").returncode == 0
    _break(pod, BREAKAGES["table-removed"][0])
    _, report = pod.validate()
    assert check(report, "table")["status"] == "skip"
    assert "table inet nftredir is not installed" in check(report, "table")["summary"]


def test_fsms_own_iptables_rules_are_proven_the_same_way(pod):
    """validate proves the redirect, whoever programs it: FSM's rules pass as nftredir's do."""
    fsm = pod.nftredir("render", "--format", "iptables").stdout
    pod.ns.run(["iptables-nft-restore", "--noflush"], input=fsm)
    code, report = pod.validate()
    assert code == 0, report
    assert statuses(report) == {"table": "skip", "outbound-redirect": "pass", "proxy-bypass": "pass",
                                "inbound-reentry": "pass"}


def test_wrong_port_is_reported_as_refused(pod):
    assert pod.nftredir("apply").returncode == 0
    _break(pod, BREAKAGES["wrong-outbound-port"][0])
    _, report = pod.validate()
    assert "refused" in check(report, "outbound-redirect")["got"]


def test_an_occupied_listener_port_skips_only_what_needs_it(pod):
    assert pod.nftredir("apply").returncode == 0
    with netlab.serve(pod.ns, [netlab.Listener("sidecar", 15001)]):
        code, report = pod.validate()
    assert code == 0, report
    assert statuses(report) == {
        "table": "pass", "outbound-redirect": "skip", "proxy-bypass": "skip", "inbound-reentry": "pass"
    }
    assert "127.0.0.1:15001" in check(report, "outbound-redirect")["summary"]
    assert "in use" in check(report, "outbound-redirect")["summary"]


def test_validate_leaves_no_listeners_or_children(pod):
    assert pod.nftredir("apply").returncode == 0
    _break(pod, BREAKAGES["no-skuid-bypass"][0])  # a failing run too: its children connected
    for _ in range(2):
        pod.validate()
        assert pod.ns.pids() == []
        assert pod.ns.run(["ss", "-Htan", "state", "listening"]).stdout == ""
        # Nothing of ours is still connecting or connected either.
        assert pod.ns.run(["ss", "-Htn", "state", "syn-sent"]).stdout == ""


def test_validate_completes_within_its_timeout_when_a_connection_hangs(pod):
    assert pod.nftredir("apply").returncode == 0
    # After the redirect, the SYN to the outbound listener is dropped: the connect hangs.
    pod.nft("add", "table", "ip", "hang")
    pod.nft("add", "chain", "ip", "hang", "out", "{ type filter hook output priority 0; }")
    pod.nft("add", "rule", "ip", "hang", "out", "tcp", "dport", "15001", "drop")
    code, report = pod.validate()  # Pod.nftredir's 120 s subprocess timeout is the hang guard
    assert code == 1
    outbound = check(report, "outbound-redirect")
    assert outbound["status"] == "fail" and "hung" in outbound["got"]
    assert statuses(report)["inbound-reentry"] == "pass"
    assert pod.ns.pids() == []


def test_no_route_skips_the_outbound_checks_plainly(pod):
    assert pod.nftredir("apply").returncode == 0
    pod.ns.run(["ip", "route", "del", "default"])
    pod.ns.run(["ip", "route", "del", netlab.ETH1_ONLY_NET])
    for dev in ("eth0", "eth1"):
        pod.ns.run(["ip", "link", "set", dev, "down"])
    code, report = pod.validate()
    assert code == 0, report
    assert statuses(report)["outbound-redirect"] == "skip"
    assert "no route" in check(report, "outbound-redirect")["summary"]
    assert statuses(report)["inbound-reentry"] == "pass"


def test_under_fsms_security_context_it_checks_what_root_alone_can(pod):
    """runAsUser 0 with capabilities drop ALL, add NET_ADMIN: no switching UIDs."""
    assert pod.nftredir("apply").returncode == 0
    result = subprocess.run(
        pod.ns.argv(["setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all",
                     sys.executable, "-m", "nftredir", "validate", "--format", "json", "--timeout", TIMEOUT]),
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert statuses(report) == {"table": "pass", "outbound-redirect": "pass", "proxy-bypass": "skip",
                                "inbound-reentry": "skip"}
    assert check(report, "outbound-redirect")["summary"].startswith("UID 0 -> ")  # root stands in as the app
    assert "CAP_SETUID" in check(report, "proxy-bypass")["summary"]


def test_validate_without_cap_net_admin_is_a_system_error(pod):
    result = subprocess.run(
        pod.ns.argv(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                     sys.executable, "-m", "nftredir", "validate"]),
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert result.returncode == 3
    assert result.stderr.startswith("nftredir: error: ") and "Traceback" not in result.stderr
