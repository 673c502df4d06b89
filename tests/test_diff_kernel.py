"""`nftredir diff`, `status` and `apply --diff` against a real kernel: each drift made with `nft`
in a throwaway network namespace, then detected."""

from __future__ import annotations

import json

import pytest

PODIP = ["--local-proxy-mode", "podip", "--pod-ip", "10.244.1.5"]
FULL = [
    "--outbound-ip-range-exclusion-list", "10.0.0.0/8,169.254.169.254/32,192.168.1.0/24,192.168.0.0/24",
    "--outbound-ip-range-inclusion-list", "172.16.0.0/12",
    "--outbound-port-exclusion-list", "6379,7070",
    "--inbound-port-exclusion-list", "8080",
    "--network-interface-exclusion-list", "eth1,veth+",
    *PODIP,
]


def applied(netns, *options: str):
    result = netns.nftredir("apply", *options)
    assert result.returncode == 0, result.stderr
    return netns


def diff_json(netns, *options: str) -> tuple[int, dict]:
    result = netns.nftredir("diff", "--format", "json", *options)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def handle_of(netns, chain: str, comment: str) -> int:
    listing = json.loads(netns.nft("-j", "-a", "list", "chain", "inet", "nftredir", chain).stdout)
    (handle,) = [i["rule"]["handle"] for i in listing["nftables"] if i.get("rule", {}).get("comment") == comment]
    return handle


@pytest.mark.parametrize("options", [[], PODIP, FULL], ids=["defaults", "podip", "every-option"])
def test_right_after_apply_there_is_no_difference(netns, options):
    applied(netns, *options)
    result = netns.nftredir("diff", *options)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert diff_json(netns, *options) == (0, {
        "table": {"family": "inet", "name": "nftredir"}, "installed": True, "identical": True, "differences": [],
    })


def test_an_absent_table_differs(netns):
    result = netns.nftredir("diff")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("--- live: table inet nftredir (absent)\n+++ desired: table inet nftredir\n")
    code, report = diff_json(netns)
    assert report["installed"] is False
    assert [(d["object"], d["change"]) for d in report["differences"]] == [("table", "missing")]


def test_a_rule_deleted_by_hand_is_missing(netns):
    applied(netns, *FULL)
    netns.nft("delete", "rule", "inet", "nftredir", "PROXY_OUTPUT", "handle", str(handle_of(netns, "PROXY_OUTPUT", "localhost")))
    result = netns.nftredir("diff", *FULL)
    assert result.returncode == 1
    assert '\n+\t\tip daddr 127.0.0.1 counter return comment "localhost"\n' in result.stdout
    code, report = diff_json(netns, *FULL)
    assert report["differences"] == [{
        "object": "rule", "change": "missing", "name": "PROXY_OUTPUT", "live": None,
        "desired": {"index": 3, "rule": "ip daddr 127.0.0.1 counter return", "comment": "localhost"},
    }]


def test_a_rule_added_by_hand_is_extra(netns):
    applied(netns)
    netns.nft("add", "rule", "inet", "nftredir", "PROXY_OUTPUT", "tcp", "dport", "9999", "return")
    result = netns.nftredir("diff")
    assert result.returncode == 1
    assert "\n-\t\ttcp dport 9999 return\n" in result.stdout
    code, report = diff_json(netns)
    (difference,) = report["differences"]
    assert (difference["object"], difference["change"], difference["name"]) == ("rule", "extra", "PROXY_OUTPUT")
    assert difference["live"]["rule"] == "tcp dport 9999 return" and isinstance(difference["live"]["handle"], int)


def test_a_set_element_added_by_hand_changes_the_set(netns):
    applied(netns, *FULL)
    netns.nft("add", "element", "inet", "nftredir", "outbound_port_exclusions", "{ 1234 }")
    netns.nft("add", "element", "inet", "nftredir", "outbound_ip_range_exclusions", "{ 192.168.2.0/24 }")
    result = netns.nftredir("diff", *FULL)
    assert result.returncode == 1
    assert "\n-\t\telements = { 1234, 6379, 7070 }\n+\t\telements = { 6379, 7070 }\n" in result.stdout
    code, report = diff_json(netns, *FULL)
    changed = {d["name"]: d for d in report["differences"]}
    assert set(changed) == {"outbound_ip_range_exclusions", "outbound_port_exclusions"}
    assert changed["outbound_port_exclusions"]["elements_extra"] == ["1234"]
    # 192.168.0.0/23 and the adjacent /24 are one interval, however the kernel lists them.
    assert changed["outbound_ip_range_exclusions"]["live"]["elements"] == [
        "10.0.0.0/8", "169.254.169.254", "192.168.0.0-192.168.2.255",
    ]


def test_a_chain_priority_changed_by_hand_is_a_changed_chain(netns):
    applied(netns)
    # A base chain's priority cannot be changed in place (EOPNOTSUPP): recreate it, in one transaction.
    netns.nft("-f", "-", input="""
flush chain inet nftredir output
delete chain inet nftredir output
add chain inet nftredir output { type nat hook output priority 0; policy accept; }
add rule inet nftredir output meta nfproto ipv4 meta l4proto tcp counter jump PROXY_OUTPUT comment "outbound IPv4 TCP (FSM: -A OUTPUT -p tcp)"
""")
    result = netns.nftredir("diff")
    assert result.returncode == 1
    assert "-\t\ttype nat hook output priority 0; policy accept;\n+\t\ttype nat hook output priority -100; policy accept;\n" in result.stdout
    code, report = diff_json(netns)
    assert report["differences"] == [{
        "object": "chain", "change": "changed", "name": "output", "fields": ["prio"],
        "live": {"type": "nat", "hook": "output", "prio": 0, "policy": "accept"},
        "desired": {"type": "nat", "hook": "output", "prio": -100, "policy": "accept"},
    }]


def test_unrelated_tables_are_ignored(netns):
    applied(netns)
    netns.nft("-f", "-", input="""
table inet other {
	chain output {
		type nat hook output priority 0;
		tcp dport 9999 return
	}
}
table ip nftredir {
	chain c {
		tcp dport 9999 return
	}
}
""")
    result = netns.nftredir("diff")
    assert (result.returncode, result.stdout) == (0, "")


def test_options_other_than_those_applied_differ(netns):
    applied(netns, "--outbound-port-exclusion-list", "6379")
    code, report = diff_json(netns, "--outbound-port-exclusion-list", "6379,7070", *PODIP)
    assert code == 1
    summary = [(d["object"], d["change"], d["name"]) for d in report["differences"]]
    assert summary == [("set", "changed", "outbound_port_exclusions"), ("rule", "missing", "output")]
    assert report["differences"][0]["elements_missing"] == ["7070"]
    assert report["differences"][1]["desired"]["rule"].endswith("dnat ip to 10.244.1.5")


def test_diff_with_invalid_input_exits_2_without_a_traceback(netns):
    result = netns.nftredir("diff", "--outbound-port-exclusion-list", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("nftredir: error: --outbound-port-exclusion-list") and "Traceback" not in result.stderr
    assert netns.nftredir("diff", "--format", "yaml").returncode == 2


def test_apply_diff_shows_the_change_then_applies(netns):
    applied(netns)
    netns.nft("add", "rule", "inet", "nftredir", "PROXY_OUTPUT", "tcp", "dport", "9999", "return")
    result = netns.nftredir("apply", "--diff")
    assert result.returncode == 0, result.stderr
    assert "\n-\t\ttcp dport 9999 return\n" in result.stdout
    assert netns.nftredir("diff").returncode == 0
    again = netns.nftredir("apply", "--diff")
    assert (again.returncode, again.stdout) == (0, "no changes: table inet nftredir already matches\n")


def test_apply_diff_with_dry_run_changes_nothing(netns):
    result = netns.nftredir("apply", "--diff", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--- live: table inet nftredir (absent)")
    assert netns.nftredir("diff").returncode == 1


def test_status_shows_each_rule_counting_traffic(netns):
    applied(netns)
    # One TCP connection to 127.0.0.1 (refused: nothing listens): the first packet goes through
    # the nat output chain, into PROXY_OUTPUT, and out by the "app calling itself over lo" rule.
    netns.run(["python3", "-c", "import socket; s = socket.socket(); s.settimeout(2); s.connect_ex(('127.0.0.1', 9))"])
    result = netns.nftredir("status", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["installed"], report["matches"], report["differences"]) == (True, True, [])
    rules = {(c["name"], r["comment"]): r for c in report["chains"] for r in c["rules"]}
    assert rules[("output", "outbound IPv4 TCP (FSM: -A OUTPUT -p tcp)")]["packets"] == 1
    assert rules[("PROXY_OUTPUT", "app calling itself over lo")]["packets"] == 1
    assert rules[("PROXY_OUTPUT", "app calling itself over lo")]["bytes"] > 0
    assert rules[("PROXY_OUTPUT", "localhost")]["packets"] == 0
    text = netns.nftredir("status").stdout
    assert "table inet nftredir: installed\nruleset: matches the desired ruleset\n" in text
    assert "chain output (type nat hook output priority -100; policy accept)" in text
    line = next(l for l in text.splitlines() if l.endswith("# app calling itself over lo"))
    assert line.split()[:2] == ["1", str(rules[("PROXY_OUTPUT", "app calling itself over lo")]["bytes"])]


def test_status_reports_drift_and_an_absent_table(netns):
    absent = netns.nftredir("status")
    assert (absent.returncode, absent.stdout) == (0, "table inet nftredir: not installed (nothing is redirected); run nftredir apply\n")
    assert json.loads(netns.nftredir("status", "--format", "json").stdout)["installed"] is False
    applied(netns)
    netns.nft("add", "rule", "inet", "nftredir", "PROXY_OUTPUT", "tcp", "dport", "9999", "return")
    result = netns.nftredir("status")
    assert result.returncode == 0
    assert "ruleset: DIFFERS from the desired ruleset (1 difference; see nftredir diff)" in result.stdout
    assert "  - extra rule in PROXY_OUTPUT: tcp dport 9999 return" in result.stdout
