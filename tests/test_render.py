"""Rendering: goldens for FSM's three unit-test cases, and escaping.

Regenerate the goldens with NFTREDIR_UPDATE_GOLDENS=1 and review them as diffs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nftredir.config import Config
from nftredir.errors import ConfigError
from nftredir.render import render, render_batch, template_context
from tests.conftest import fsm_reference
from tests.scenarios import SCENARIOS, config_of

GOLDENS = Path(__file__).parent / "goldens"


@pytest.mark.parametrize("fmt", ["nft", "json", "iptables"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_render_matches_golden(scenario, fmt):
    text = render(config_of(**SCENARIOS[scenario]), fmt)
    golden = GOLDENS / f"{scenario}.{fmt}"
    if os.environ.get("NFTREDIR_UPDATE_GOLDENS"):
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with NFTREDIR_UPDATE_GOLDENS=1 and review: {golden}"


def test_json_render_is_the_batch_apply_sends():
    config = config_of(**SCENARIOS["all_lists"])
    batch = render_batch(config)
    assert batch == json.loads(render(config, "json"))
    commands = batch["nftables"]
    assert commands[0] == {"metainfo": {"json_schema_version": 1}}
    table = {"table": {"family": "inet", "name": "nftredir"}}
    # Replace, not append: add (so the delete cannot fail), delete, then build afresh.
    assert commands[1:4] == [{"add": table}, {"delete": table}, {"add": table}]


def rules_of(batch: dict, chain: str) -> list[dict]:
    return [c["add"]["rule"] for c in batch["nftables"] if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_every_rule_has_a_counter_and_a_comment():
    batch = render_batch(config_of(**SCENARIOS["all_lists"], local_proxy_mode="podip", pod_ip="10.0.0.5"))
    rules = [c["add"]["rule"] for c in batch["nftables"] if "rule" in c.get("add", {})]
    assert len(rules) == 25
    for rule in rules:
        assert {"counter": None} in rule["expr"] and rule["comment"]


def test_inbound_order_is_what_fsms_insertions_produce():
    """-I puts the last inserted first: port exclusions, then interfaces in reverse, then the -A rules."""
    batch = render_batch(config_of(inbound_port_exclusion_list="30", network_interface_exclusion_list="a,b,c"))
    heads = [rule["expr"][0]["match"]["right"] for rule in rules_of(batch, "PROXY_INBOUND")[:4]]
    assert heads == ["@inbound_port_exclusions", "c", "b", "a"]


def test_outbound_interfaces_keep_their_order_and_the_plus_wildcard_becomes_nft_star():
    batch = render_batch(config_of(network_interface_exclusion_list="a,veth+"))
    outbound = [rule["expr"][0]["match"]["right"] for rule in rules_of(batch, "PROXY_OUTPUT")[4:6]]
    assert outbound == ["a", "veth*"]


def test_inclusions_end_outbound_with_return_instead_of_redirect():
    with_inclusions = rules_of(render_batch(config_of(outbound_ip_range_inclusion_list="3.3.3.0/24")), "PROXY_OUTPUT")
    without = rules_of(render_batch(Config()), "PROXY_OUTPUT")
    assert with_inclusions[-1]["expr"] == [{"counter": None}, {"return": None}]
    assert with_inclusions[-2]["expr"][-1] == {"jump": {"target": "PROXY_REDIRECT"}}
    assert without[-1]["expr"] == [{"counter": None}, {"jump": {"target": "PROXY_REDIRECT"}}]


def test_overlapping_and_adjacent_cidrs_are_merged_in_the_set():
    context = template_context(config_of(outbound_ip_range_exclusion_list="10.0.0.0/9,10.128.0.0/9,10.1.0.0/16,1.1.1.1/32"))
    assert [str(n) for n in context["outbound_ip_range_exclusions"]] == ["1.1.1.1/32", "10.0.0.0/8"]


def test_empty_lists_leave_out_their_sets_and_rules():
    batch = render_batch(Config())
    assert not [c for c in batch["nftables"] if "set" in c.get("add", {})]
    assert "@" not in json.dumps(batch)


def test_custom_constants_reach_the_rules():
    config = config_of(proxy_uid="1337", proxy_outbound_port="16001", proxy_inbound_port="16003", table="mesh", probe_ports="1,2")
    text = render(config)
    assert "table inet mesh {" in text and "redirect to :16001" in text and "redirect to :16003" in text
    assert "meta skuid 1337" in text and "tcp dport 15901" not in text and "tcp dport 2 counter return" in text


@pytest.mark.parametrize("name", ["a;b", "a}b", "x'y", "a$b#c", "`id`", "{x}"])
def test_interface_names_are_quoted_strings_in_nft_and_json(name):
    config = config_of(network_interface_exclusion_list=name)
    assert f'iifname "{name}" counter return' in render(config)
    assert json.dumps(name) in render(config, "json")


def test_iptables_render_is_fsms_script_with_the_pod_ip_written_in():
    text = render(config_of(local_proxy_mode="podip", pod_ip="10.0.0.5"), "iptables")
    assert text.startswith("*nat\n") and text.endswith("\nCOMMIT\n")
    assert "-j DNAT --to-destination 10.0.0.5\n" in text and "$POD_IP" not in text


def test_iptables_render_keeps_the_order_given_and_the_plus_wildcard():
    text = render(config_of(outbound_ip_range_exclusion_list="10.0.0.0/8,1.1.1.1/32,10.1.0.0/16,1.1.1.1/32",
                            outbound_port_exclusion_list="20,10,20", network_interface_exclusion_list="veth+"), "iptables")
    excluded = [line.split()[3] for line in text.splitlines() if line.endswith("-j RETURN") and " -d " in line]
    assert excluded == ["127.0.0.1/32", "10.0.0.0/8", "1.1.1.1/32", "10.1.0.0/16"]  # not merged, duplicates dropped
    assert "--dports 20,10 -j RETURN" in text and "-o veth+ -j RETURN" in text and "-i veth+ -j RETURN" in text


@pytest.mark.parametrize("option", ["outbound_port_exclusion_list", "inbound_port_exclusion_list"])
def test_iptables_render_refuses_more_ports_than_multiport_takes(option):
    config = config_of(**{option: ",".join(str(port) for port in range(1, 17))})
    with pytest.raises(ConfigError, match=r"^--%s: .*16 ports, .*at most 15" % option.replace("_", "-")):
        render(config, "iptables")
    assert render(config, "nft") and render(config_of(**{option: ",".join(map(str, range(1, 16)))}), "iptables")


def _load_with_cache(*directories):
    from nftredir.render import make_environment, template_dir

    return make_environment(template_dir(), list(directories)).get_template("nft.j2")


def test_compiled_templates_are_cached_like_python_bytecode(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    _load_with_cache(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()][0].startswith("__jinja2_")
    monkeypatch.setattr("sys.dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE
    _load_with_cache(tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_an_unwritable_cache_only_costs_a_compile(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    (tmp_path / "file").write_text("not a directory")
    assert _load_with_cache(tmp_path / "file" / "cache").module is not None


def test_a_read_only_package_caches_in_the_next_directory_and_reads_it_back(tmp_path, monkeypatch):
    """A plain pip install into a read-only place: the user's cache takes the compiled template,
    and the next run loads it from there instead of compiling."""
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    (tmp_path / "read-only").write_text("not a directory")
    package, user = tmp_path / "read-only" / "__pycache__", tmp_path / "user"
    _load_with_cache(package, user)
    (cached,) = user.iterdir()
    import jinja2

    compiled = []
    monkeypatch.setattr(jinja2.Environment, "compile", lambda *a, **k: compiled.append(a) or 1 / 0)
    assert _load_with_cache(package, user).module is not None and not compiled
    assert cached.exists()


def test_the_user_cache_is_named_by_the_environment(monkeypatch, tmp_path):
    from nftredir.render import cache_dirs

    monkeypatch.setenv("NFTREDIR_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dirs()[1] == tmp_path / "c"
    monkeypatch.delenv("NFTREDIR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dirs()[1] == tmp_path / "x" / "nftredir"

def test_the_default_golden_is_fsm_s_script_as_written_by_hand():
    """The iptables golden of the default configuration is FSM's own script (tests/data/fsm)."""
    assert (GOLDENS / "no_lists.iptables").read_text() == fsm_reference("default.rules")
