"""The CNI contract of nftredir-cni: every command, its output, its errors and exit codes.

The plugin runs as the runtime runs it: a fresh process, CNI_* in its environment, the network
configuration on stdin, and (whatever a test expects) inside a throwaway network namespace of
its own, so only the CNI_NETNS it enters can be changed.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from lab import netlab
from nftredir import cni

ALL_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
               "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}],
               "dns": {"nameservers": ["10.96.0.10"]}}


def network_config(**keys: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "nftredir-cni", "prevResult": PREV_RESULT, **keys}


def run_plugin(command: str | None, config: Any, netns: netlab.Netns | None = None,
               inside: netlab.Netns | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The plugin as a runtime runs it, for the pod namespace `netns`; `config` is sent as JSON
    unless it is already text. It runs in `inside` (where a test's API server listens), else in
    a namespace of its own."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NFTREDIR_"))}
    cni_env = {"CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
               "CNI_NETNS": f"/run/netns/{netns.name}" if netns else "/run/netns/none-such"}
    if command is not None:
        cni_env["CNI_COMMAND"] = command
    argv = [netlab.PYTHON, "-c", "from nftredir.cni import main; main()"]
    if inside is not None:
        argv = inside.argv(argv)
    elif os.geteuid() == 0:
        argv = ["unshare", "--net", *argv]
    stdin = config if isinstance(config, str) else json.dumps(config)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=netlab.REPO,
                          env={**base, **cni_env, **env}, timeout=120)


def cni_error(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The CNI error object a failed run printed: one JSON object with code and msg."""
    assert done.returncode != 0
    error = json.loads(done.stdout)
    assert isinstance(error["code"], int) and error["msg"] and "\n" not in error["msg"]
    assert "Traceback" not in done.stderr
    return error


# ----------------------------------------------------------------------------- no kernel


@pytest.mark.parametrize("asked", ALL_VERSIONS)
def test_version_lists_the_supported_versions_in_the_asked_version(asked):
    done = run_plugin("VERSION", {"cniVersion": asked})
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"cniVersion": asked, "supportedVersions": list(ALL_VERSIONS)}


def test_version_answers_even_an_unknown_version_with_the_list():
    done = run_plugin("VERSION", {"cniVersion": "9.0.0"})
    assert done.returncode == 0 and json.loads(done.stdout)["supportedVersions"] == list(ALL_VERSIONS)


def test_nftredir_cni_is_the_same_plugin():
    done = netlab.run_nftredir("cni", env={"CNI_COMMAND": "VERSION"}, input='{"cniVersion": "1.0.0"}')
    assert done.returncode == 0 and json.loads(done.stdout)["supportedVersions"] == list(ALL_VERSIONS)


def test_no_cni_command_is_error_4_invalid_environment():
    error = cni_error(done := run_plugin(None, network_config()))
    assert error["code"] == cni.INVALID_ENVIRONMENT and "CNI_COMMAND" in error["msg"]
    assert done.returncode == 2


def test_an_unknown_command_is_error_4():
    error = cni_error(run_plugin("UPDATE", network_config()))
    assert error["code"] == cni.INVALID_ENVIRONMENT and "UPDATE" in error["msg"]


@pytest.mark.parametrize("stdin", ["", "{", "[]", '"text"', "\xff"])
def test_configuration_that_is_not_a_json_object_is_error_6(stdin):
    done = run_plugin("ADD", stdin)
    assert cni_error(done)["code"] == cni.DECODE_FAILURE and done.returncode == 2


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0", "1.0", None, 1])
def test_an_unsupported_cni_version_is_error_1(version):
    error = cni_error(run_plugin("ADD", network_config(cniVersion=version)))
    assert error["code"] == cni.INCOMPATIBLE_VERSION and "1.0.0" in error["details"]


@pytest.mark.parametrize(("command", "version"), [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "1.0.0")])
def test_a_command_the_version_does_not_have_is_error_1(command, version):
    error = cni_error(run_plugin(command, network_config(cniVersion=version)))
    assert error["code"] == cni.INCOMPATIBLE_VERSION and command in error["msg"]
    assert error["cniVersion"] == version  # errors speak the configuration's version


def test_status_and_gc_succeed_silently_in_1_1():
    for command in ("STATUS", "GC"):
        done = run_plugin(command, network_config(cniVersion="1.1.0"))
        assert (done.returncode, done.stdout) == (0, "")


def test_an_unknown_key_is_error_7_naming_it():
    error = cni_error(run_plugin("ADD", network_config(**{"proxy-uuid": 1500})))
    assert error["code"] == cni.INVALID_CONFIG and "'proxy-uuid': unknown key" in error["msg"]


def test_a_bad_option_value_is_error_7_naming_value_and_reason():
    error = cni_error(run_plugin("ADD", network_config(**{"outbound-port-exclusion-list": [6379, 70000]})))
    assert error["code"] == cni.INVALID_CONFIG
    assert "outbound-port-exclusion-list[1]: '70000': not a port" in error["msg"]


@pytest.mark.parametrize(("key", "value"), [("injection-marker", {"label": "a", "annotation": "b"}),
                                            ("injection-marker", "fsm-proxy-uuid"), ("on-api-unreachable", "ignore"),
                                            ("kubeconfig", ""), ("log-file", 3)])
def test_bad_plugin_keys_are_error_7(key, value):
    error = cni_error(run_plugin("ADD", network_config(**{key: value})))
    assert error["code"] == cni.INVALID_CONFIG and key in error["msg"]


def test_add_without_prev_result_is_error_7_it_must_be_chained():
    config = network_config()
    del config["prevResult"]
    error = cni_error(run_plugin("ADD", config))
    assert error["code"] == cni.INVALID_CONFIG and "chained" in error["msg"]


@pytest.mark.parametrize("variable", ["CNI_NETNS", "CNI_CONTAINERID"])
def test_add_without_a_required_variable_is_error_4_naming_it(variable):
    error = cni_error(run_plugin("ADD", network_config(), **{variable: ""}))
    assert error["code"] == cni.INVALID_ENVIRONMENT and variable in error["msg"]


def test_add_into_a_namespace_that_is_gone_is_error_3():
    done = run_plugin("ADD", network_config())
    assert cni_error(done)["code"] == cni.UNKNOWN_CONTAINER and done.returncode == 3


def test_malformed_cni_args_are_error_4():
    error = cni_error(run_plugin("ADD", network_config(kubeconfig="/nonexistent"), CNI_ARGS="K8S_POD_NAME"))
    assert error["code"] == cni.INVALID_ENVIRONMENT and "CNI_ARGS" in error["msg"]


@pytest.mark.parametrize("cni_args", ["", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default"])
def test_with_a_kubeconfig_a_runtime_that_names_no_pod_is_skipped(cni_args):
    done = run_plugin("ADD", network_config(kubeconfig="/nonexistent"), CNI_ARGS=cni_args)
    assert done.returncode == 0 and json.loads(done.stdout) == PREV_RESULT
    assert "skipped" in done.stderr


def test_a_bug_is_error_199_exit_4_in_one_line(monkeypatch):
    monkeypatch.setattr(cni, "add", lambda *args: 1 / 0)
    monkeypatch.setitem(cni.COMMANDS, "ADD", cni.add)
    output, code = cni.run({"CNI_COMMAND": "ADD"}, json.dumps(network_config()).encode())
    assert code == 4 and json.loads(output)["code"] == cni.INTERNAL and "ZeroDivisionError" in json.loads(output)["msg"]


def test_cni_args_are_key_value_pairs():
    assert cni.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "web-0"}


# ----------------------------------------------------------------------------- in a namespace

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


@needs_root
def test_add_prints_prev_result_unchanged_and_applies_what_apply_applies(netns):
    config = network_config(**{"outbound-port-exclusion-list": [6379], "probe-ports": "15901"})
    done = run_plugin("ADD", config, netns)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout) == PREV_RESULT
    listed = netns.list_table()
    assert "counter managed_by_nftredir" in listed
    with netlab.netns(netlab.unique_name("apply")) as other:
        assert other.nftredir("apply", "--outbound-port-exclusion-list", "6379", "--probe-ports", "15901").returncode == 0
        assert other.list_table() == listed


@needs_root
def test_add_twice_leaves_one_ruleset(netns):
    assert run_plugin("ADD", network_config(), netns).returncode == 0
    first = netns.nft("-s", "list", "ruleset").stdout
    assert run_plugin("ADD", network_config(), netns).returncode == 0
    assert netns.nft("-s", "list", "ruleset").stdout == first


@needs_root
def test_add_in_podip_mode_takes_the_pod_ip_from_prev_result(netns):
    assert run_plugin("ADD", network_config(**{"local-proxy-mode": "podip"}), netns).returncode == 0
    assert "dnat ip to 10.88.0.5" in netns.list_table()


@needs_root
def test_add_refuses_a_table_that_is_not_nftredirs_and_leaves_it(netns):
    netns.nft("add", "table", "inet", "nftredir")
    netns.nft("add", "chain", "inet", "nftredir", "theirs")
    before = netns.nft("list", "ruleset").stdout
    error = cni_error(run_plugin("ADD", network_config(), netns))
    assert error["code"] == cni.INVALID_CONFIG and "not nftredir's" in error["msg"]
    assert netns.nft("list", "ruleset").stdout == before
    # DEL leaves it too, and still succeeds: a pod's teardown never waits on another's table.
    done = run_plugin("DEL", network_config(), netns)
    assert done.returncode == 0 and "left table inet nftredir alone" in done.stderr
    assert netns.nft("list", "ruleset").stdout == before


@needs_root
def test_check_passes_after_add_and_fails_with_the_diff_after_a_change(netns):
    assert run_plugin("ADD", network_config(), netns).returncode == 0
    done = run_plugin("CHECK", network_config(), netns)
    assert (done.returncode, done.stdout) == (0, "")
    netns.nft("add", "rule", "inet", "nftredir", "PROXY_OUTPUT", "accept")
    done = run_plugin("CHECK", network_config(), netns)
    error = cni_error(done)
    assert error["code"] == cni.TABLE_DIFFERS and done.returncode == 1
    assert "-\t\taccept" in error["details"]


@needs_root
def test_check_fails_when_the_table_is_missing(netns):
    assert cni_error(run_plugin("CHECK", network_config(), netns))["code"] == cni.TABLE_DIFFERS


@needs_root
def test_del_removes_the_table_and_succeeds_again_when_it_is_gone(netns):
    config = network_config(table="meshredir")
    assert run_plugin("ADD", config, netns).returncode == 0
    netns.nft("add", "table", "inet", "other")
    for _ in range(2):
        done = run_plugin("DEL", config, netns)
        assert (done.returncode, done.stdout) == (0, "")
        assert netns.nft("list", "tables").stdout.split() == ["table", "inet", "other"]


def test_del_succeeds_when_the_namespace_is_gone_or_not_given():
    for netns_path in ("/run/netns/none-such", ""):
        done = run_plugin("DEL", network_config(), CNI_NETNS=netns_path)
        assert (done.returncode, done.stdout) == (0, "")
        assert ("'/run/netns/none-such' is gone" if netns_path else "no CNI_NETNS") in done.stderr


def test_del_does_not_need_prev_result_or_valid_option_values():
    config = network_config(**{"outbound-port-exclusion-list": ["x"]})
    del config["prevResult"]
    assert run_plugin("DEL", config).returncode == 0
