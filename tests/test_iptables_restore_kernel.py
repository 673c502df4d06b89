"""FSM's exact init-container command against the kernel, with nftredir as its iptables-restore.

Differential: for every configuration of tests/test_differential.py, two identical pod/world
labs run FSM's command (`/bin/sh -c "iptables-restore --noflush <<EOF ... EOF"`, POD_IP set),
one with the real iptables-restore, one with a PATH whose first iptables-restore is the image's
wrapper (image/iptables-restore -> nftredir iptables-restore). Every probe must get the same
verdict. Then the command line in a namespace: refusals leave the ruleset byte-identical,
a second run changes nothing, --test commits nothing, the environment's part.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netlab as nl
from lab.netlab import Netns
from tests.conftest import REPO
from tests.fsm_command import fsm_command
from tests.scenarios import as_flags, config_of
from tests import test_differential
from tests.test_differential import EVERY_LIST, PODIP, SCENARIOS, assert_same, is_custom, probe_lab
from tests.test_iptables_restore import ALL, REFUSED

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables-restore") is None,
    reason="needs root, iproute2 and iptables-restore",
)

PREFIX = "nrdi"
# nftredir's wrapper first, then the venv's nftredir running this checkout's code.
WRAPPED_PATH = os.pathsep.join([str(REPO / "image"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
WRAPPED = {"PATH": WRAPPED_PATH, "PYTHONPATH": str(REPO)}


@pytest.fixture(autouse=True)
def _our_namespace_names(monkeypatch) -> None:
    monkeypatch.setattr(nl, "unique_name", functools.partial(nl.unique_name, prefix=PREFIX))


def run_fsm_command(ns: nl.Netns, command: str, pod_ip: str, env: dict[str, str] | None = None) -> None:
    """FSM's init container: /bin/sh -c COMMAND, POD_IP from the downward API."""
    variables = [f"{k}={v}" for k, v in {"POD_IP": pod_ip, **(env or {})}.items()]
    ns.run(["env", *variables, "/bin/sh", "-c", command], timeout=120)


def tables(ns: nl.Netns) -> str:
    return ns.run(["nft", "list", "tables"]).stdout


labs = test_differential.labs  # the fixture: the differential tests' two pod worlds, reused per scenario
# FSM's injector writes the IPv4 script: the drop-in is tested on FSM's configurations.
IPV4_SCENARIOS = [name for name, options in SCENARIOS.items() if "ip_family" not in options]


@pytest.mark.parametrize(
    "scenario, scheme",
    [(name, "FSM") for name in IPV4_SCENARIOS] + [(name, scheme) for name in ("all_lists", "podip_all_lists")
                                                  for scheme in ("OSM", "OSM's init-iptables.sh")],
)
def test_fsm_command_with_nftredir_as_iptables_restore_answers_as_fsm(scenario: str, scheme: str, labs) -> None:
    config = config_of(**SCENARIOS[scenario])
    command = fsm_command(config, scheme)
    assert command.startswith("iptables-restore --noflush <<EOF\n# FSM sidecar interception rules\n*nat\n")
    assert ("$POD_IP" in command) == (config.local_proxy_mode == "podip")
    fsm_lab, nftredir_lab = labs
    for lab in labs:
        lab.reset()
    run_fsm_command(fsm_lab.pod, command, nl.POD_ETH0)
    run_fsm_command(nftredir_lab.pod, command, nl.POD_ETH0, WRAPPED)
    # The real one made iptables' nat table; the wrapper made only nftredir's.
    assert "table inet nftredir" not in tables(fsm_lab.pod)
    assert tables(nftredir_lab.pod).split() == ["table", "inet", "nftredir"]
    fsm, nftredir = probe_lab(fsm_lab, scenario), probe_lab(nftredir_lab, scenario)
    assert {"pod:15001", "world"} <= {v.listener for v in fsm} or scenario == "interface_wildcard" or is_custom(scenario)
    assert_same(scenario, fsm, nftredir)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def ns() -> Iterator[Netns]:
    with nl.netns(nl.unique_name("cli", prefix=PREFIX)) as namespace:
        yield namespace


def restore(ns: Netns, *argv: str, input: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`iptables-restore ARGV` through the image's wrapper, in the namespace."""
    environ = {**os.environ, **WRAPPED, **(env or {})}
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run(["ip", "netns", "exec", ns.name, "iptables-restore", *argv], input=data,
                          capture_output=True, timeout=120, env=environ)


def ruleset(ns: Netns) -> str:
    return ns.nft("-s", "list", "ruleset").stdout


ALL_CONFIG = config_of(**EVERY_LIST, **PODIP)
ALL_FLAGS = as_flags({**EVERY_LIST, **PODIP})


def test_fsm_command_twice_leaves_one_ruleset_equal_to_apply(ns: Netns) -> None:
    assert ns.nftredir("apply", *ALL_FLAGS).returncode == 0
    by_apply = ruleset(ns)
    assert ns.nftredir("remove").returncode == 0
    command = fsm_command(ALL_CONFIG)
    for _ in range(2):
        run_fsm_command(ns, command, str(ALL_CONFIG.pod_ip), WRAPPED)
        assert ruleset(ns) == by_apply
    assert ns.nftredir("diff", *ALL_FLAGS).returncode == 0


def test_test_commits_nothing(ns: Netns) -> None:
    for flag in ("--test", "-t"):
        result = restore(ns, flag, "--noflush", input=ALL)
        assert result.returncode == 0, result.stderr
        assert ruleset(ns) == ""


def test_reads_a_file_and_dash(ns: Netns, tmp_path: Path) -> None:
    script = tmp_path / "rules"
    script.write_text(ALL)
    assert restore(ns, str(script), input="").returncode == 0
    first = ruleset(ns)
    assert "table inet nftredir" in first
    assert restore(ns, "-n", "-", input=ALL).returncode == 0
    assert ruleset(ns) == first
    missing = restore(ns, str(tmp_path / "absent"), input="")
    assert missing.returncode == 2 and b"cannot read" in missing.stderr


def test_environment_table_is_honoured_and_stated_options_are_refused(ns: Netns) -> None:
    assert restore(ns, input=ALL, env={"NFTREDIR_TABLE": "mesh"}).returncode == 0
    assert ns.nft("list", "tables").stdout.split() == ["table", "inet", "mesh"]
    before = ruleset(ns)
    for variable, value in (("NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST", "1"), ("NFTREDIR_POD_IP", "10.0.0.1")):
        result = restore(ns, input=ALL, env={variable: value})
        assert result.returncode == 2
        assert result.stderr.decode().startswith(f"nftredir: error: {variable}: ")
        assert "stated by the iptables-restore script" in result.stderr.decode()
    # POD_IP is the shell's business: the address in the script wins whatever POD_IP says.
    assert restore(ns, input=ALL, env={"POD_IP": "192.0.2.1", "NFTREDIR_TABLE": "mesh"}).returncode == 0
    assert ruleset(ns) == before


@pytest.fixture(scope="module")
def refusal_ns() -> Iterator[tuple[Netns, str]]:
    """One namespace holding a previous nftredir table and a foreign iptables rule."""
    with nl.netns(nl.unique_name("refusals", prefix=PREFIX)) as ns:
        assert ns.nftredir("apply", "--outbound-port-exclusion-list", "6379").returncode == 0
        ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "RETURN"])
        yield ns, ruleset(ns)


@pytest.mark.parametrize("case", list(REFUSED) + ["binary garbage"])
def test_refusal_is_exit_2_one_line_naming_the_line_and_leaves_the_ruleset(case: str, refusal_ns) -> None:
    ns, before = refusal_ns
    text = b"\x7fELF\x02\x01\x01\x00\xff\xfe garbage\n" if case == "binary garbage" else REFUSED[case][0](ALL).encode()
    for argv in (("--noflush",), ("--test",)):
        result = restore(ns, *argv, input=text)
        assert result.returncode == 2, (case, result.stderr)
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nftredir: error: <stdin>:"), lines
        assert "Traceback" not in result.stderr.decode()
        assert ruleset(ns) == before
