"""Pure parts of validate and doctor: which destinations validate probes, the /proc parsers, the
netlink and getsockopt decoders, and the judgements doctor makes over listings."""

from __future__ import annotations

import struct

from nftredir import doctor, legacy, netlink_table
from nftredir.cidr import Cidr, parse
from nftredir.netinfo import Route, parse_local_addresses, parse_routes
from nftredir.probes import Landing, Outcome
from nftredir.validate import judge, plan
from tests.scenarios import config_of

ROUTE_TEXT = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100630A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t000200C0\t0100620A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0000620A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0
"""
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     |-- 10.99.0.2
        /32 host LOCAL
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""
ROUTES = [Route("eth0", Cidr(0, 0)), Route("eth0", parse("10.99.0.0/24")), Route("eth1", parse("192.0.2.0/24"))]
LOCAL = {parse("10.99.0.2/32").network, parse("127.0.0.1/32").network}


def probes(checks):
    return {c.name: (c.probe.uid, c.probe.dst, c.probe.port) if c.probe else c.skip for c in checks}


def test_routes_are_read_in_host_byte_order_and_down_or_reject_routes_dropped():
    assert parse_routes(ROUTE_TEXT) == [
        Route("eth0", Cidr(0, 0)), Route("eth0", parse("10.99.0.0/24")), Route("eth1", parse("192.0.2.0/24"))
    ]


def test_local_addresses_are_the_host_local_entries():
    assert parse_local_addresses(FIB_TRIE) == LOCAL


def test_plan_picks_a_redirected_harmless_destination_and_names_every_check():
    checks = plan(config_of(), ROUTES, LOCAL)
    got = probes(checks)
    assert got["outbound-redirect"] == (65534, "192.0.2.1", 80)
    assert got["proxy-bypass"] == (1500, "192.0.2.1", 9)
    assert got["inbound-reentry"] == (1500, "10.99.0.2", 8080)
    assert [c.expect for c in checks] == ["outbound", None, "inbound"]


def test_plan_respects_inclusions_exclusions_ports_and_interfaces():
    config = config_of(
        outbound_ip_range_exclusion_list="192.0.2.0/24,10.0.0.0/16",
        outbound_ip_range_inclusion_list="10.0.0.0/8",
        outbound_port_exclusion_list="80,6379",
        network_interface_exclusion_list="eth1",
    )
    got = probes(plan(config, ROUTES, LOCAL))
    assert got["outbound-redirect"] == (65534, "10.1.0.0", 8080)  # the first included address past the exclusion
    assert got["proxy-bypass"] == (1500, "10.1.0.0", 9)
    assert got["excluded-ip-range"] == (65534, "192.0.2.1", 9)
    assert got["excluded-port"] == (65534, "10.1.0.0", 80)
    quiet = probes(plan(config_of(outbound_port_exclusion_list="9,7"), ROUTES, LOCAL))
    assert quiet["proxy-bypass"] == (1500, "192.0.2.1", 19)  # the next port nothing serves
    assert got["excluded-interface"] == "no route through an excluded interface"  # 192.0.2/24 is excluded anyway


def test_ipv6_ranges_do_not_count_for_the_ipv4_probes():
    """validate probes IPv4: in dual mode an IPv6 range (here all of IPv6) must neither exclude
    nor include an IPv4 address, though it is an int range too."""
    dual = dict(ip_family="dual", outbound_ip_range_exclusion_list="::/0,10.0.0.0/16")
    assert probes(plan(config_of(**dual), ROUTES, LOCAL)) == probes(
        plan(config_of(outbound_ip_range_exclusion_list="10.0.0.0/16"), ROUTES, LOCAL))
    only6 = probes(plan(config_of(ip_family="dual", outbound_ip_range_inclusion_list="::/0"), ROUTES, LOCAL))
    assert only6["outbound-redirect"].startswith("no destination to probe")  # IPv4 has no included range


def test_without_a_route_the_outbound_checks_are_skipped_plainly():
    got = probes(plan(config_of(outbound_port_exclusion_list="6379"), [], {parse("127.0.0.1/32").network}))
    assert got["outbound-redirect"].startswith("no destination to probe: the pod has no route")
    assert got["excluded-port"] == got["proxy-bypass"] == got["outbound-redirect"]
    assert got["inbound-reentry"] == (1500, "127.0.0.2", 8080)  # over lo, not 127.0.0.1


def test_the_proxy_uid_is_never_the_app_uid():
    checks = plan(config_of(proxy_uid="65534"), ROUTES, LOCAL)
    assert probes(checks)["outbound-redirect"][0] == 65533


def test_podip_probes_the_pod_ip_when_the_namespace_has_it():
    got = probes(plan(config_of(local_proxy_mode="podip", pod_ip="10.99.0.2"), ROUTES, LOCAL))
    assert got["podip-dnat"] == (1500, "127.0.0.1", 0)  # the port is the pod listener's, known once bound
    other = probes(plan(config_of(local_proxy_mode="podip", pod_ip="10.5.5.5"), ROUTES, LOCAL))
    assert other["podip-dnat"] == "the pod IP 10.5.5.5 is not an address of this namespace"


LISTENERS = {"outbound": "127.0.0.1:15001", "inbound": "127.0.0.1:15003"}


def test_judge_says_what_was_expected_and_what_came():
    [outbound, bypass, _] = plan(config_of(), ROUTES, LOCAL)
    wrong = Outcome(outbound.probe, "connected", Landing("inbound", "127.0.0.1:15003", "10.99.0.2:4000", "192.0.2.1:80"))
    result = judge(outbound, wrong, LISTENERS, 0.5)
    assert result.status == "fail"
    assert result.expected == "lands on the outbound listener 127.0.0.1:15001, original destination 192.0.2.1:80"
    assert result.got == "landed on the inbound listener 127.0.0.1:15003, original destination 192.0.2.1:80"
    refused = judge(outbound, Outcome(outbound.probe, "refused", None), LISTENERS, 0.5)
    assert refused.status == "fail" and "refused" in refused.got
    assert judge(bypass, Outcome(bypass.probe, "timed out", None), LISTENERS, 0.5).status == "pass"
    landed = Outcome(bypass.probe, "connected", Landing("outbound", "127.0.0.1:15001", "10.99.0.2:4001", "192.0.2.1:8080"))
    assert judge(bypass, landed, LISTENERS, 0.5).status == "fail"
    wrong_orig = Outcome(outbound.probe, "connected", Landing("outbound", "127.0.0.1:15001", "x", "192.0.2.9:80"))
    assert judge(outbound, wrong_orig, LISTENERS, 0.5).status == "fail"


def test_table_userdata_stamp_is_decoded():
    userdata = b"\x00\x06hello\x00" + bytes([1, 4, 1, 1, 5, 0]) + bytes([2, 8]) + (1_700_000_000).to_bytes(8, "big")
    stamp = netlink_table.parse_userdata(userdata)
    assert stamp == netlink_table.Stamp((1, 1, 5, 0), 1_700_000_000) and str(stamp) == "1.1.5"
    assert netlink_table.parse_userdata(b"\x00\x06hello\x00") is None
    assert netlink_table.parse_userdata(b"") is None


def test_table_flags_and_comment_are_decoded_as_nft_prints_them():
    table = netlink_table.Table(1 | 2 | 8, b"\x00\x06hello\x00" + bytes([1, 4, 1, 1, 5, 0]))
    assert table.flag_names == ["0x8", "dormant", "owner"] and table.comment == "hello"
    assert table.stamp == netlink_table.Stamp((1, 1, 5, 0), None)
    assert netlink_table.Table(0, b"").flag_names == [] and netlink_table.Table(0, b"").comment is None
    persistent = netlink_table.Table(4, b"\x00\x03\xc3\xa9\x00")  # "é" in UTF-8, NUL-terminated
    assert (persistent.flag_names, persistent.comment) == (["persist"], "é")


def test_legacy_entries_beyond_an_empty_table():
    def info(valid_hooks: int, entries: int) -> bytes:
        return struct.pack("=32sI5I5III", b"nat", valid_hooks, *[0] * 10, entries, 0)

    nat_hooks = 0b11011  # PREROUTING, INPUT, OUTPUT, POSTROUTING
    assert legacy.extra_entries(info(nat_hooks, 5)) == 0
    assert legacy.extra_entries(info(nat_hooks, 6)) == 1


def test_legacy_tables_are_judged_by_their_rules(tmp_path):
    (tmp_path / "ip_tables_names").write_text("nat\nfilter\n")
    assert legacy.table_names(tmp_path) == {"ip": ["nat", "filter"]}
    empty = legacy.LegacyTable("ip", "filter", 0)
    assert doctor.legacy_findings([]).status == "ok"
    assert doctor.legacy_findings([empty]).status == "ok"
    assert doctor.legacy_findings([empty, legacy.LegacyTable("ip", "nat", 3)]).status == "problem"
    assert doctor.legacy_findings([legacy.LegacyTable("ip", "filter", 2)]).status == "warning"
    tproxy = doctor.legacy_findings([legacy.LegacyTable("ip", "mangle", 2, ("ISTIO_DIVERT",), ("TPROXY",))])
    assert tproxy.status == "problem" and "of Istio" in tproxy.summary
    assert tproxy.details == ["ip mangle: 2 entries beyond the empty table; chains ISTIO_DIVERT; targets TPROXY"]


def _entry(family: str, target: str, data: bytes = b"") -> bytes:
    """One ipt_entry/ip6t_entry with its target, as the kernel lays them out (no matches)."""
    size = {"ip": 112, "ip6": 168}[family]
    target_blob = struct.pack("=H29sB", 32 + len(data), target.encode(), 0) + data
    entry = bytearray(size)
    struct.pack_into("=HH", entry, {"ip": 88, "ip6": 140}[family], size, size + len(target_blob))
    return bytes(entry) + target_blob


def test_legacy_entries_give_user_chains_and_targets():
    for family in ("ip", "ip6"):
        blob = (_entry(family, "", struct.pack("=i", -1)) + _entry(family, "ERROR", b"FSM_PROXY_OUTBOUND".ljust(32, b"\0"))
                + _entry(family, "REDIRECT", bytes(8)) + _entry(family, "ERROR", b"ERROR".ljust(32, b"\0")))
        assert legacy.parse_entries(family, blob) == (("FSM_PROXY_OUTBOUND",), ("REDIRECT",))


def test_version_skew():
    assert doctor.version_skew("1.0.6", ("/usr/sbin/nft", "nftables v1.0.6 (Lester Gooch #5)")).status == "ok"
    assert doctor.version_skew("1.0.6", ("/usr/sbin/nft", "nftables v1.1.3 (Commodore Bullmoose #4)")).status == "warning"
    assert doctor.version_skew("1.0.6", None).status == "ok"
    assert doctor.version_skew(None, ("/usr/sbin/nft", "nftables v1.0.6")).status == "skipped"


def _listing(*items):
    return {"nftables": [{"metainfo": {"version": "1.0.6"}}, *items]}


def test_mesh_iptables_names_the_mesh_and_ignores_inet_tables():
    chains = [{"chain": {"family": "ip", "table": "nat", "name": n}} for n in ("ISTIO_OUTPUT", "ISTIO_REDIRECT", "OUTPUT")]
    found = doctor.mesh_iptables(_listing(*chains))
    assert found.status == "problem" and "Istio" in found.summary
    assert found.details == ["table ip nat: chains ISTIO_OUTPUT, ISTIO_REDIRECT"]
    ours = [{"chain": {"family": "inet", "table": "nftredir", "name": "PROXY_OUTPUT"}}]
    assert doctor.mesh_iptables(_listing(*ours)).status == "ok"


def test_nftredir_like_needs_nftredirs_chains_in_an_inet_table_of_another_name():
    def table(family, name):
        return [{"chain": {"family": family, "table": name, "name": c}} for c in sorted(doctor.NFTREDIR_CHAINS)]

    assert doctor.nftredir_like(_listing(*table("inet", "nftredir")), "nftredir").status == "ok"
    assert doctor.nftredir_like(_listing(*table("ip", "nat")), "nftredir").status == "ok"  # OSM's iptables: mesh-iptables
    assert doctor.nftredir_like(_listing(*table("inet", "old")), "nftredir").details == [
        "table inet old (chains PROXY_INBOUND, PROXY_IN_REDIRECT, PROXY_OUTPUT, PROXY_REDIRECT)"
    ]
    empty = doctor.nftredir_like(_listing({"table": {"family": "inet", "name": "nftredir2"}}), "nftredir")
    assert empty.status == "warning" and empty.details == ["table inet nftredir2 (named like nftredir's, without its chains)"]
    mark = {"counter": {"family": "inet", "table": "renamed", "name": "managed_by_nftredir"}}
    assert doctor.nftredir_like(_listing(mark), "nftredir").details == ["table inet renamed (the managed_by_nftredir mark)"]


def test_table_writers_warns_only_for_newer_ones():
    stamps = {"inet nftredir": None, "ip kube": netlink_table.Stamp((1, 0, 6, 0), None)}
    assert doctor.table_writers(stamps, "1.0.6").status == "ok"
    stamps["inet new"] = netlink_table.Stamp((1, 1, 5, 0), None)
    newer = doctor.table_writers(stamps, "1.0.6")
    assert newer.status == "warning" and newer.details == ["table inet new: written by nft 1.1.5"]


def test_without_switching_uids_only_the_own_uid_probes():
    checks = probes(plan(config_of(), ROUTES, LOCAL, only_uid=0))
    assert checks["outbound-redirect"] == (0, "192.0.2.1", 80)
    assert "CAP_SETUID" in checks["proxy-bypass"] and "CAP_SETUID" in checks["inbound-reentry"]
    as_proxy = probes(plan(config_of(), ROUTES, LOCAL, only_uid=1500))
    assert as_proxy["proxy-bypass"] == (1500, "192.0.2.1", 9)
    assert "UID 65534" in as_proxy["outbound-redirect"]
