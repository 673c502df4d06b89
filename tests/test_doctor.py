"""`nftredir doctor`: each problem made for real in a network namespace, and reported."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import textwrap
from collections.abc import Iterator

import pytest

from lab import netlab
from tests.conftest import REPO

EVERY_CHECK = [
    "privilege", "libnftables", "json", "kernel-batch",
    "kernel-feature: inet nat chains", "kernel-feature: meta skuid", "kernel-feature: interval sets",
    "kernel-feature: redirect", "kernel-feature: dnat", "kernel-feature: comments",
    "drift", "other-nftredir", "mesh-iptables", "other-nat-chains", "legacy-xtables", "nft-version", "table-writer",
]


def doctor(ns: netlab.Netns, *argv: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = ns.nftredir("doctor", "--format", "json", *argv, env=env)
    assert result.returncode in (0, 1), result.stderr
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def ns() -> Iterator[netlab.Netns]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with netlab.netns(netlab.unique_name("doc", "nrva")) as made:
        yield made


def findings(report: dict, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]


def status(report: dict, name: str) -> str:
    (only,) = {c["status"] for c in findings(report, name)}
    return only


def problems(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "problem"}


def test_a_clean_pod_has_no_problems_and_json_lists_every_check(ns):
    assert ns.nftredir("apply").returncode == 0
    code, report = doctor(ns)
    assert code == 0, report
    assert [c["name"] for c in report["checks"]] == EVERY_CHECK
    assert {c["status"] for c in report["checks"]} == {"ok"}, report
    assert report["ok"] and report["counts"]["ok"] == len(EVERY_CHECK)
    assert findings(report, "libnftables")[0]["summary"].startswith("libnftables 1.")
    text = ns.nftredir("doctor")
    assert text.returncode == 0 and text.stdout.endswith("doctor: no problems, 0 warning(s), 0 skipped\n")


def test_doctor_changes_nothing(ns):
    assert ns.nftredir("apply").returncode == 0
    before = ns.run(["nft", "-s", "list", "ruleset"], check=True).stdout
    doctor(ns)
    assert ns.run(["nft", "-s", "list", "ruleset"], check=True).stdout == before


def test_fsm_iptables_rules_beside_nftredirs_table(ns):
    assert ns.nftredir("apply").returncode == 0
    fsm = ns.nftredir("render", "--format", "iptables").stdout  # FSM's own iptables-restore input
    ns.run(["iptables-nft-restore", "--noflush"], input=fsm, check=True)
    code, report = doctor(ns)
    assert code == 1
    assert problems(report) == {"mesh-iptables", "other-nat-chains"}
    (mesh,) = findings(report, "mesh-iptables")
    assert "Flomesh Service Mesh (FSM)" in mesh["summary"]
    assert "FSM_PROXY_OUT_REDIRECT" in mesh["details"][0] and "iptables-nft -t nat -F" in mesh["advice"]
    redirecting = [c for c in findings(report, "other-nat-chains") if c["status"] == "problem"]
    assert {c["summary"].split(" (")[0] for c in redirecting} == {"nat chain ip nat PREROUTING", "nat chain ip nat OUTPUT"}
    assert any("xt target REDIRECT" in line for c in redirecting for line in c["details"])


def test_a_second_nat_table_with_a_redirect(ns):
    assert ns.nftredir("apply").returncode == 0
    ns.run(["nft", "-f", "-"], check=True, input=textwrap.dedent("""\
        table ip sneaky {
            chain out {
                type nat hook output priority -150; policy accept;
                tcp dport 80 jump grab
            }
            chain grab {
                meta l4proto tcp redirect to :9000
            }
            chain pre {
                type nat hook prerouting priority 10; policy accept;
                counter
            }
        }
        """))
    code, report = doctor(ns)
    assert code == 1 and problems(report) == {"other-nat-chains"}
    by_summary = {c["summary"]: c for c in findings(report, "other-nat-chains")}
    problem = by_summary["nat chain ip sneaky out (hook output, priority -150) redirects traffic too"]
    assert problem["details"] == ["grab: meta l4proto tcp redirect to :9000"]
    assert by_summary["nat chain ip sneaky pre (hook prerouting, priority 10): 1 rule(s), none redirects"]["status"] == "warning"


def test_a_foreign_nftredir2_table(ns):
    assert ns.nftredir("apply").returncode == 0
    assert ns.nftredir("apply", "--table", "nftredir2").returncode == 0
    code, report = doctor(ns)
    assert code == 1
    assert "other-nftredir" in problems(report)
    (copy,) = findings(report, "other-nftredir")
    assert copy["details"][0].startswith("table inet nftredir2 (the managed_by_nftredir mark, chains PROXY_INBOUND")
    # Its base chains redirect too, and are reported as such.
    assert any("inet nftredir2 output" in c["summary"] for c in findings(report, "other-nat-chains"))


def test_a_hand_made_copy_under_another_name(ns):
    """nftredir's ruleset loaded with nft under the name nftredir2, without nftredir: still a copy."""
    assert ns.nftredir("apply").returncode == 0
    ruleset = ns.nftredir("render", "--table", "nftredir2").stdout
    ns.run(["nft", "-f", "-"], input=ruleset, check=True)
    code, report = doctor(ns)
    assert code == 1 and status(report, "other-nftredir") == "problem"
    assert findings(report, "other-nftredir")[0]["details"][0].startswith("table inet nftredir2 (")


def test_no_cap_net_admin(ns):
    result = ns.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                    sys.executable, "-m", "nftredir", "doctor", "--format", "json"], check=False, cwd=REPO)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert problems(report) == {"privilege"}
    assert "CAP_NET_ADMIN" in findings(report, "privilege")[0]["summary"]
    assert status(report, "drift") == status(report, "kernel-batch") == "skipped"
    assert [c["name"] for c in report["checks"]] == EVERY_CHECK


SIMULATE_REFUSAL = """
import json
from nftredir import doctor
from nftredir.config import Config
from nftredir.kernel import Kernel
from nftredir.render import render_batch

# A feature this kernel refuses (nat chains have no forward hook), alone and inside the real batch.
refused = [doctor._table(), doctor._chain("fwd", "forward")]
features = {**doctor.FEATURES, "nat on the forward hook": refused}
batch = render_batch(Config())
batch["nftables"] += refused[1:]
print(json.dumps([f.__dict__ for f in doctor.kernel_findings(Kernel(), batch, features)]))
"""


def test_a_batch_feature_the_kernel_refuses_is_named(ns):
    result = ns.run([sys.executable, "-c", SIMULATE_REFUSAL], cwd=REPO)
    report = {"checks": json.loads(result.stdout)}
    assert problems(report) == {"kernel-batch", "kernel-feature: nat on the forward hook"}
    (feature,) = findings(report, "kernel-feature: nat on the forward hook")
    assert "Operation not supported" in feature["details"][0]
    (batch,) = findings(report, "kernel-batch")
    assert "add chain inet nftredir_doctor fwd" in batch["details"][0]  # the refused command, by bisection
    for name in ("inet nat chains", "meta skuid", "interval sets", "redirect", "dnat", "comments"):
        assert status(report, "kernel-feature: " + name) == "ok"
    assert ns.run(["nft", "list", "ruleset"], check=True).stdout == ""  # dry runs only


def test_drift_is_a_problem(ns):
    assert ns.nftredir("apply", "--outbound-port-exclusion-list", "6379").returncode == 0
    code, report = doctor(ns)
    assert code == 1 and problems(report) == {"drift"}
    assert any("outbound_port_exclusions" in line for line in findings(report, "drift")[0]["details"])
    ns.nftredir("remove")
    _, report = doctor(ns)
    assert "not installed" in findings(report, "drift")[0]["summary"]


def test_fsms_rules_in_legacy_iptables(ns):
    """FSM's own script loaded with iptables-legacy-restore: found without any iptables binary."""
    fsm = ns.nftredir("render", "--format", "iptables").stdout
    legacy = ns.run(["iptables-legacy-restore", "--noflush"], input=fsm, check=False)
    if legacy.returncode != 0:
        pytest.skip(f"no legacy xtables on this kernel: {legacy.stderr.strip()}")
    assert ns.nftredir("apply").returncode == 0
    code, report = doctor(ns)
    assert code == 1 and problems(report) == {"legacy-xtables"}
    (found,) = findings(report, "legacy-xtables")
    assert "Flomesh Service Mesh (FSM)" in found["summary"]
    (line,) = found["details"]
    assert line.startswith("ip nat: ") and line.endswith(
        "; chains FSM_PROXY_INBOUND, FSM_PROXY_IN_REDIRECT, FSM_PROXY_OUTBOUND, FSM_PROXY_OUT_REDIRECT; targets REDIRECT")


def test_an_nft_of_another_version_on_path_is_a_warning(ns, tmp_path):
    fake = tmp_path / "nft"
    fake.write_text("#!/bin/sh\necho 'nftables v1.1.6 (Commodore Bullmoose #7)'\n")
    fake.chmod(0o755)
    assert ns.nftredir("apply").returncode == 0
    code, report = doctor(ns, env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert code == 0  # warnings do not fail
    (skew,) = findings(report, "nft-version")
    assert skew["status"] == "warning" and "v1.1.6" in skew["summary"]


def write_stamped_table(name: str, version: tuple[int, int, int, int]) -> None:
    """Create `inet <name>` as nft >= 1.1.5 does, with its version stamp in the table userdata
    (this machine's libnftables is older and writes none). One raw netlink batch."""

    def message(kind: int, flags: int, family: int, seq: int, attrs: bytes = b"", res_id: int = 0) -> bytes:
        body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
        return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body

    def attr(kind: int, value: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)

    userdata = bytes([1, 4, *version]) + bytes([2, 8]) + (1_760_000_000).to_bytes(8, "big")
    table = attr(1, name.encode() + b"\0") + attr(6, userdata)
    batch = (message(0x10, 1, 0, 1, res_id=10)  # NFNL_MSG_BATCH_BEGIN for NFNL_SUBSYS_NFTABLES
             + message(10 << 8 | 0, 1 | 4 | 0x400, 1, 2, table)  # NFT_MSG_NEWTABLE, REQUEST|ACK|CREATE, inet
             + message(0x11, 1, 0, 3, res_id=10))  # NFNL_MSG_BATCH_END
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as sock:
        sock.settimeout(10)
        sock.send(batch)
        reply = sock.recv(65536)
    length, kind = struct.unpack_from("=IH", reply)
    assert kind == 2 and struct.unpack_from("=i", reply, 16)[0] == 0, reply  # NLMSG_ERROR 0: the ACK


def test_a_table_written_by_a_newer_nft_is_a_warning(ns):
    assert ns.nftredir("apply").returncode == 0
    ns.run([sys.executable, "-c", "from tests.test_doctor import write_stamped_table; "
           "write_stamped_table('future', (9, 9, 1, 0))"], cwd=REPO)
    code, report = doctor(ns)
    assert code == 0
    (writer,) = findings(report, "table-writer")
    assert writer["status"] == "warning"
    assert writer["details"] == ["table inet future: written by nft 9.9.1"]
    # The stamp is read back from the kernel, the same bytes nft 1.1.5+ writes.
    stamp = ns.run([sys.executable, "-c", "from nftredir.netlink_table import table_stamp; "
                   "print(repr(table_stamp('inet', 'future')))"], cwd=REPO)
    assert stamp.stdout.strip() == "Stamp(version=(9, 9, 1, 0), built=1760000000)"


def test_a_table_with_flags_does_not_hide_the_rest(ns):
    """libnftables 1.0.6 cuts a JSON `list ruleset` short at a table with flags: doctor must not."""
    assert ns.nftredir("apply").returncode == 0
    ns.run(["nft", "add", "table", "ip", "asleep", "{ flags dormant; }"], check=True)
    ns.run(["nft", "add", "table", "ip", "later"], check=True)
    ns.run(["nft", "add", "chain", "ip", "later", "out", "{ type nat hook output priority 0; }"], check=True)
    ns.run(["nft", "add", "rule", "ip", "later", "out", "tcp", "dport", "80", "redirect", "to", ":81"], check=True)
    code, report = doctor(ns)
    assert code == 1 and problems(report) == {"other-nat-chains"}
    assert findings(report, "other-nat-chains")[0]["details"] == ["out: tcp dport 80 redirect to :81"]
    assert status(report, "drift") == "ok"
