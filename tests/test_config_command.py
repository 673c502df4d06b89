"""`nftredir config`, and the configuration sources through the CLI as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lab.netlab import run_nftredir
from tests.conftest import REPO, fsm_reference
from tests.test_sources import ANNOTATIONS, MESH_YAML


def nftredir(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a clean environment (no NFTREDIR_* or POD_IP from the caller) plus `env`."""
    return run_nftredir(*argv, env=env, clean_env=True)


@pytest.fixture
def mesh_files(tmp_path):
    (tmp_path / "mesh.yaml").write_text(MESH_YAML)
    (tmp_path / "annotations").write_text(ANNOTATIONS)
    return str(tmp_path / "mesh.yaml"), str(tmp_path / "annotations")


def test_config_prints_each_value_with_its_source_as_yaml(mesh_files):
    mesh, annotations = mesh_files
    result = nftredir("config", "--mesh-config", mesh, "--pod-annotations", annotations, "--table", "t1",
                      env={"POD_IP": "10.1.2.3", "NFTREDIR_PROXY_UID": "1337"})
    assert result.returncode == 0, result.stderr
    report = yaml.safe_load(result.stdout)
    assert report["outbound-port-exclusion-list"] == [
        {"value": 6379, "source": f"{mesh}:17: spec.traffic.outboundPortExclusionList[0]"},
        {"value": 7070, "source": f"{mesh}:18: spec.traffic.outboundPortExclusionList[1]"},
        {"value": 5432, "source": f"{annotations}:3 flomesh.io/outbound-port-exclusion-list"},
    ]
    assert report["local-proxy-mode"] == {"value": "podip", "source": f"{mesh}:8: spec.sidecar.localProxyMode"}
    assert report["pod-ip"] == {"value": "10.1.2.3", "source": "POD_IP"}
    assert report["table"] == {"value": "t1", "source": "--table"}
    assert report["proxy-uid"] == {"value": 1337, "source": "NFTREDIR_PROXY_UID"}
    assert report["proxy-admin-port"] == {"value": 15000, "source": "default"}


def test_config_json_and_file_paths_from_the_environment(mesh_files):
    mesh, annotations = mesh_files
    env = {"NFTREDIR_MESH_CONFIG": mesh, "NFTREDIR_POD_ANNOTATIONS": annotations, "POD_IP": "10.1.2.3"}
    result = nftredir("config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [v["value"] for v in report["outbound-ip-range-exclusion-list"]] == [
        "10.0.0.0/8", "169.254.169.254/32", "10.96.0.0/12"
    ]


def test_list_flags_are_comma_separated_and_repeatable_and_replace_the_lower_layers(mesh_files):
    mesh, _ = mesh_files
    result = nftredir("config", "-f", "json", "--mesh-config", mesh, "--outbound-port-exclusion-list", "1,2",
                      "--outbound-port-exclusion-list", "3", env={"POD_IP": "10.1.2.3"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outbound-port-exclusion-list"] == [
        {"value": n, "source": "--outbound-port-exclusion-list"} for n in (1, 2, 3)
    ]


def test_render_and_apply_and_every_config_command_take_the_file_options():
    for command in ("render", "apply", "config"):
        help_text = nftredir(command, "--help").stdout
        for flag in ("--config", "--mesh-config", "--pod-annotations"):
            assert flag in help_text, (command, flag)


def test_render_from_meshconfig_and_annotations(mesh_files):
    mesh, annotations = mesh_files
    result = nftredir("render", "--mesh-config", mesh, "--pod-annotations", annotations, env={"POD_IP": "10.1.2.3"})
    assert result.returncode == 0, result.stderr
    assert "dnat ip to 10.1.2.3" in result.stdout.replace("dnat to", "dnat ip to")
    assert "5432" in result.stdout and "169.254.169.254" in result.stdout  # 10.96.0.0/12 is inside 10.0.0.0/8


@pytest.mark.parametrize(
    "files, argv, env, message",
    [
        ({"a": 'flomesh.io/outbound-port-exclusion-list="0"'}, ["--pod-annotations", "{a}"], {},
         "{a}:1 flomesh.io/outbound-port-exclusion-list: '0': not a port"),
        ({"a": "flomesh.io/outbound-port-exclusion-list=80"}, ["--pod-annotations", "{a}"], {},
         "{a}:1 flomesh.io/outbound-port-exclusion-list: '80': not a Go-quoted string"),
        ({"m": "spec:\n  traffic:\n    outboundPortExclusionList: [{a: 1}]\n"}, ["--mesh-config", "{m}"], {},
         "{m}:3: spec.traffic.outboundPortExclusionList[0]: {{'a': 1}}: expected an integer, got a mapping"),
        ({"m": "spec: [\n"}, ["--mesh-config", "{m}"], {}, "{m}:2: '': malformed YAML"),
        ({"c": "tabel: x\n"}, ["--config", "{c}"], {}, "{c}:1: 'tabel': unknown key"),
        ({}, ["--config", "{dir}/absent"], {}, "{dir}/absent: '"),  # then the path, cut, and 'cannot read'
        ({}, [], {"NFTREDIR_INBOUND_PORT_EXCLUSION_LIST": "70000"}, "NFTREDIR_INBOUND_PORT_EXCLUSION_LIST: '70000': not a port"),
        ({}, ["--outbound-ip-range-exclusion-list", "foobar"], {}, "--outbound-ip-range-exclusion-list: 'foobar': not an IPv4 CIDR"),
        ({}, ["--local-proxy-mode", "podip"], {"POD_IP": "10.1.2"}, "POD_IP: '10.1.2': not an IPv4 address"),
    ],
)
@pytest.mark.parametrize("command", ["config", "render", "apply"])
def test_bad_input_is_one_line_naming_source_value_and_reason_exit_2(tmp_path, command, files, argv, env, message):
    names = {"dir": str(tmp_path)}
    for key, text in files.items():
        (tmp_path / key).write_text(text)
        names[key] = str(tmp_path / key)
    # apply fails on validation before it would look for the kernel; run unprivileged-safe regardless.
    result = nftredir(command, *(a.format(**names) for a in argv), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("nftredir: error: " + message.format(**names)), result.stderr
    assert result.stderr.count("\n") == 1


def test_bytes_that_are_not_utf8_in_a_flag_and_a_file(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"table: \xff\n")
    result = nftredir("render", "--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 2 and "not UTF-8" in result.stderr and result.stderr.count("\n") == 1
    raw = subprocess.run([sys.executable, "-m", "nftredir", "render", b"--table", b"t\xff;"], capture_output=True, cwd=REPO)
    assert raw.returncode == 2 and raw.stderr.startswith(b"nftredir: error: --table: ") and raw.stderr.count(b"\n") == 1


# FSM's injector for the pod of tests.test_sources (MESH_YAML + ANNOTATIONS, plus an inclusion
# annotation), derived by hand from docs in /work/shared/reference/fsm-rules.md: the merged lists
# are ranges 10.0.0.0/8, 169.254.169.254/32, 10.96.0.0/12 (pod first); outbound ports
# 6379, 7070, 5432 and inbound ports 9090, 8080 (global first); interface eth1; PodIP mode.
FSM_SCRIPT = fsm_reference("mesh-and-annotations.rules")


def test_meshconfig_and_annotations_render_the_script_fsms_injector_would(tmp_path):
    (tmp_path / "mesh.yaml").write_text(MESH_YAML)
    (tmp_path / "annotations").write_text(
        ANNOTATIONS.replace("kubernetes.io", 'flomesh.io/outbound-ip-range-inclusion-list="192.168.0.0/16"\nkubernetes.io')
    )
    result = nftredir("render", "--format", "iptables", "--mesh-config", str(tmp_path / "mesh.yaml"),
                      "--pod-annotations", str(tmp_path / "annotations"), env={"POD_IP": "10.1.2.3"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == FSM_SCRIPT.strip().splitlines()
