"""Validation: every bad value is refused with one line naming the source, the value and why."""

from __future__ import annotations

import pytest

from nftredir.config import Config, Item, build_config, split_items
from nftredir.errors import EXIT_INVALID, ConfigError

HOSTILE = ["a\nb", "a;b", "a}b", 'a"b', "a'b", "é", "x" * 1_000_000, "$(reboot)", "`id`", "\x00", "a\rb"]


def config_from(**options: str) -> Config:
    """A Config from flag-style keyword arguments, each item's source the flag a user types."""
    flags = {name.replace("_", "-"): text for name, text in options.items()}
    return build_config({name: split_items(text, f"--{name}") for name, text in flags.items()})


def refusal(**options: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from(**options)
    return caught.value


def test_defaults_are_fsm_constants():
    config = Config()
    assert (config.proxy_uid, config.proxy_admin_port, config.proxy_outbound_port) == (1500, 15000, 15001)
    assert (config.proxy_inbound_port, config.prometheus_port, config.healthcheck_port) == (15003, 15010, 15904)
    assert config.probe_ports == (15901, 15902, 15903)
    assert (config.local_proxy_mode, config.table) == ("localhost", "nftredir")


def test_lists_are_split_trimmed_and_deduplicated_keeping_first():
    config = config_from(outbound_port_exclusion_list=" 20, 10 ,20,,", inbound_port_exclusion_list="")
    assert config.outbound_port_exclusions == (20, 10)
    assert config.inbound_port_exclusions == ()


def test_repeated_flags_accumulate():
    raw = {"outbound-port-exclusion-list": split_items("10", "--a") + split_items("20,10", "--a")}
    assert build_config(raw).outbound_port_exclusions == (10, 20)


def test_host_bits_are_masked_as_iptables_does():
    config = config_from(outbound_ip_range_exclusion_list="10.0.0.1/8,10.0.0.0/8")
    assert [str(cidr) for cidr in config.outbound_ip_range_exclusions] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    "value, reason",
    [
        ("foobar", "not an IPv4 CIDR"),
        ("10.0.0.0", "not an IPv4 CIDR"),  # FSM requires a prefix length
        ("10.0.0.0/33", "not an IPv4 CIDR"),
        ("256.0.0.0/8", "not an IPv4 CIDR"),
        ("10.0.0.0/255.0.0.0", "not an IPv4 CIDR"),
        ("010.0.0.0/8", "leading zeros are not permitted"),
        ("fd00::/8", "only with --ip-family dual"),
    ],
)
def test_bad_cidrs_are_refused(value, reason):
    error = refusal(outbound_ip_range_inclusion_list=f"1.1.1.1/32,{value}")
    assert error.source == "--outbound-ip-range-inclusion-list"
    assert error.value == value and reason in error.reason


@pytest.mark.parametrize("value", ["0", "65536", "70000", "-1", "+5", "1e3", "http", "99999999999", "٨٠"])
def test_ports_outside_1_to_65535_are_refused(value):
    error = refusal(outbound_port_exclusion_list=value)
    assert "1 to 65535" in str(error) and repr(value) in str(error)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("a" * 16, "at most 15 bytes"),
        ("a/b", "Linux refuses '/'"),
        ("a b", "Linux refuses ' '"),
        ("a:b", "Linux refuses ':'"),
        ("a\tb", "control characters"),
        ("eth\n0", "control characters"),
        ("é", "non-ASCII"),
        (".", "not a valid interface name"),
        ('a"b', "is not accepted"),
        ("a*", "is not accepted"),
        ("a+b", "only allowed at the end"),
    ],
)
def test_interface_names_linux_or_nft_would_refuse(name, reason):
    error = refusal(network_interface_exclusion_list=name)
    assert reason in error.reason


def test_interface_names_linux_accepts_are_kept_verbatim():
    names = "eth0,veth1234abcd567,a;b}c,x'y,eth+,a$b#c"
    assert config_from(network_interface_exclusion_list=names).network_interface_exclusions == tuple(names.split(","))


def test_podip_mode_needs_a_pod_ip():
    error = refusal(local_proxy_mode="PodIP")
    assert error.value == "PodIP" and "--pod-ip" in error.reason


@pytest.mark.parametrize("pod_ip", ["10.0.0", "fd00::1", "10.0.0.1/32", "010.0.0.1"])
def test_podip_mode_needs_a_valid_ipv4_pod_ip(pod_ip):
    error = refusal(local_proxy_mode="podip", pod_ip=pod_ip)
    assert error.source == "--pod-ip" and "not an IPv4 address" in error.reason


def test_pod_ip_is_ignored_outside_podip_mode():
    # POD_IP is always set by the downward API, and may be IPv6 in a localhost-mode pod.
    assert config_from(pod_ip="fd00::1").pod_ip is None
    assert str(config_from(local_proxy_mode="podip", pod_ip="10.1.2.3").pod_ip) == "10.1.2.3"


@pytest.mark.parametrize("uid, ok", [("0", True), ("1500", True), ("4294967294", True), ("4294967295", False), ("-1", False), ("x", False)])
def test_proxy_uid_range(uid, ok):
    if ok:
        assert config_from(proxy_uid=uid).proxy_uid == int(uid)
    else:
        assert "not a UID" in refusal(proxy_uid=uid).reason


@pytest.mark.parametrize("table", ["Nftredir", "1table", "a-b", "a" * 33, "", "nft redir"])
def test_table_names_are_plain_identifiers(table):
    with pytest.raises(ConfigError, match="table names"):
        build_config({"table": [Item(table, "--table")]})


def test_mode_must_be_known():
    assert "'localhost' or 'podip'" in refusal(local_proxy_mode="ebpf").reason


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "option",
    [
        "outbound_ip_range_exclusion_list",
        "outbound_port_exclusion_list",
        "local_proxy_mode",
        "proxy_uid",
        "table",
        "healthcheck_port",
    ],
)
def test_hostile_values_are_refused_in_one_short_line(option, value):
    error = refusal(**{option: value})
    message = str(error)
    assert "\n" not in message and "\r" not in message and len(message) < 300
    assert message.startswith(f"--{option.replace('_', '-')}: ")  # the flag as a user types it
    assert error.exit_code == EXIT_INVALID


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_interface_names_are_refused_or_inert(value):
    """Linux accepts ';' and '}' and quotes other than '"'; those are kept, everything else refused."""
    try:
        config = config_from(network_interface_exclusion_list=value)
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 300
    else:
        assert config.network_interface_exclusions == (value,)
        assert value in ("a;b", "a}b", "a'b", "$(reboot)", "`id`")
