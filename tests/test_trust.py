"""Trust, against the kernel in throwaway namespaces: nftredir never replaces or deletes a table
it did not make, never says "matches" when its table does not redirect, and fails on any input
in one line with a documented exit code (issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nftredir.ownership import MARK
from nftredir.render import render
from lab.netlab import run_nftredir
from tests.conftest import REPO
from tests.scenarios import SCENARIOS, as_flags, config_of

FIREWALL = """
table inet filter {
	chain input {
		type filter hook input priority 0; policy drop;
		tcp dport 22 accept
	}
}
"""


def ruleset(netns) -> str:
    return netns.nft("-s", "list", "ruleset").stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("nftredir: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# --- 1. other tools' tables ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["apply", "remove"])
def test_a_table_nftredir_did_not_make_is_neither_replaced_nor_deleted(netns, command):
    netns.nft("-f", "-", input=FIREWALL)
    before = ruleset(netns)
    message = one_line_error(netns.nftredir(command, "--table", "filter"), 2)
    assert "table inet filter exists and is not nftredir's" in message
    assert ruleset(netns) == before


def test_the_drop_in_refuses_another_tool_s_table_too(netns):
    netns.nft("-f", "-", input=FIREWALL)
    before = ruleset(netns)
    result = run_nftredir("iptables-restore", "--noflush", env={"NFTREDIR_TABLE": "filter"},
                          input=render(config_of(), "iptables"), netns=netns)
    assert "table inet filter exists and is not nftredir's" in one_line_error(result, 2)
    assert ruleset(netns) == before


def test_remove_refuses_firewalld_s_table_named_by_the_environment(netns):
    netns.nft("add", "table", "inet", "firewalld")
    netns.nft("add", "chain", "inet", "firewalld", "filter_INPUT", "{ type filter hook input priority 10; }")
    before = ruleset(netns)
    message = one_line_error(netns.nftredir("remove", env={"NFTREDIR_TABLE": "firewalld"}), 2)
    assert message.startswith("nftredir: error: NFTREDIR_TABLE: 'firewalld': ")
    assert ruleset(netns) == before


def test_an_empty_table_of_that_name_made_by_hand_is_not_ours_either(netns):
    netns.nft("add", "table", "inet", "nftredir")
    one_line_error(netns.nftredir("apply"), 2)
    assert netns.list_table() == "table inet nftredir {\n}\n"


def test_the_table_nftredir_makes_carries_the_mark_and_is_replaced_and_removed(netns):
    assert netns.nftredir("apply").returncode == 0
    assert f"\tcounter {MARK} {{" in netns.list_table()
    assert netns.nftredir("apply", "--outbound-port-exclusion-list", "6379").returncode == 0
    assert netns.nftredir("remove").returncode == 0
    assert netns.nft("list", "ruleset").stdout == ""


def test_a_table_made_by_nftredir_before_the_mark_is_still_replaced_and_removed(netns, tmp_path):
    """An older nftredir wrote the same ruleset without the counter."""
    old = render(config_of(**SCENARIOS["all_lists"]), "nft")
    old = old.replace(f"\tcounter {MARK} {{\n\t}}\n", "")
    assert MARK not in old
    (tmp_path / "old.nft").write_text(old)
    netns.nft("-f", str(tmp_path / "old.nft"))
    assert netns.nftredir("apply").returncode == 0
    assert MARK in netns.list_table()
    netns.nft("-f", str(tmp_path / "old.nft"))  # replaces it again, without the mark
    assert netns.nftredir("remove").returncode == 0
    assert netns.nft("list", "ruleset").stdout == ""


@pytest.mark.parametrize("content", ["", f"counter {MARK} {{ packets 0 bytes 0; }};"], ids=["bare", "with the mark"])
def test_a_table_held_with_flags_owner_is_said_to_belong_to_another_process(netns, content):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", "import nftables, sys; n = nftables.Nftables(); "
         f"print(n.cmd('add table inet nftredir {{ flags owner; {content} }}')[0], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        for command in ("apply", "remove"):
            message = one_line_error(netns.nftredir(command), 3)
            assert "owned by another process (python" in message and "(flags owner)" in message
            assert "run as root" not in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# --- 2. flags and comment are compared -----------------------------------------------------------


def test_a_dormant_table_differs_and_apply_makes_it_active_again(netns):
    assert netns.nftredir("apply").returncode == 0
    netns.nft("add", "table", "inet", "nftredir", "{ flags dormant; }")
    result = netns.nftredir("diff")
    assert result.returncode == 1 and "-\tflags dormant\n" in result.stdout
    report = json.loads(netns.nftredir("diff", "--format", "json").stdout)
    assert report["differences"][0] == {
        "object": "table", "change": "changed", "name": "nftredir", "fields": ["flags"],
        "live": {"family": "inet", "name": "nftredir", "flags": ["dormant"], "comment": None},
        "desired": {"family": "inet", "name": "nftredir", "flags": [], "comment": None},
    }
    status = netns.nftredir("status")
    assert "DIFFERS" in status.stdout and "inactive" in status.stdout and "matches the desired" not in status.stdout
    assert json.loads(netns.nftredir("status", "-f", "json").stdout)["matches"] is False
    applied = netns.nftredir("apply", "--diff")
    assert applied.returncode == 0 and "-\tflags dormant" in applied.stdout and "no changes" not in applied.stdout
    assert netns.nftredir("diff").returncode == 0
    assert "dormant" not in netns.list_table()


def test_a_table_comment_differs(netns, tmp_path):
    """The kernel keeps a table's comment from its creation: recreate the table with one."""
    assert netns.nftredir("apply").returncode == 0
    listing = netns.list_table()
    edited = listing.replace("table inet nftredir {\n", 'table inet nftredir {\n\tcomment "edited by hand"\n', 1)
    (tmp_path / "edited.nft").write_text("delete table inet nftredir\n" + edited)
    netns.nft("-f", str(tmp_path / "edited.nft"))
    result = netns.nftredir("diff")
    assert result.returncode == 1 and '-\tcomment "edited by hand"\n' in result.stdout
    assert netns.nftredir("apply").returncode == 0  # still nftredir's table: it has the mark
    assert "edited by hand" not in netns.list_table()


_HEADERS = (
    "import json, sys; from nftredir.kernel import Kernel, table_header; k = Kernel(write=False); "
    "print(json.dumps([[next(i['table'] for i in k.list_table(t)['nftables'] if 'table' in i), "
    "table_header(k.table_text(t))] for t in sys.argv[1:]]))"
)


def test_the_table_header_read_over_netlink_is_what_the_text_listing_says(netns):
    """list_table reads flags and comment from the kernel, not from nft's text: they must agree."""
    netns.nft("-f", "-", input='table inet plain {}\ntable inet noted { comment "a comment; with \'quotes\' and é"; }\n'
              "table inet asleep { flags dormant; }\n"
              'table inet both { flags dormant; comment "zzz"; }\n')
    holder = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", "import nftables, sys; n = nftables.Nftables(); "
         "print(n.cmd('add table inet held { flags owner; comment \"mine\"; }')[0], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        tables = ["plain", "noted", "asleep", "both", "held"]
        pairs = json.loads(netns.run([sys.executable, "-c", _HEADERS, *tables], cwd=REPO).stdout)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    for table, (listed, text) in zip(tables, pairs):
        assert {key: listed[key] for key in ("flags", "comment", "program")} == text, table
    assert [text["flags"] for _, text in pairs] == [[], [], ["dormant"], ["dormant"], ["owner"]]
    assert pairs[1][1]["comment"] == "a comment; with 'quotes' and é" and pairs[4][1]["program"].startswith("python")


# --- 3. status sees the other nat chains -------------------------------------------------------


def test_status_names_a_second_nftredir_table_left_after_remove(netns):
    assert netns.nftredir("apply", env={"NFTREDIR_TABLE": "mesh2"}).returncode == 0
    assert netns.nftredir("remove").returncode == 0
    text = netns.nftredir("status").stdout
    assert "nothing is redirected" not in text
    assert "table inet mesh2 chain prerouting (type nat hook prerouting priority -100)" in text
    assert "table inet mesh2 chain output (type nat hook output priority -100)" in text
    report = json.loads(netns.nftredir("status", "--format", "json").stdout)
    assert report["installed"] is False
    assert {(c["family"], c["table"], c["chain"], c["hook"], c["prio"]) for c in report["other_nat_chains"]} == {
        ("inet", "mesh2", "prerouting", "prerouting", -100), ("inet", "mesh2", "output", "output", -100),
    }


def test_status_names_fsm_s_own_iptables_chains_beside_a_matching_table(netns):
    options = ["--inbound-port-exclusion-list", "8080"]
    assert netns.nftredir("apply", *options).returncode == 0
    fsm = render(config_of(), "iptables")  # FSM's script, which redirects inbound 8080 too
    netns.run(["iptables-restore", "--noflush"], input=fsm)
    assert netns.nftredir("diff", *options).returncode == 0  # diff compares nftredir's table only
    text = netns.nftredir("status", *options).stdout
    assert "table ip nat chain PREROUTING (type nat hook prerouting priority -100)" in text
    assert "table ip nat chain OUTPUT (type nat hook output priority -100)" in text


def test_status_with_nothing_anywhere_says_nothing_is_redirected(netns):
    report = json.loads(netns.nftredir("status", "--format", "json").stdout)
    assert report["other_nat_chains"] == [] and report["installed"] is False
    assert "nothing is redirected" in netns.nftredir("status").stdout


# --- 4, 5. any listable table is compared and shown --------------------------------------------

HAND_MADE = [
    "meta l4proto { tcp, udp } return",
    "meta mark { 1, 2 } accept",
    "ct state { established, related } accept",
    "ip daddr . tcp dport { 10.0.0.1 . 80 } return",
    "tcp dport vmap { 80 : accept, 443 : return }",
    "limit rate 10/second accept",
    'log prefix "x " counter accept',
    "meta skuid { 0, 1000-2000 } return",
    "ip saddr != { 10.0.0.0/8, 192.168.0.0/16 } return",
    "th dport 53 return",
    "@th,16,16 80 return",
    "meta nfproto { ipv4, ipv6 } return",
    "ip6 daddr ::1 return",
    "ct mark set 1 return",
    "meta priority set 1:2 return",
]


def test_every_command_reads_a_table_edited_with_any_rule_nft_can_list(netns):
    assert netns.nftredir("apply", *as_flags(SCENARIOS["all_lists"])).returncode == 0
    for rule in HAND_MADE:
        netns.nft(f"add rule inet nftredir PROXY_OUTPUT {rule}")
    netns.nft("add", "map", "inet", "nftredir", "m", "{ type ipv4_addr : verdict; }")
    netns.nft("add", "chain", "inet", "nftredir", "extra")
    for argv in (["diff"], ["diff", "-f", "json"], ["status"], ["status", "-f", "json"]):
        result = netns.nftredir(*argv, *as_flags(SCENARIOS["all_lists"]))
        assert "Traceback" not in result.stderr and result.stderr == "", result.stderr
        assert result.returncode == (1 if argv[0] == "diff" else 0)
    applied = netns.nftredir("apply", "--diff", *as_flags(SCENARIOS["all_lists"]))
    assert applied.returncode == 0 and applied.stderr == ""
    assert netns.nftredir("diff", *as_flags(SCENARIOS["all_lists"])).returncode == 0


@pytest.mark.parametrize("broken", [
    ["flush", "table", "inet", "nftredir"],
    ["delete", "chain", "inet", "nftredir", "PROXY_REDIRECT"],
])
def test_status_of_a_table_missing_a_chain_or_every_rule(netns, broken):
    netns.nft("add", "table", "inet", "nftredir")
    assert netns.nftredir("status").returncode == 0  # a bare table made by hand
    netns.nft("delete", "table", "inet", "nftredir")
    assert netns.nftredir("apply").returncode == 0
    if broken[1] == "chain":
        netns.nft("flush", "chain", "inet", "nftredir", "PROXY_OUTPUT")
    netns.nft(*broken)
    for argv in (["status"], ["status", "-f", "json"], ["diff"]):
        result = netns.nftredir(*argv)
        assert result.stderr == "" and result.returncode == (1 if argv[0] == "diff" else 0)
    assert "DIFFERS" in netns.nftredir("status").stdout


# --- 9. the environment itself ---------------------------------------------------------------------


def test_output_that_cannot_be_written_is_one_line(netns):
    full = subprocess.run(
        ["ip", "netns", "exec", netns.name, "sh", "-c", f"{sys.executable} -m nftredir status > /dev/full"],
        capture_output=True, text=True, timeout=300, cwd=str(REPO),
    )
    assert one_line_error(full, 3) == "nftredir: error: cannot write to standard output: No space left on device\n"
    closed = subprocess.run(
        ["ip", "netns", "exec", netns.name, "sh", "-c", f"{sys.executable} -m nftredir render >&-"],
        capture_output=True, text=True, timeout=300, cwd=str(REPO),
    )
    assert one_line_error(closed, 3) == "nftredir: error: cannot write to standard output: standard output is closed\n"


def test_without_proc_mounted_apply_works_and_a_missing_privilege_is_one_line(netns):
    """In a mount namespace with /proc unmounted."""
    script = f"umount -l /proc && cd {REPO} && {sys.executable} -m nftredir apply && echo applied"
    result = netns.run(["unshare", "--mount", "sh", "-c", script], check=False)
    assert result.returncode == 0 and "applied" in result.stdout, result.stderr
    nobody = netns.run(["unshare", "--mount", "sh", "-c",
                       f"umount -l /proc && cd {REPO} && "
                       f"setpriv --reuid=65534 --regid=65534 --clear-groups {sys.executable} -m nftredir remove"],
                       check=False)
    assert nobody.returncode == 3 and nobody.stderr.count("\n") == 1 and "Traceback" not in nobody.stderr


def test_a_bug_is_still_one_line_with_its_own_exit_code(netns):
    prelude = "import nftredir.render; nftredir.render.render = lambda *a, **k: 1 / 0"
    result = run_nftredir("render", prelude=prelude, netns=netns)
    assert one_line_error(result, 4).startswith("nftredir: internal error: ZeroDivisionError")


# --- 10, 11. input that would reach the kernel as something else --------------------------------


def test_a_lone_plus_excludes_every_interface_as_iptables_does(netns, tmp_path):
    result = netns.nftredir("apply", "--network-interface-exclusion-list", "+")
    assert result.returncode == 0, result.stderr
    listing = netns.list_table()
    assert 'counter return comment "excluded interface"' in listing and '"*"' not in listing
    (tmp_path / "r.nft").write_text(render(config_of(network_interface_exclusion_list="+"), "nft"))
    netns.nft("-c", "-f", str(tmp_path / "r.nft"))


@pytest.mark.parametrize("table", ["ip", "table", "set", "counter", "flush", "inet", "nat", "filter", "second"])
def test_keyword_table_names_are_refused_and_others_load_back(netns, table, tmp_path):
    result = netns.nftredir("apply", "--table", table)
    if table in ("nat", "filter", "second"):  # ordinary names where a table name stands
        assert result.returncode == 0
        (tmp_path / "all.nft").write_text(netns.nft("list", "ruleset").stdout)
        netns.nft("flush", "ruleset")
        netns.nft("-f", str(tmp_path / "all.nft"))
    else:
        assert "nft keyword" in one_line_error(result, 2)
        assert netns.nft("list", "ruleset").stdout == ""


def _library_keywords() -> list[str]:
    """The bison token names in the installed libnftables: every word nft's parser knows."""
    import glob
    import re

    paths = glob.glob("/usr/lib/*/libnftables.so.1") + glob.glob("/usr/lib*/libnftables.so.1")
    if not paths:
        pytest.skip("libnftables not found")
    data = open(paths[0], "rb").read()
    return sorted({m.decode() for m in re.findall(rb'(?<=\x00)"([a-z][a-z0-9_]*)"(?=\x00)', data)})


def test_exactly_the_words_nft_refuses_as_a_table_name_are_refused(netns):
    from nftredir.nft_keywords import KEYWORDS, NEWER_KEYWORDS

    words = _library_keywords()
    assert len(words) > 100
    refused_by_nft = {
        word for word in words
        if netns.nft("-c", "-f", "-", check=False, input=f"table inet {word} {{\n\tchain c {{\n\t\t"
                     f"type nat hook output priority -100;\n\t}}\n}}\ndelete table inet {word}\n").returncode != 0
    }
    assert refused_by_nft <= KEYWORDS
    assert KEYWORDS - refused_by_nft <= NEWER_KEYWORDS


# --- 15-17. the gaps ---------------------------------------------------------------------------------


def test_remove_reads_the_table_from_config_and_nothing_else(netns, tmp_path):
    (tmp_path / "c.yaml").write_text("table: custom\nproxy-uid: not-a-uid\n")
    (tmp_path / "mesh.yaml").write_text("kind: MeshConfig\nspec: [\n")  # broken, and unrelated
    assert netns.nftredir("apply", "--table", "custom").returncode == 0
    env = {"NFTREDIR_MESH_CONFIG": str(tmp_path / "mesh.yaml"), "NFTREDIR_POD_ANNOTATIONS": "/nonexistent"}
    result = netns.nftredir("remove", "--config", str(tmp_path / "c.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert netns.nft("list", "ruleset").stdout == ""
    assert netns.nftredir("apply", "--table", "custom").returncode == 0
    assert netns.nftredir("remove", env={**env, "NFTREDIR_CONFIG": str(tmp_path / "c.yaml")}).returncode == 0
    assert netns.nft("list", "ruleset").stdout == ""


@pytest.mark.parametrize("command,says", [("diff", "reading nftables needs"), ("status", "reading nftables needs"),
                                          ("apply", "changing nftables needs")])
def test_without_cap_net_admin_each_command_says_what_it_needed(netns, command, says):
    result = run_nftredir(command, user=65534, netns=netns)
    assert says in one_line_error(result, 3)


# --- 18. linear comparison -----------------------------------------------------------------------


def test_large_sets_are_compared_whole(netns, tmp_path):
    """50,000 CIDRs and one changed element: the diff names exactly that element (its cost is
    measured by the benchmark, not here)."""
    cidrs = [f"10.{i >> 8 & 255}.{i & 255}.0/30" for i in range(5000)]
    (tmp_path / "c.yaml").write_text("outbound-ip-range-exclusion-list:\n" + "".join(f"  - {c}\n" for c in cidrs))
    assert netns.nftredir("apply", "--config", str(tmp_path / "c.yaml")).returncode == 0
    netns.nft("delete", "element", "inet", "nftredir", "outbound_ip_range_exclusions", "{ 10.0.7.0/30 }")
    report = json.loads(netns.nftredir("diff", "-f", "json", "--config", str(tmp_path / "c.yaml")).stdout)
    (difference,) = report["differences"]
    assert difference["elements_missing"] == ["10.0.7.0/30"] and difference["elements_extra"] == []


def test_the_host_namespace_is_never_where_a_cli_test_runs():
    """Without a netns, the one runner gives the command a throwaway namespace of its own."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("needs root")
    inode = lambda pid: subprocess.run(["readlink", f"/proc/{pid}/ns/net"], capture_output=True, text=True).stdout  # noqa: E731
    result = run_nftredir("render", prelude="import os; print(os.readlink('/proc/self/ns/net'), file=sys.stderr)")
    assert result.stderr.strip() and result.stderr.strip() != inode("self").strip()
