"""Tests of the namespace lab itself, validated against FSM's real iptables rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from lab import netlab as nl
from tests.conftest import REPO, fsm_reference
from lab.netlab import Probe, Verdict

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables-restore") is None,
    reason="needs root, iproute2 and iptables-restore",
)

FSM_DEFAULT = fsm_reference("default.rules")

APP = 8080
APP_UID = 1000
SIDECAR = nl.SIDECAR_UID

# UDP reaches its target untouched: the world's TPROXY listener sees the real destination,
# the pod's app UDP listener is answered directly.
WORLD_UDP_53 = Verdict("world/udp", f"{nl.WORLD_DST}:53", f"{nl.POD_ETH0}:*", f"{nl.WORLD_DST}:53")
POD_UDP_APP = Verdict(f"pod:{APP}/udp", f"{nl.POD_ETH0}:{APP}", f"{nl.WORLD_ETH0}:*")

Case = tuple[str, nl.Netns, int, Probe, Verdict]  # (who, ns, uid, probe, expected)


@pytest.fixture
def lab() -> Iterator[nl.PodWorld]:
    with nl.pod_world(app_ports=(APP, 9090)) as world:
        yield world


def check(cases: Sequence[Case]) -> None:
    """Run all cases and fail with one table of every mismatch (peer ports masked)."""
    actual = nl.probe_cases([(ns, uid, p) for _, ns, uid, p, _ in cases])
    bad = [
        (f"{who} uid={uid} {p}", exp.masked(), act.masked())
        for (who, _, uid, p, exp), act in zip(cases, actual, strict=True)
        if exp.masked() != act.masked()
    ]
    assert not bad, "\n" + nl.format_mismatches(bad)


def world(dst: str, port: int, iface: int = 0, src: str | None = None) -> Verdict:
    """The world listener answering dst:port, reached through pod eth<iface>."""
    local, pod_ip = ((nl.WORLD_ETH0, nl.POD_ETH0), (nl.WORLD_ETH1, nl.POD_ETH1))[iface]
    return Verdict("world", f"{local}:{nl.WORLD_PORT}", f"{src or pod_ip}:*", f"{dst}:{port}")


def pod(port: int, local: str, peer: str, orig: str | None = None) -> Verdict:
    """The pod listener on port, seen at local from peer; orig if NATed."""
    return Verdict(f"pod:{port}", f"{local}:{port}", f"{peer}:*", orig)


def inbound(local: str, peer: str, port: int) -> Verdict:
    """Redirected to the sidecar's inbound listener, original port kept."""
    return pod(nl.INBOUND_PORT, local, peer, f"{local}:{port}")


# --------------------------------------------------------------------------- the library


def test_netns_lifecycle_kills_processes_and_deletes() -> None:
    with nl.netns() as ns:
        assert ns.name in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True, check=True).stdout
        assert "UP" in ns.run(["ip", "link", "show", "lo"]).stdout
        sleeper = ns.popen(["sleep", "60"])
        for _ in range(3000):  # `ip netns exec` joins the namespace after fork (60 s bound)
            if ns.pids():
                break
            time.sleep(0.02)
        assert ns.pids()
    assert sleeper.wait(timeout=5) != 0  # killed by the context exit
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True, check=True).stdout


def test_netns_deleted_on_error() -> None:
    with pytest.raises(RuntimeError), nl.netns() as ns:
        name = ns.name
        ns.run(["false"])
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True, check=True).stdout


def test_server_exits_on_its_own_after_lifetime() -> None:
    # No clock: any short lifetime can end before a slow machine starts the probe. A server
    # with the default lifetime is still serving after an answer; one whose lifetime is
    # shorter than its start-up exits by itself, status 0, while its stdin is still open.
    with nl.netns() as ns:
        with nl.serve(ns, [nl.Listener("x", 7000)]) as srv:
            assert nl.probe(ns, "127.0.0.1", 7000).listener == "x"
            assert srv.proc.poll() is None
        with nl.serve(ns, [nl.Listener("x", 7000)], lifetime=0.1) as srv:
            assert srv.proc.wait(timeout=120) == 0  # a hang guard only
            assert srv.proc.stdin is not None and not srv.proc.stdin.closed


def test_failure_verdicts(lab: nl.PodWorld) -> None:
    # Drops in the world (before its redirect) time out. A UDP drop in the pod's output is
    # "denied" (send() gets EPERM); a TCP SYN dropped there just times out (the kernel
    # retransmits), so use a reset for TCP: "refused".
    lab.world.run(["nft", "-f", "-"], input="""
        table ip drops {
            chain prerouting {
                type filter hook prerouting priority raw;
                tcp dport 7777 drop; udp dport 7777 drop;
            }
        }""")
    lab.pod.run(["nft", "-f", "-"], input="""
        table ip drops {
            chain output {
                type filter hook output priority 0;
                tcp dport 7778 reject with tcp reset; udp dport 7778 drop;
            }
        }""")
    got = nl.probe_many(lab.pod, [(nl.WORLD_ETH0, 7777), (nl.WORLD_ETH0, 7777, "udp"),
                                  (nl.WORLD_ETH0, 7778), (nl.WORLD_ETH0, 7778, "udp"),
                                  ("127.0.0.1", 1)], timeout=0.5)
    assert [v.listener for v in got] == ["timeout", "timeout", "refused", "denied", "refused"]
    assert not any(v.answered for v in got)


def test_format_mismatches_aligns_columns() -> None:
    table = nl.format_mismatches([
        (Probe("1.2.3.4", 80), Verdict("pod:15001"), Verdict("refused")),
        ("longer probe description", Verdict("world", orig_dst="1.2.3.4:80"), Verdict("timeout")),
    ])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("probe")
    col = lines[0].index("expected")
    assert all(line[col - 2:col] == "  " for line in lines[2:])
    assert "orig=1.2.3.4:80" in table


def test_verdict_masked() -> None:
    v = Verdict("world", "10.99.0.1:19999", "10.99.0.2:40000", "203.0.113.10:80")
    assert v.masked().peer == "10.99.0.2:*" and Verdict("refused").masked() == Verdict("refused")


def test_a_batch_of_100_probes_each_gets_its_own_answer(lab: nl.PodWorld) -> None:
    got = nl.probe_many(lab.pod, [(f"203.0.113.{i}", 1000 + i) for i in range(1, 101)], 1000)
    assert [v.orig_dst for v in got] == [f"203.0.113.{i}:{1000 + i}" for i in range(1, 101)]


# --------------------------------------------------------------------------- behaviour


def test_no_rules_everything_direct(lab: nl.PodWorld) -> None:
    p, w, lo = lab.pod, lab.world, "127.0.0.1"
    check([
        ("out", p, APP_UID, Probe(nl.WORLD_DST, 80), world(nl.WORLD_DST, 80)),
        ("out", p, SIDECAR, Probe(nl.WORLD_DST, 80), world(nl.WORLD_DST, 80)),
        ("out eth1", p, APP_UID, Probe(nl.ETH1_DST, 443), world(nl.ETH1_DST, 443, iface=1)),
        ("out src", p, APP_UID, Probe(nl.WORLD_DST, 80, "tcp", nl.POD_ETH1),
         world(nl.WORLD_DST, 80, src=nl.POD_ETH1)),
        ("out udp", p, APP_UID, Probe(nl.WORLD_DST, 53, "udp"), WORLD_UDP_53),
        ("self", p, APP_UID, Probe(lo, APP), pod(APP, lo, lo)),
        ("self", p, SIDECAR, Probe(nl.POD_ETH0, APP), pod(APP, nl.POD_ETH0, nl.POD_ETH0)),
        ("in", w, 0, Probe(nl.POD_ETH0, APP), pod(APP, nl.POD_ETH0, nl.WORLD_ETH0)),
        ("in eth1", w, 0, Probe(nl.POD_ETH1, 9090), pod(9090, nl.POD_ETH1, nl.WORLD_ETH1)),
        ("in", w, 0, Probe(nl.POD_ETH0, nl.HEALTHCHECK_PORT),
         pod(nl.HEALTHCHECK_PORT, nl.POD_ETH0, nl.WORLD_ETH0)),
        ("in", w, 0, Probe(nl.POD_ETH0, 1), Verdict("refused")),
        ("in udp", w, 0, Probe(nl.POD_ETH0, APP, "udp"), POD_UDP_APP),
    ])


def load_ruleset(pod: nl.Netns, which: str) -> None:
    """FSM's own script through iptables-restore, or nftredir's ruleset through its CLI."""
    if which == "fsm":
        pod.run(["iptables-restore", "--noflush"], input=FSM_DEFAULT)
    else:
        pod.run([sys.executable, "-m", "nftredir", "apply"], cwd=REPO)


@pytest.mark.parametrize("which", ["fsm", "nftredir"])
def test_default_rules_behave_as_the_reference_describes(lab: nl.PodWorld, which: str) -> None:
    """The behaviour fsm-rules.md describes, for FSM's own rules and for nftredir's."""
    load_ruleset(lab.pod, which)
    p, w, lo = lab.pod, lab.world, "127.0.0.1"
    eth0, eth1, out = nl.POD_ETH0, nl.POD_ETH1, nl.OUTBOUND_PORT

    def outbound(dst: str, port: int, src: str = eth0) -> Verdict:
        # REDIRECT in OUTPUT sends to 127.0.0.1; the source chosen by routing stays.
        return pod(out, lo, src, f"{dst}:{port}")

    check([
        # Outbound from the app (or root) is redirected to 15001, the original dst kept.
        ("out", p, APP_UID, Probe(nl.WORLD_DST, 80), outbound(nl.WORLD_DST, 80)),
        ("out eth1", p, APP_UID, Probe(nl.ETH1_DST, 443), outbound(nl.ETH1_DST, 443, eth1)),
        ("out", p, 0, Probe(nl.WORLD_ETH0, 22), outbound(nl.WORLD_ETH0, 22)),
        # Quirk: the 15000 ACCEPT follows the REDIRECT, so 15000 outbound is redirected too.
        ("out", p, APP_UID, Probe(nl.WORLD_DST, nl.ADMIN_PORT),
         outbound(nl.WORLD_DST, nl.ADMIN_PORT)),
        # The sidecar's own outbound goes straight out.
        ("out", p, SIDECAR, Probe(nl.WORLD_DST, 80), world(nl.WORLD_DST, 80)),
        ("out eth1", p, SIDECAR, Probe(nl.ETH1_DST, 443), world(nl.ETH1_DST, 443, iface=1)),
        # Only TCP is intercepted.
        ("out udp", p, APP_UID, Probe(nl.WORLD_DST, 53, "udp"), WORLD_UDP_53),
        # Over lo: the app calling itself stays direct; the sidecar calling the pod IP
        # re-enters through 15003; the sidecar calling 127.0.0.1 stays direct.
        ("self", p, APP_UID, Probe(lo, APP), pod(APP, lo, lo)),
        ("self", p, APP_UID, Probe(eth0, APP), pod(APP, eth0, eth0)),
        ("self", p, SIDECAR, Probe(eth0, APP), pod(nl.INBOUND_PORT, lo, eth0, f"{eth0}:{APP}")),
        ("self", p, SIDECAR, Probe(lo, APP), pod(APP, lo, lo)),
        # Inbound to an app (or any other) port goes to 15003 ...
        ("in", w, 0, Probe(eth0, APP), inbound(eth0, nl.WORLD_ETH0, APP)),
        ("in eth1", w, 0, Probe(eth1, 9090), inbound(eth1, nl.WORLD_ETH1, 9090)),
        ("in", w, 0, Probe(eth0, 1), inbound(eth0, nl.WORLD_ETH0, 1)),
        ("in", w, 0, Probe(eth0, nl.ADMIN_PORT), inbound(eth0, nl.WORLD_ETH0, nl.ADMIN_PORT)),
        # ... except the Prometheus and health ports, which reach their listener directly.
        *[("in", w, 0, Probe(eth0, port), pod(port, eth0, nl.WORLD_ETH0))
          for port in (nl.PROMETHEUS_PORT, *nl.HEALTH_PORTS, nl.HEALTHCHECK_PORT)],
        ("in udp", w, 0, Probe(eth0, APP, "udp"), POD_UDP_APP),
    ])


def test_mismatch_is_reported_as_table(lab: nl.PodWorld) -> None:
    # The harness must see a difference: without rules, outbound is not redirected.
    with pytest.raises(AssertionError, match=r"(?s)probe\s+expected\s+actual.*pod:15001.*world"):
        check([("out", lab.pod, APP_UID, Probe(nl.WORLD_DST, 80),
                Verdict("pod:15001", "127.0.0.1:15001", f"{nl.POD_ETH0}:*", f"{nl.WORLD_DST}:80"))])


def test_udp_redirect_would_be_caught(lab: nl.PodWorld) -> None:
    # A broken ruleset that redirects UDP is visible: the pod's UDP 15001 listener answers
    # (conntrack un-NATs its reply), though for UDP only the NATed address is observable.
    lab.pod.run(["nft", "-f", "-"], input="""
        table ip broken {
            chain output {
                type nat hook output priority -100;
                meta l4proto udp redirect to :15001;
            }
        }""")
    check([("out udp", lab.pod, APP_UID, Probe(nl.WORLD_DST, 53, "udp"),
            Verdict("pod:15001/udp", "127.0.0.1:15001", f"{nl.POD_ETH0}:*"))])
