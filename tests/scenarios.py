"""FSM's own unit-test configurations, and two of them in dual stack (`--ip-family dual`, IPv6
lists and pod address added), shared by the golden, kernel and traffic tests."""

from __future__ import annotations

from nftredir.config import Config, Item, build_config, option_items


def config_of(**options: str) -> Config:
    """A Config from flag-style text, e.g. config_of(outbound_port_exclusion_list="10,20")."""
    return build_config(scenario_items_of(options))


SCENARIOS: dict[str, dict[str, str]] = {
    "no_lists": {},
    "all_lists": {
        "outbound_ip_range_exclusion_list": "1.1.1.1/32,2.2.2.2/32",
        "outbound_ip_range_inclusion_list": "3.3.3.3/32,4.4.4.4/32",
        "outbound_port_exclusion_list": "10,20",
        "inbound_port_exclusion_list": "30,40",
        "network_interface_exclusion_list": "eth0,eth1",
    },
    "podip": {"local_proxy_mode": "podip", "pod_ip": "10.0.0.5"},
    "dual_all_lists": {
        "ip_family": "dual",
        "outbound_ip_range_exclusion_list": "1.1.1.1/32,2001:db8::1/128,2.2.2.2/32,2001:db8:2::/48",
        "outbound_ip_range_inclusion_list": "3.3.3.3/32,4.4.4.4/32,fd00:3::/64",
        "outbound_port_exclusion_list": "10,20",
        "inbound_port_exclusion_list": "30,40",
        "network_interface_exclusion_list": "eth0,eth1",
    },
    "dual_podip": {"ip_family": "dual", "local_proxy_mode": "podip", "pod_ip": "10.0.0.5,fd00::5"},
}


def as_flags(options: dict[str, str]) -> list[str]:
    """The same scenario as command-line flags."""
    return [arg for name, text in options.items() for arg in ("--" + name.replace("_", "-"), text)]


def scenario_items_of(options: dict[str, str]) -> dict[str, list[Item]]:
    """Flag-style text as the raw items the CLI would give build_config."""
    return {k.replace("_", "-"): option_items(k.replace("_", "-"), v, "--" + k.replace("_", "-")) for k, v in options.items()}


def scenario_items(name: str) -> dict[str, list[Item]]:
    return scenario_items_of(SCENARIOS[name])
