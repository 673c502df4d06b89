"""Against the kernel, each test in its own network namespace: apply, idempotence, remove,
refused batches and dry runs."""

from __future__ import annotations

import json
import sys

import pytest

from nftredir.render import render
from tests.scenarios import SCENARIOS, as_flags, config_of

FOREIGN_TABLE = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp --dport 53 -j RETURN\nCOMMIT\n"


def load_foreign_table(netns) -> str:
    """An iptables-nft `ip nat` table, as a pod with other tooling would have; returns its listing."""
    netns.run(["iptables-restore", "--noflush"], input=FOREIGN_TABLE)
    return netns.nft("-s", "list", "table", "ip", "nat").stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_nft_and_json_renders_load_to_the_same_ruleset(scenario, netns, tmp_path):
    """Both formats come from one template; the kernel must list them identically."""
    config = config_of(**SCENARIOS[scenario])
    (tmp_path / "r.nft").write_text(render(config, "nft"))
    netns.nft("-f", str(tmp_path / "r.nft"))
    from_nft = netns.list_table()
    (tmp_path / "r.json").write_text(render(config, "json"))
    netns.nft("-j", "-f", str(tmp_path / "r.json"))  # replaces the table, as apply does
    assert netns.list_table() == from_nft
    assert from_nft.count("counter") == render(config).count("counter") > 0


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_apply_installs_exactly_the_render(scenario, netns, tmp_path):
    flags = as_flags(SCENARIOS[scenario])
    result = netns.nftredir("apply", *flags)
    assert result.returncode == 0, result.stderr
    applied = netns.list_table()
    (tmp_path / "r.nft").write_text(netns.nftredir("render", *flags).stdout)
    netns.nft("-f", str(tmp_path / "r.nft"))
    assert netns.list_table() == applied


def test_apply_ten_times_leaves_the_same_ruleset(netns):
    flags = as_flags(SCENARIOS["all_lists"]) + ["--local-proxy-mode", "podip", "--pod-ip", "10.0.0.5"]
    assert netns.nftredir("apply", *flags).returncode == 0
    first = netns.list_table()
    for _ in range(9):
        assert netns.nftredir("apply", *flags).returncode == 0
    assert netns.list_table() == first
    # Exactly one jump per hook: FSM's script would have appended ten.
    assert netns.nft("list", "chain", "inet", "nftredir", "output").stdout.count("jump PROXY_OUTPUT") == 1


def test_apply_with_other_options_replaces_the_previous_ruleset(netns):
    assert netns.nftredir("apply", "--outbound-port-exclusion-list", "6379").returncode == 0
    assert netns.nftredir("apply", "--inbound-port-exclusion-list", "7070").returncode == 0
    listing = netns.list_table()
    assert "7070" in listing and "6379" not in listing and "outbound_port_exclusions" not in listing


def test_apply_leaves_other_tables_alone(netns):
    foreign = load_foreign_table(netns)
    assert netns.nftredir("apply").returncode == 0
    assert netns.nft("-s", "list", "table", "ip", "nat").stdout == foreign


def test_remove_deletes_only_our_table_and_succeeds_when_absent(netns):
    foreign = load_foreign_table(netns)
    assert netns.nftredir("apply").returncode == 0
    removed = netns.nftredir("remove")
    assert removed.returncode == 0, removed.stderr
    assert "nftredir" not in netns.nft("list", "tables").stdout
    assert netns.nft("-s", "list", "table", "ip", "nat").stdout == foreign
    again = netns.nftredir("remove")
    assert (again.returncode, again.stderr) == (0, "")


def test_remove_takes_the_table_option(netns):
    assert netns.nftredir("apply", "--table", "mesh").returncode == 0
    assert netns.nftredir("apply").returncode == 0
    assert netns.nftredir("remove", "--table", "mesh").returncode == 0
    assert netns.nft("list", "tables").stdout.split() == ["table", "inet", "nftredir"]


def test_dry_run_commits_nothing(netns):
    result = netns.nftredir("apply", "--dry-run", *as_flags(SCENARIOS["all_lists"]))
    assert result.returncode == 0, result.stderr
    assert "nothing was committed" in result.stdout
    assert netns.nft("list", "ruleset").stdout == ""


def test_dry_run_keeps_the_live_ruleset(netns):
    assert netns.nftredir("apply").returncode == 0
    before = netns.list_table()
    assert netns.nftredir("apply", "--dry-run", "--outbound-port-exclusion-list", "1").returncode == 0
    assert netns.list_table() == before


BROKEN_BATCH = """
import json
import sys
import nftredir.render
from nftredir import cli

real = nftredir.render.render

def broken(config, format="nft"):
    batch = json.loads(real(config, format))
    batch["nftables"].append({"add": {"rule": {"family": "inet", "table": config.table, "chain": "PROXY_OUTPUT",
                                               "expr": [{"jump": {"target": "NO_SUCH_CHAIN"}}]}}})
    return json.dumps(batch)

nftredir.render.render = broken
sys.argv = ["nftredir", "apply"]
cli.main()
"""


def test_a_refused_batch_is_one_line_exit_3_and_leaves_the_previous_ruleset(netns):
    """The kernel refuses the last command; the table replace before it must not have happened."""
    assert netns.nftredir("apply", *as_flags(SCENARIOS["all_lists"])).returncode == 0
    before = netns.list_table()
    result = netns.run([sys.executable, "-c", BROKEN_BATCH], check=False)
    assert result.returncode == 3
    commands = len(json.loads(render(config_of(), "json"))["nftables"]) + 1  # BROKEN_BATCH applies the defaults, + its rule
    assert result.stderr.startswith(
        f"nftredir: error: the kernel refused command {commands} of {commands} (add rule inet nftredir PROXY_OUTPUT): "
        "Could not process rule: No such file or directory"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert netns.list_table() == before


def test_invalid_input_exits_2_and_leaves_the_kernel_untouched(netns):
    assert netns.nftredir("apply").returncode == 0
    before = netns.list_table()
    result = netns.nftredir("apply", "--outbound-port-exclusion-list", "10,70000")
    assert result.returncode == 2
    assert result.stderr == (
        "nftredir: error: --outbound-port-exclusion-list: '70000': not a port: must be an integer from 1 to 65535\n"
    )
    assert netns.list_table() == before


def test_without_cap_net_admin_apply_says_so_and_exits_3(netns):
    result = netns.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        sys.executable, "-m", "nftredir", "apply"], check=False,
    )
    assert result.returncode == 3
    assert "CAP_NET_ADMIN" in result.stderr and "Traceback" not in result.stderr
    assert netns.nft("list", "ruleset").stdout == ""


def test_verbose_logs_the_batch_sent(netns):
    result = netns.nftredir("apply", "-v")
    assert result.returncode == 0
    logged = result.stderr.split("batch: ", 1)[1]
    assert json.loads(logged)["nftables"][1] == {"add": {"table": {"family": "inet", "name": "nftredir"}}}


def test_remove_finds_the_table_where_apply_did(netns):
    env = {"NFTREDIR_TABLE": "mesh"}
    assert netns.nftredir("apply", env=env).returncode == 0
    assert netns.nftredir("remove", env=env).returncode == 0
    assert netns.nft("list", "tables").stdout == ""
