"""Dual stack (--ip-family dual): IPv6 CIDRs, validation from every source, the pod's IPv6
address, rendering, and the kernel's view (apply, diff, status). The traffic itself is proven
against FSM's rules in tests/test_differential.py."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nftredir import cidr
from nftredir.cidr import Cidr
from nftredir.config import Config
from nftredir.errors import ConfigError
from nftredir.render import IP6TABLES_HEADER, IPTABLES_HEADER, render, render_batch
from nftredir.config import Item, build_config
from nftredir.sources import Files, gather
from lab import netlab as nl
from tests.scenarios import SCENARIOS, config_of

DUAL = {"ip_family": "dual"}


# --------------------------------------------------------------------------- cidr


@pytest.mark.parametrize(
    "text, expected",
    [("2001:db8::1/64", "2001:db8::/64"), ("::/0", "::/0"), ("2001:DB8:0:0::/32", "2001:db8::/32"),
     ("fd00::ffff/128", "fd00::ffff/128"), ("2001:db8:1:2:3:4:5:6/127", "2001:db8:1:2:3:4:5:6/127"),
     ("64:ff9b::10.0.0.1/120", "64:ff9b::a00:0/120")],
)
def test_ipv6_parse_masks_host_bits_as_ipaddress_does(text, expected):
    parsed = cidr.parse(text)
    assert parsed.version == 6 and str(parsed) == expected == str(ipaddress.IPv6Network(text, strict=False))


@pytest.mark.parametrize(
    "text, reason",
    [("2001:db8::/129", "prefix length 129 is over 128"), ("fe80::1%eth0/64", "zone ids"),
     ("::ffff:10.0.0.0/104", "IPv4-mapped range matches no packet: write the IPv4 range 10.0.0.0/8"),
     ("::ffff:0:0/96", "IPv4-mapped"), ("2001:db8::", "expected an IPv6 addr/len"),
     ("2001:db8::/064", "no leading zeros"), ("2001:db8:::/64", "not an IPv6 address"),
     ("1:2:3:4:5:6:7:8:9/64", "not an IPv6 address"), ("2001:db8::/٦٤", "expected"), ("[2001:db8::]/64", "expected"),
     (" 2001:db8::/64", "expected"), ("2001:db8::/64\n", "expected")],
)
def test_ipv6_parse_refuses(text, reason):
    with pytest.raises(ValueError, match=reason):
        cidr.parse(text)


def test_an_ipv4_and_an_ipv6_network_with_the_same_ints_are_different():
    assert cidr.parse("0.0.0.0/0") != cidr.parse("::/0")
    assert len({cidr.parse("0.0.0.0/0"), cidr.parse("::/0")}) == 2


def test_ipv6_merge_joins_adjacent_ranges_and_keeps_a_gap_of_one_address():
    merged = cidr.merge(cidr.parse(t) for t in ["2001:db8::/33", "2001:db8:8000::/33", "fd00::/128", "fd00::2/128"])
    assert [str(c) for c in merged] == ["2001:db8::/32", "fd00::/128", "fd00::2/128"]
    assert cidr.merge([Cidr(0, 0, 6), Cidr(5, 128, 6)]) == [Cidr(0, 0, 6)]


# Drawn from a small block, so overlaps, adjacency and one-address gaps all happen.
networks6 = st.builds(lambda value, length: cidr.parse(f"{ipaddress.IPv6Address((0xfd << 120) + value)}/{length}"),
                      st.integers(0, 255), st.integers(120, 128))


@settings(max_examples=300, deadline=None)
@given(st.lists(networks6, max_size=40))
@example([cidr.parse("fd00::/128"), cidr.parse("fd00::2/128")])
def test_ipv6_merge_equals_the_standard_librarys_collapse(blocks):
    expected = ipaddress.collapse_addresses(ipaddress.IPv6Network(str(b)) for b in blocks)
    assert [str(c) for c in cidr.merge(blocks)] == [str(n) for n in expected]


# --------------------------------------------------------------------------- validation


def refusal(**options: str) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        config_of(**options)
    return error.value


@pytest.mark.parametrize("option", ["outbound_ip_range_exclusion_list", "outbound_ip_range_inclusion_list"])
def test_ipv6_ranges_in_ipv4_mode_are_refused_naming_ip_family_dual(option):
    error = refusal(**{option: "10.0.0.0/8,fd00::/8"})
    assert error.value == "fd00::/8" and "--ip-family dual" in error.reason
    assert config_of(**{option: "10.0.0.0/8,fd00::/8"}, **DUAL).ip_family == "dual"


@pytest.mark.parametrize("value", ["ipv6", "both", "", "4"])
def test_ip_family_is_ipv4_or_dual(value):
    assert "'ipv4' or 'dual'" in refusal(ip_family=value).reason
    assert config_of(ip_family="DUAL").ip_family == "dual" and Config().ip_family == "ipv4"


def _files(tmp_path, ranges: str) -> dict[str, str]:
    (tmp_path / "mesh.yaml").write_text(
        f"apiVersion: config.flomesh.io/v1alpha3\nkind: MeshConfig\nspec:\n  traffic:\n"
        f"    outboundIPRangeExclusionList: [{ranges}]\n")
    (tmp_path / "annotations").write_text(f'flomesh.io/outbound-ip-range-inclusion-list="{ranges}"\n')
    (tmp_path / "own.yaml").write_text(f"outbound-ip-range-exclusion-list: [{ranges}]\n")
    return {name: str(tmp_path / name) for name in ("mesh.yaml", "annotations", "own.yaml")}


@pytest.mark.parametrize("source", ["flag", "environment", "config", "meshconfig", "annotations"])
def test_every_source_takes_ipv6_ranges_in_dual_mode_and_refuses_them_in_ipv4_mode(source, tmp_path):
    paths = _files(tmp_path, "2001:db8::/32")
    option = "outbound-ip-range-exclusion-list"
    flags = {option: [Item("2001:db8::/32", f"--{option}")]} if source == "flag" else {}
    environ = {"NFTREDIR_OUTBOUND_IP_RANGE_EXCLUSION_LIST": "2001:db8::/32"} if source == "environment" else {}
    files = Files(config=paths["own.yaml"] if source == "config" else None,
                  mesh_config=paths["mesh.yaml"] if source == "meshconfig" else None,
                  pod_annotations=paths["annotations"] if source == "annotations" else None)
    raw = gather(flags, environ, files)
    with pytest.raises(ConfigError, match="only with --ip-family dual") as error:
        build_config(raw)
    expected_source = {
        "flag": "--outbound-ip-range-exclusion-list", "environment": "NFTREDIR_OUTBOUND_IP_RANGE_EXCLUSION_LIST",
        "config": "own.yaml:1: outbound-ip-range-exclusion-list[0]",
        "meshconfig": "mesh.yaml:5: spec.traffic.outboundIPRangeExclusionList[0]",
        "annotations": "annotations:1 flomesh.io/outbound-ip-range-inclusion-list",
    }[source]
    assert str(error.value.source).endswith(expected_source) and error.value.value == "2001:db8::/32"
    config = build_config(gather(flags, {**environ, "NFTREDIR_IP_FAMILY": "dual"}, files))
    assert cidr.parse("2001:db8::/32") in (*config.outbound_ip_range_exclusions, *config.outbound_ip_range_inclusions)


def test_dual_podip_needs_the_pods_ipv6_address():
    error = refusal(**DUAL, local_proxy_mode="podip", pod_ip="10.0.0.5")
    assert error.source == "--pod-ip" and "IPv6 address" in error.reason and "POD_IPS" in error.reason
    no_address = refusal(**DUAL, local_proxy_mode="podip")
    assert "IPv4 and IPv6 addresses" in no_address.reason


@pytest.mark.parametrize("pod_ip", ["10.0.0.5,fd00::5", "fd00::5,10.0.0.5", " fd00::5 , 10.0.0.5 "])
def test_pod_ip_takes_one_address_of_each_family_in_either_order(pod_ip):
    config = config_of(**DUAL, local_proxy_mode="podip", pod_ip=pod_ip)
    assert (str(config.pod_ip), str(config.pod_ip6)) == ("10.0.0.5", "fd00::5")
    ipv4_mode = config_of(local_proxy_mode="podip", pod_ip=pod_ip)  # the IPv6 one is not used
    assert (str(ipv4_mode.pod_ip), ipv4_mode.pod_ip6) == ("10.0.0.5", None)


@pytest.mark.parametrize(
    "pod_ip, reason",
    [("10.0.0.5,10.0.0.6", "more than one IPv4"), ("10.0.0.5,fd00::5,fd00::6", "more than one IPv6"),
     ("10.0.0.5,::1", "not a pod address"), ("10.0.0.5,::", "not a pod address"), ("10.0.0.5,ff02::1", "not a pod address"),
     ("10.0.0.5,fe80::1", "not a pod address"), ("10.0.0.5,::ffff:10.0.0.5", "not a pod address"),
     ("10.0.0.5,fe80::1%eth0", "zone ids"), ("10.0.0.5,fd00::5/64", "not an IPv6 address"),
     ("10.0.0.5,fd00:::5", "not an IPv6 address"), ("fd00::5", "not an IPv4 address")],
)
def test_bad_pod_addresses_are_refused(pod_ip, reason):
    assert reason in refusal(**DUAL, local_proxy_mode="podip", pod_ip=pod_ip).reason


@pytest.mark.parametrize(
    "environ, expected",
    [({"POD_IPS": "10.0.0.5,fd00::5", "POD_IP": "10.0.0.9"}, ("10.0.0.5", "fd00::5", "POD_IPS")),
     ({"POD_IP": "10.0.0.9"}, ("10.0.0.9", None, "POD_IP")),
     ({"NFTREDIR_POD_IP": "10.0.0.7,fd00::7", "POD_IPS": "10.0.0.5,fd00::5"}, ("10.0.0.7", "fd00::7", "NFTREDIR_POD_IP"))],
)
def test_pod_ips_from_the_downward_api(environ, expected):
    raw = gather({}, {**environ, "NFTREDIR_LOCAL_PROXY_MODE": "podip", "NFTREDIR_IP_FAMILY": "dual"})
    if expected[1] is None:
        with pytest.raises(ConfigError, match="no IPv6 address"):
            build_config(raw)
        return
    config = build_config(raw)
    assert (str(config.pod_ip), str(config.pod_ip6), config.sources["pod_ip6"]) == expected


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize("fmt", ["nft", "json", "iptables"])
@pytest.mark.parametrize("scenario", ["no_lists", "all_lists", "podip"])
def test_ipv4_mode_renders_exactly_what_no_ip_family_renders(scenario, fmt):
    assert render(config_of(**SCENARIOS[scenario], ip_family="ipv4"), fmt) == render(config_of(**SCENARIOS[scenario]), fmt)
    assert "ip6" not in render(config_of(**SCENARIOS[scenario]), fmt)


def test_dual_iptables_render_is_fsms_script_then_its_ipv6_counterpart():
    config = config_of(**SCENARIOS["dual_all_lists"], local_proxy_mode="podip", pod_ip="10.0.0.5,fd00::5")
    text = render(config, "iptables")
    ipv4, ipv6 = text.split(IP6TABLES_HEADER + "\n")
    assert ipv4.startswith(IPTABLES_HEADER + "\n*nat\n") and ipv6 == render(config, "ip6tables")
    assert "::" not in ipv4 and "-d 2001:db8::1/128 -j RETURN" in ipv6 and "-d 1.1.1.1/32" not in ipv6
    assert "-o lo ! -d ::1/128 -m owner --uid-owner 1500 -j FSM_PROXY_IN_REDIRECT" in ipv6
    assert "-j DNAT --to-destination fd00::5\n" in ipv6 and "-j DNAT --to-destination 10.0.0.5\n" in ipv4
    assert "-d fd00:3::/64 -j FSM_PROXY_OUT_REDIRECT" in ipv6


def test_ip6tables_format_needs_dual_mode():
    with pytest.raises(ConfigError, match="needs --ip-family dual"):
        render(Config(), "ip6tables")


@pytest.mark.parametrize("included, family_without", [("10.0.0.0/8", "ipv6"), ("fd00::/8", "ipv4")])
def test_a_family_without_included_ranges_is_not_redirected(included, family_without):
    """Once any inclusion is given, only included ranges go to the sidecar: the other family's
    traffic reaches the final return, in nft and in the reference scripts alike."""
    config = config_of(**DUAL, outbound_ip_range_inclusion_list=included)
    batch = render_batch(config)
    rules = [c["add"]["rule"] for c in batch["nftables"] if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "PROXY_OUTPUT"]
    assert rules[-1]["comment"] == "not included" and rules[-1]["expr"] == [{"counter": None}, {"return": None}]
    assert len([r for r in rules if "inclusions" in r["comment"]]) == 1
    script = render(config, "ip6tables" if family_without == "ipv6" else "iptables").split(IP6TABLES_HEADER)[0]
    assert "-j FSM_PROXY_OUT_REDIRECT" not in script.split("-A OUTPUT")[1] and script.rstrip().endswith("-j RETURN\nCOMMIT")


def test_dual_sets_are_ipv6_interval_sets_merged_like_ipv4():
    batch = render_batch(config_of(**DUAL, outbound_ip_range_exclusion_list="2001:db8::/33,2001:db8:8000::/33,fd00::1/128"))
    (elements,) = [c["add"]["set"] for c in batch["nftables"] if c.get("add", {}).get("set", {}).get("name") == "outbound_ip6_range_exclusions"]
    assert elements["type"] == "ipv6_addr" and elements["flags"] == ["interval"]
    assert elements["elem"] == [{"prefix": {"addr": "2001:db8::", "len": 32}}, "fd00::1"]


# --------------------------------------------------------------------------- the CLI and the kernel

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


@requires_root
@pytest.mark.parametrize(
    "argv, message",
    [(["--outbound-ip-range-exclusion-list", "fd00::/8"], "'fd00::/8': an IPv6 range: IPv6 is redirected only with --ip-family dual"),
     (["--ip-family", "dual", "--outbound-ip-range-exclusion-list", "2001:db8::/129"], "prefix length 129 is over 128"),
     (["--ip-family", "dual", "--outbound-ip-range-inclusion-list", "fe80::1%eth0/64"], "zone ids"),
     (["--ip-family", "dual", "--outbound-ip-range-exclusion-list", "::ffff:10.0.0.0/104"], "write the IPv4 range 10.0.0.0/8"),
     (["--ip-family", "dual", "--local-proxy-mode", "podip", "--pod-ip", "10.0.0.5"], "needs the pod's IPv6 address too"),
     (["--ip-family", "ipv6"], "--ip-family: 'ipv6': must be 'ipv4' or 'dual'")],
)
def test_bad_dual_stack_input_is_one_line_exit_2_and_the_kernel_untouched(argv, message):
    with nl.netns(nl.unique_name("cli")) as ns:
        cli = ns
        result = cli.nftredir("apply", *argv, env={"POD_IP": "", "POD_IPS": ""})
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith("nftredir: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1
        assert cli.nft("list", "ruleset").stdout == ""


@requires_root
def test_dual_apply_is_idempotent_and_diff_and_status_see_ipv6_drift():
    flags = ["--ip-family", "dual", "--local-proxy-mode", "podip", "--pod-ip", "10.0.0.5,fd00::5",
             "--outbound-ip-range-exclusion-list", "2001:db8::/32,10.0.0.0/8", "--outbound-ip-range-inclusion-list", "fd00:1::/64"]
    with nl.netns(nl.unique_name("dual")) as ns:
        cli = ns
        assert cli.nftredir("apply", *flags).returncode == 0
        first = cli.list_table()
        assert cli.nftredir("apply", *flags).returncode == 0
        assert cli.list_table() == first
        assert cli.nftredir("diff", *flags).returncode == 0
        status = json.loads(cli.nftredir("status", "--format", "json", *flags).stdout)
        assert status["matches"] and {"name": "outbound_ip6_range_exclusions", "type": "ipv6_addr", "flags": ["interval"],
                                      "elements": ["2001:db8::/32"]} in status["sets"]
        # ipv4 mode is another ruleset: diff says so.
        assert cli.nftredir("diff", "--outbound-ip-range-exclusion-list", "10.0.0.0/8").returncode == 1
        cli.nft("add", "element", "inet", "nftredir", "outbound_ip6_range_exclusions", "{ 2001:db9::/32 }")
        cli.nft("delete", "rule", "inet", "nftredir", "output", "handle",
                _handle(cli.nft("-a", "list", "chain", "inet", "nftredir", "output").stdout, "dnat ip6 to fd00::5"))
        drift = json.loads(cli.nftredir("diff", "--format", "json", *flags).stdout)
        changes = {(d["object"], d["change"], d["name"]) for d in drift["differences"]}
        assert changes == {("set", "changed", "outbound_ip6_range_exclusions"), ("rule", "missing", "output")}
        assert cli.nftredir("apply", *flags).returncode == 0 and cli.list_table() == first


def _handle(listing: str, needle: str) -> str:
    (line,) = [line for line in listing.splitlines() if needle in line]
    return line.rsplit("# handle ", 1)[1].strip()


def test_config_shows_the_ip_family_and_both_pod_addresses_with_their_source():
    from nftredir.sources.report import effective

    raw = gather({}, {"POD_IPS": "fd00::5,10.0.0.5", "NFTREDIR_LOCAL_PROXY_MODE": "podip", "NFTREDIR_IP_FAMILY": "dual"})
    report = effective(build_config(raw), raw)
    assert report["ip-family"] == {"value": "dual", "source": "NFTREDIR_IP_FAMILY"}
    assert report["pod-ip"] == {"value": "10.0.0.5,fd00::5", "source": "POD_IPS"}
    ipv4_raw = {k: v for k, v in raw.items() if k != "ip-family"}
    assert effective(build_config(ipv4_raw), ipv4_raw)["pod-ip"] == {"value": "10.0.0.5", "source": "POD_IPS"}


def test_a_repeated_pod_ip_flag_gives_one_address_of_each_family_the_last_of_each_counting():
    from nftredir.config import Item

    raw = {"ip-family": [Item("dual", "--ip-family")], "local-proxy-mode": [Item("podip", "--local-proxy-mode")],
           "pod-ip": [Item("10.0.0.5", "--pod-ip"), Item("fd00::5", "--pod-ip"), Item("10.0.0.6", "--pod-ip")]}
    config = build_config(raw)
    assert (str(config.pod_ip), str(config.pod_ip6)) == ("10.0.0.6", "fd00::5")
    with pytest.raises(ConfigError, match="no IPv6 address"):
        build_config({**raw, "pod-ip": [Item("10.0.0.5", "--pod-ip"), Item("10.0.0.6", "--pod-ip")]})
