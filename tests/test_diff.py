"""nftredir.diff and nftredir.status without a kernel: canonical forms and JSON shapes.

The listings in tests/data/diff/ were captured with `nft -j list table` from nftables 1.0.6:
- live-full-podip.json: `nftredir apply` with every option set, in podip mode (see FULL below);
- live-extra-chain.json: the same, then element 1234 added to outbound_port_exclusions and a
  chain pr2 (nat hook prerouting priority dstnat + 10) added by hand;
- live-hand-added.json: table inet scratch, rules of shapes nftredir never writes, added by hand.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nftredir import diff, model, nft_text, status
from nftredir.config import Config, Item, build_config
from nftredir.render import render_batch

DATA = Path(__file__).resolve().parent / "data" / "diff"
FULL = {
    "outbound-ip-range-exclusion-list": "10.0.0.0/8,169.254.169.254/32,10.1.0.0/16,192.168.1.0/24,192.168.0.0/24",
    "outbound-ip-range-inclusion-list": "172.16.0.0/12",
    "outbound-port-exclusion-list": "6379,7070",
    "inbound-port-exclusion-list": "8080",
    "network-interface-exclusion-list": "eth1,veth+",
    "local-proxy-mode": "podip",
    "pod-ip": "10.244.1.5",
}


def config(**options: str) -> Config:
    return build_config({name: [Item(v, name) for v in value.split(",")] for name, value in options.items()})


def listing(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def desired(cfg: Config) -> model.Ruleset:
    return model.from_batch(render_batch(cfg), cfg.table)


def rule(*expr: dict, comment: str | None = None, chain: str = "c") -> dict:
    body = {"family": "inet", "table": "t", "chain": chain, "expr": list(expr)}
    return {"rule": {**body, "comment": comment} if comment is not None else body}


def table_listing(*items: dict, table: str = "t") -> dict:
    head = [{"metainfo": {"json_schema_version": 1}}, {"table": {"family": "inet", "name": table, "handle": 1}}]
    return {"nftables": head + list(items)}


def match(left: dict, right: object, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


META = lambda key: {"meta": {"key": key}}  # noqa: E731
IP_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
TCP_DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}


# --- like with like ----------------------------------------------------------------------------


def test_the_captured_listing_of_an_applied_ruleset_matches_the_batch_that_made_it():
    drift = diff.drift(listing("live-full-podip.json"), render_batch(config(**FULL)), "nftredir")
    assert drift.identical
    assert drift.text() == ""
    assert drift.report() == {
        "table": {"family": "inet", "name": "nftredir"}, "installed": True, "identical": True, "differences": [],
    }


def test_handles_and_counter_values_do_not_count():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        obj = next(iter(item.values()))
        if "handle" in obj:
            obj["handle"] += 1000
        for expr in obj.get("expr", []):
            if "counter" in expr:
                expr["counter"] = {"packets": 42, "bytes": 4200}
    assert diff.drift(live, render_batch(config(**FULL)), "nftredir").identical


def test_set_element_order_does_not_count():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        if "set" in item:
            item["set"]["elem"].reverse()
    assert diff.drift(live, render_batch(config(**FULL)), "nftredir").identical


def test_a_32_prefix_is_the_plain_address_the_kernel_lists():
    written = model.make_rule(rule(match(IP_DADDR, {"prefix": {"addr": "10.0.0.1", "len": 32}}), {"return": None})["rule"])
    listed = model.make_rule(rule(match(IP_DADDR, "10.0.0.1"), {"return": None})["rule"])
    assert written == listed
    assert listed.text == "ip daddr 10.0.0.1 return"


def test_host_bits_of_a_prefix_do_not_count():
    a = model.make_rule(rule(match(IP_DADDR, {"prefix": {"addr": "10.0.0.1", "len": 8}}))["rule"])
    b = model.make_rule(rule(match(IP_DADDR, {"prefix": {"addr": "10.0.0.0", "len": 8}}))["rule"])
    assert a == b and a.text == "ip daddr 10.0.0.0/8"


def test_meta_nfproto_before_an_ip_match_is_the_dependency_the_kernel_hides():
    # The podip DNAT rule is written with `meta nfproto ipv4` and listed without it.
    written = [match(META("nfproto"), "ipv4"), match(META("l4proto"), "tcp"), match(IP_DADDR, "127.0.0.1"),
               {"counter": None}, {"dnat": {"family": "ip", "addr": "10.244.1.5"}}]
    listed = [match(META("l4proto"), "tcp"), match(IP_DADDR, "127.0.0.1"),
              {"counter": {"packets": 3, "bytes": 180}}, {"dnat": {"family": "ip", "addr": "10.244.1.5"}}]
    assert model.canonical_expressions(written) == model.canonical_expressions(listed)


def test_meta_nfproto_without_a_later_ip_match_still_counts():
    with_nfproto = [match(META("nfproto"), "ipv4"), match(META("l4proto"), "tcp"), {"jump": {"target": "X"}}]
    without = [match(META("l4proto"), "tcp"), {"jump": {"target": "X"}}]
    assert model.canonical_expressions(with_nfproto) != model.canonical_expressions(without)
    ipv6 = [match(META("nfproto"), "ipv6"), match(IP_DADDR, "10.0.0.1")]  # a rule that never matches
    assert len(model.canonical_expressions(ipv6)) == 2


def test_meta_l4proto_before_a_tcp_match_is_the_dependency_the_kernel_hides():
    written = [match(META("l4proto"), "tcp"), match(TCP_DPORT, 80), {"return": None}]
    listed = [match(TCP_DPORT, 80), {"return": None}]
    assert model.canonical_expressions(written) == model.canonical_expressions(listed)


def test_protocol_numbers_listed_without_etc_protocols_are_the_names():
    # A minimal image without netbase lists `meta l4proto 6` for what was written `tcp`.
    written = [match(META("nfproto"), "ipv4"), match(META("l4proto"), "tcp"), {"jump": {"target": "X"}}]
    listed = [match(META("nfproto"), 2), match(META("l4proto"), 6), {"jump": {"target": "X"}}]
    assert model.canonical_expressions(written) == model.canonical_expressions(listed)
    assert model.canonical_expressions([match(META("l4proto"), 17)]) != model.canonical_expressions(written[1:2])


def test_adjacent_and_overlapping_intervals_are_one_interval():
    flags = ["interval"]
    split = model.canonical_elements("ipv4_addr", flags, [
        {"prefix": {"addr": "10.0.1.0", "len": 24}}, {"prefix": {"addr": "10.0.0.0", "len": 24}},
    ])
    assert split == model.canonical_elements("ipv4_addr", flags, [{"prefix": {"addr": "10.0.0.0", "len": 23}}])
    assert split == ("10.0.0.0/23",)
    assert model.canonical_elements("ipv4_addr", flags, [{"range": ["10.10.0.0", "10.10.0.9"]}, "10.10.0.10"]) == (
        "10.10.0.0-10.10.0.10",
    )
    assert model.canonical_elements("ipv4_addr", flags, [{"prefix": {"addr": "10.9.0.1", "len": 32}}]) == ("10.9.0.1",)
    assert model.canonical_elements("inet_service", flags, [81, 80, {"range": [82, 90]}]) == ("80-90",)


def test_elements_of_sets_without_intervals_are_sorted_not_merged():
    assert model.canonical_elements("inet_service", [], [7070, 6379, 6380]) == ("6379", "6380", "7070")


def test_elements_with_timeouts_or_comments_compare_by_value():
    wrapped = {"elem": {"val": 7070, "comment": "by hand"}}
    assert model.canonical_elements("inet_service", [], [wrapped, 6379]) == ("6379", "7070")


# --- nft text ------------------------------------------------------------------------------------


CT_STATE = {"match": {"left": {"ct": {"key": "state"}}, "op": "in", "right": ["established", "related"]}}


def test_rules_read_as_nft_lists_them_and_what_nftredir_never_writes_as_json():
    """nftredir's own vocabulary reads as nft's listing (counter values aside); `ct` and `log`,
    which nftredir never writes, are shown as their JSON."""
    expected = [
        "tcp dport 9999 return",
        "tcp dport 80 return",
        "meta nfproto ipv4 meta l4proto tcp dnat ip to 1.2.3.4",
        "ip daddr 10.0.0.1 return",
        "ip daddr 10.0.0.0/8 ip saddr 10.0.0.0-10.0.0.5 return",
        f"tcp dport {{ 1, 3-5 }} json:{json.dumps(CT_STATE, sort_keys=True)} accept",
        f'ip protocol tcp tcp dport 8 counter json:{json.dumps({"log": {"prefix": "x "}}, sort_keys=True)} drop',
        "meta nfproto ipv6 meta l4proto tcp return",
        'iifname "veth*" goto c',
    ]
    live = model.from_listing(listing("live-hand-added.json"), "scratch")
    assert [r.text for r in live.chains["c"].rules] == expected


def test_expressions_nftredir_never_writes_fall_back_to_their_json():
    expr = {"limit": {"rate": 10, "per": "second"}}
    assert nft_text.expression_text(expr) == "json:" + json.dumps(expr, sort_keys=True)


def test_the_canonical_listing_reads_like_nft_list_table():
    lines = diff.ruleset_lines(model.from_listing(listing("live-full-podip.json"), "nftredir"))
    assert lines[0] == "table inet nftredir {"
    assert "\t\telements = { 10.0.0.0/8, 169.254.169.254, 192.168.0.0/23 }" in lines
    assert "\t\ttype nat hook output priority -100; policy accept;" in lines
    assert '\t\toifname "lo" meta skuid != 1500 counter return comment "app calling itself over lo"' in lines
    assert lines[-1] == "}"


# --- differences ---------------------------------------------------------------------------------


def test_an_absent_table_is_one_difference_and_the_whole_ruleset_as_additions():
    drift = diff.drift(None, render_batch(config()), "nftredir")
    assert drift.differences == [{
        "object": "table", "change": "missing", "name": "nftredir", "live": None,
        "desired": {"family": "inet", "name": "nftredir"},
    }]
    assert drift.report()["installed"] is False
    text = drift.text()
    assert text.startswith("--- live: table inet nftredir (absent)\n+++ desired: table inet nftredir\n")
    assert all(line.startswith(("+", "@@", "---")) for line in text.splitlines())


def test_a_rule_added_by_hand_is_extra_with_its_handle():
    live = listing("live-full-podip.json")
    live["nftables"].append(rule(match(TCP_DPORT, 9999), {"return": None}, chain="PROXY_OUTPUT"))
    live["nftables"][-1]["rule"].update(table="nftredir", handle=99)
    drift = diff.drift(live, render_batch(config(**FULL)), "nftredir")
    assert drift.differences == [{
        "object": "rule", "change": "extra", "name": "PROXY_OUTPUT",
        "live": {"index": 10, "rule": "tcp dport 9999 return", "comment": None, "handle": 99}, "desired": None,
    }]
    assert "\n-\t\ttcp dport 9999 return\n" in drift.text()


def test_a_rule_deleted_by_hand_is_missing_at_its_place():
    live = listing("live-full-podip.json")
    live["nftables"] = [i for i in live["nftables"] if i.get("rule", {}).get("comment") != "localhost"]
    drift = diff.drift(live, render_batch(config(**FULL)), "nftredir")
    assert drift.differences == [{
        "object": "rule", "change": "missing", "name": "PROXY_OUTPUT", "live": None,
        "desired": {"index": 3, "rule": "ip daddr 127.0.0.1 counter return", "comment": "localhost"},
    }]
    assert '\n+\t\tip daddr 127.0.0.1 counter return comment "localhost"\n' in drift.text()


def test_a_rule_changed_in_place_is_changed():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        if item.get("rule", {}).get("comment") == "to the sidecar's inbound listener":
            item["rule"]["expr"][-1] = {"redirect": {"port": 16003}}
    (difference,) = diff.drift(live, render_batch(config(**FULL)), "nftredir").differences
    assert difference["change"] == "changed" and difference["name"] == "PROXY_IN_REDIRECT"
    assert difference["live"]["rule"] == "meta l4proto tcp counter redirect to :16003"
    assert difference["desired"]["rule"] == "meta l4proto tcp counter redirect to :15003"


def test_a_changed_comment_is_a_changed_rule():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        if item.get("rule", {}).get("comment") == "localhost":
            item["rule"]["comment"] = "loopback"
    (difference,) = diff.drift(live, render_batch(config(**FULL)), "nftredir").differences
    assert (difference["change"], difference["live"]["comment"], difference["desired"]["comment"]) == (
        "changed", "loopback", "localhost",
    )


def test_set_and_chain_changes_made_by_hand_are_reported_by_field():
    drift = diff.drift(listing("live-extra-chain.json"), render_batch(config(**FULL)), "nftredir")
    assert drift.differences == [
        {
            "object": "set", "change": "changed", "name": "outbound_port_exclusions",
            "live": {"type": "inet_service", "flags": [], "elements": ["1234", "6379", "7070"]},
            "desired": {"type": "inet_service", "flags": [], "elements": ["6379", "7070"]},
            "fields": ["elements"], "elements_missing": [], "elements_extra": ["1234"],
        },
        {
            "object": "chain", "change": "extra", "name": "pr2",
            "live": {"type": "nat", "hook": "prerouting", "prio": -90, "policy": "accept", "rules": []},
            "desired": None,
        },
    ]
    text = drift.text()
    assert "\n-\t\telements = { 1234, 6379, 7070 }\n+\t\telements = { 6379, 7070 }\n" in text
    assert "\n-\tchain pr2 {\n-\t\ttype nat hook prerouting priority -90; policy accept;\n-\t}\n" in text


def test_a_changed_priority_is_a_changed_chain():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        if item.get("chain", {}).get("name") == "output":
            item["chain"]["prio"] = 0
    drift = diff.drift(live, render_batch(config(**FULL)), "nftredir")
    assert drift.differences == [{
        "object": "chain", "change": "changed", "name": "output", "fields": ["prio"],
        "live": {"type": "nat", "hook": "output", "prio": 0, "policy": "accept"},
        "desired": {"type": "nat", "hook": "output", "prio": -100, "policy": "accept"},
    }]
    assert "-\t\ttype nat hook output priority 0; policy accept;\n+\t\ttype nat hook output priority -100;" in drift.text()


def test_other_options_than_those_applied_show_as_missing_and_extra():
    drift = diff.drift(listing("live-full-podip.json"), render_batch(config()), "nftredir")
    changes = {(d["object"], d["change"], d["name"]) for d in drift.differences}
    assert ("set", "extra", "outbound_port_exclusions") in changes
    assert ("rule", "extra", "output") in changes  # the podip DNAT rule
    assert all(d["change"] in ("extra", "changed") for d in drift.differences)
    assert '\n-\t\tmeta l4proto tcp oifname "lo" ip daddr 127.0.0.1 meta skuid 1500 counter dnat ip to 10.244.1.5' in drift.text()


def test_a_missing_set_and_chain_carry_what_they_should_hold():
    live = listing("live-full-podip.json")
    live["nftables"] = [
        i for i in live["nftables"]
        if i.get("set", {}).get("name") != "inbound_port_exclusions"
        and "PROXY_REDIRECT" not in (i.get("chain", {}).get("name"), i.get("rule", {}).get("chain"))
    ]
    differences = diff.drift(live, render_batch(config(**FULL)), "nftredir").differences
    assert differences[0] == {
        "object": "set", "change": "missing", "name": "inbound_port_exclusions", "live": None,
        "desired": {"type": "inet_service", "flags": [], "elements": ["8080"]},
    }
    assert differences[1]["object"] == "chain" and differences[1]["change"] == "missing"
    assert [r["rule"] for r in differences[1]["desired"]["rules"]] == [
        "meta l4proto tcp counter redirect to :15001", "tcp dport 15000 counter accept",
    ]
    assert len(differences) == 2  # the chain's rules are not listed again


def test_other_tables_in_a_listing_are_ignored():
    live = listing("live-full-podip.json")
    other = copy.deepcopy(live["nftables"][1:])
    for item in other:
        next(iter(item.values()))["table" if "table" not in item else "name"] = "other"
    live["nftables"] += other
    assert diff.drift(live, render_batch(config(**FULL)), "nftredir").identical


def test_a_listing_without_the_table_is_absent():
    assert model.from_listing(table_listing(table="other"), "nftredir") is None
    assert model.from_listing(None, "nftredir") is None


def test_every_difference_has_the_documented_keys():
    live = listing("live-extra-chain.json")
    live["nftables"].append(rule(match(TCP_DPORT, 9999), {"return": None}, chain="PROXY_OUTPUT"))
    live["nftables"][-1]["rule"].update(table="nftredir", handle=99)
    report = diff.drift(live, render_batch(config(**{"local-proxy-mode": "podip", "pod-ip": "10.0.0.9"})), "nftredir").report()
    assert set(report) == {"table", "installed", "identical", "differences"}
    json.dumps(report)  # plain data all the way down
    for d in report["differences"]:
        assert {"object", "change", "name", "live", "desired"} <= set(d)
        assert d["change"] in ("missing", "extra", "changed")
        assert (d["live"] is None) == (d["change"] == "missing")
        assert (d["desired"] is None) == (d["change"] == "extra")
        sides = [s for s in (d["live"], d["desired"]) if s is not None]
        if d["object"] == "rule":
            assert all({"index", "rule", "comment"} <= set(s) for s in sides)
            assert d["live"] is None or "handle" in d["live"]
        if d["object"] == "set":
            assert all(set(s) == {"type", "flags", "elements"} for s in sides)
        if d["object"] == "chain":
            assert all({"type", "hook", "prio", "policy"} <= set(s) for s in sides)
        if d["change"] == "changed" and d["object"] != "rule":
            assert d["fields"]


# --- status --------------------------------------------------------------------------------------


def test_status_lists_every_rule_with_its_counters_and_comment():
    live = listing("live-full-podip.json")
    for item in live["nftables"]:
        if item.get("rule", {}).get("comment") == "localhost":
            item["rule"]["expr"][1] = {"counter": {"packets": 7, "bytes": 420}}
    report = status.status_report(live, render_batch(config(**FULL)), "nftredir", [])
    assert set(report) == {"table", "installed", "flags", "matches", "differences", "other_nat_chains", "sets", "chains"}
    assert report["installed"] and report["matches"] and report["differences"] == []
    chains = {c["name"]: c for c in report["chains"]}
    assert list(chains) == ["PROXY_IN_REDIRECT", "PROXY_INBOUND", "PROXY_REDIRECT", "PROXY_OUTPUT", "prerouting", "output"]
    assert chains["output"]["hook"] == "output" and chains["output"]["prio"] == -100
    assert chains["PROXY_OUTPUT"]["rules"][3] == {
        "handle": 24, "rule": "ip daddr 127.0.0.1 counter return", "comment": "localhost", "packets": 7, "bytes": 420,
    }
    assert {"name": "inbound_port_exclusions", "type": "inet_service", "flags": [], "elements": ["8080"]} in report["sets"]
    text = status.format_text(report)
    assert "ruleset: matches the desired ruleset" in text
    assert "        7     420  ip daddr 127.0.0.1 counter return  # localhost" in text


def test_status_says_what_differs():
    report = status.status_report(listing("live-extra-chain.json"), render_batch(config(**FULL)), "nftredir", [])
    assert not report["matches"]
    text = status.format_text(report)
    assert "DIFFERS from the desired ruleset (2 differences" in text
    assert "  - changed set outbound_port_exclusions (elements)" in text
    assert "  - extra chain pr2" in text
    assert "chain pr2 (type nat hook prerouting priority -90; policy accept)\n  (no rules)" in text


def test_status_of_an_absent_table():
    report = status.status_report(None, render_batch(config()), "nftredir", [])
    assert (report["installed"], report["matches"], report["sets"], report["chains"]) == (False, False, [], [])
    assert status.format_text(report) == "table inet nftredir: not installed (nothing is redirected); run nftredir apply\n"


def test_a_rule_without_counter_has_null_counters():
    live = table_listing(rule(match(TCP_DPORT, 9999), {"return": None}))
    report = status.status_report(live, {"nftables": []}, "t", [])
    assert report["chains"][0]["rules"] == [
        {"handle": None, "rule": "tcp dport 9999 return", "comment": None, "packets": None, "bytes": None}
    ]
    assert "        -       -  tcp dport 9999 return" in status.format_text(report)


@pytest.mark.parametrize("name", ["live-full-podip.json", "live-extra-chain.json", "live-hand-added.json"])
def test_a_listing_compared_with_itself_is_identical(name):
    table = "scratch" if "hand" in name else "nftredir"
    live = model.from_listing(listing(name), table)
    assert diff.compare(live, live) == []


ipv4_elements = st.lists(st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.builds(lambda n, length: {"prefix": {"addr": str(ipaddress.IPv4Address(n)), "len": length}},
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
), max_size=30)


odd_elements = st.lists(st.one_of(
    st.sampled_from(["10.1", "1.2.3.4.5", "256.0.0.1", "", "::1", {"prefix": {"addr": "10.1", "len": 8}},
                     {"prefix": {"addr": "10.0.0.0", "len": 33}}, {"prefix": {"addr": "10.0.0.0", "len": True}},
                     {"prefix": {"addr": 7, "len": 8}}, {"range": ["10.0.0.1", "10.0.0.9"]}, {"prefix": "x"}, 5, None]),
    ipv4_elements.flatmap(lambda values: st.sampled_from(values) if values else st.just("10.0.0.1")),
), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(odd_elements)
def test_the_bulk_ipv4_path_gives_up_on_any_other_shape_rather_than_misread_it(values):
    bulk = model._ipv4_bounds(values)
    assert bulk is None or bulk == [model._bounds("ipv4_addr", v) for v in values]


@settings(max_examples=200, deadline=None)
@given(ipv4_elements)
def test_the_bulk_ipv4_path_reads_elements_as_the_general_one(values):
    assert model._ipv4_bounds(values) == [model._bounds("ipv4_addr", v) for v in values]
    texts = model.canonical_elements("ipv4_addr", ["interval"], values)
    assert texts == tuple(sorted(texts, key=lambda t: ipaddress.IPv4Address(t.split("/")[0].split("-")[0])))


def test_a_large_set_s_text_diff_shows_only_the_element_that_changed():
    ranges = [f"10.{2 * i}.0.0/16" for i in range(40)]  # apart: nothing merges
    live = model.from_batch(render_batch(config(**{"outbound-ip-range-exclusion-list": ",".join(ranges)})), "nftredir")
    desired = model.from_batch(render_batch(config(**{"outbound-ip-range-exclusion-list": ",".join(ranges[:20] + ranges[21:])})),
                               "nftredir")
    text = diff.unified(live, desired)
    changed = [line for line in text.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["-\t\t\t10.40.0.0/16,"], text
    assert len(text.splitlines()) < 15
    small = model.from_batch(render_batch(config(**{"outbound-ip-range-exclusion-list": "10.1.0.0/16,10.3.0.0/16"})), "nftredir")
    assert "\t\telements = { 10.1.0.0/16, 10.3.0.0/16 }" in diff.ruleset_lines(small)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**16)), max_size=20))
def test_an_ipv4_interval_is_written_as_the_kernel_lists_it(pairs):
    intervals = [[low, min(low + size, 2**32 - 1)] for low, size in pairs]
    expected = []
    for low, high in intervals:
        first, last = ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)
        nets = list(ipaddress.summarize_address_range(first, last))
        single = nets[0] if len(nets) == 1 else None
        expected.append(f"{first}-{last}" if single is None else str(first) if single.prefixlen == 32 else str(single))
    assert model._ipv4_interval_texts(intervals) == tuple(expected)


def _patched(a: list[str], lines: list[str]) -> list[str]:
    """a with a unified diff's hunks applied; each hunk's header must count its own lines."""
    out, at, index = [], 0, 2  # past the ---/+++ lines
    while index < len(lines):
        _, old, new, _ = lines[index].split(" ", 3)
        old_start, _, old_len = old[1:].partition(",")
        new_len = int(new[1:].partition(",")[2] or 1)
        old_count = int(old_len or 1)
        first = int(old_start) - (1 if old_count else 0)  # an empty range names the line before it
        out += a[at:first]
        at, index, seen_old, seen_new = first, index + 1, 0, 0
        while index < len(lines) and not lines[index].startswith("@@ "):
            mark, text = lines[index][0], lines[index][1:]
            if mark in " -":
                assert a[at] == text
                at, seen_old = at + 1, seen_old + 1
            if mark in " +":
                out.append(text)
                seen_new += 1
            index += 1
        assert (seen_old, seen_new) == (old_count, new_len)
    return out + a[at:]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=30), st.data(), st.integers(0, 4))
def test_the_trimmed_unified_diff_turns_live_into_desired(a, data, context):
    b = data.draw(st.lists(st.sampled_from("abcde"), max_size=30) | st.just(list(a)))
    if data.draw(st.booleans()) and a:  # and often a small edit of a, as drift is
        b = list(a)
        b.insert(data.draw(st.integers(0, len(b))), "x")
    lines = diff.unified_lines(a, b, "live", "desired", context)
    assert (lines == []) == (a == b)
    if lines:
        assert lines[:2] == ["--- live", "+++ desired"] and _patched(a, lines) == b


def test_the_trimmed_unified_diff_of_one_changed_element_is_difflibs():
    import difflib

    a = [f"\t\t\t10.{i // 256}.{i % 256}.0/30," for i in range(5000)]
    for b in (a[:2500] + a[2501:], a[:1] + ["\t\t\t192.0.2.0/30,"] + a[1:], a[:-1], ["x"] + a):
        assert diff.unified_lines(a, b, "l", "d", 3) == list(difflib.unified_diff(a, b, "l", "d", lineterm="", n=3))
