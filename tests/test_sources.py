"""Configuration sources, each alone, then together: environment, nftredir's file, FSM's
MeshConfig, the pod's annotations; FSM's merge; precedence; and each source's errors."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from nftredir.config import Config, Item, build_config
from nftredir.errors import ConfigError
from nftredir.sources import Files, gather, merge_fsm, overlay
from nftredir.sources.annotations import go_unquote, read_pod_annotations
from nftredir.sources.config_file import read_config_file
from nftredir.sources.environment import environment_layer, variable
from nftredir.sources.meshconfig import read_mesh_config

MESH_YAML = """\
apiVersion: config.flomesh.io/v1alpha3
kind: MeshConfig
metadata:
  name: fsm-mesh-config
  namespace: fsm-system
spec:
  sidecar:
    localProxyMode: PodIP
    logLevel: error
  traffic:
    enableEgress: true
    outboundIPRangeExclusionList:
    - 169.254.169.254/32
    - 10.96.0.0/12
    outboundIPRangeInclusionList: []
    outboundPortExclusionList:
    - 6379
    - 7070
    inboundPortExclusionList:
    - 9090
    networkInterfaceExclusionList:
    - eth1
"""
ANNOTATIONS = (
    'flomesh.io/inbound-port-exclusion-list="8080, 9090"\n'
    'flomesh.io/outbound-ip-range-exclusion-list="10.0.0.0/8,169.254.169.254/32"\n'
    'flomesh.io/outbound-port-exclusion-list="7070,5432"\n'
    'kubernetes.io/config.seen="2024-01-01T00:00:00.000000000Z"\n'
    'note="a \\"quoted\\" line\\nwith \\u00e9 and \\x41"'
)


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def texts(layer: dict[str, list[Item]], option: str) -> list[str]:
    return [item.text for item in layer[option]]


def error_of(call, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return info.value


# --- the environment -------------------------------------------------------------------------


def test_environment_names_every_option_nftredir_upper_case():
    assert variable("outbound-port-exclusion-list") == "NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST"
    layer = environment_layer({"NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST": "6379, 7070", "NFTREDIR_TABLE": "t"})
    assert layer == {
        "outbound-port-exclusion-list": [
            Item("6379", "NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST"),
            Item("7070", "NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST"),
        ],
        "table": [Item("t", "NFTREDIR_TABLE")],
    }


def test_environment_pod_ip_from_downward_api_unless_nftredir_pod_ip_is_set():
    assert environment_layer({"POD_IP": "10.1.2.3"}) == {"pod-ip": [Item("10.1.2.3", "POD_IP")]}
    both = environment_layer({"POD_IP": "10.1.2.3", "NFTREDIR_POD_IP": "10.9.9.9"})
    assert both == {"pod-ip": [Item("10.9.9.9", "NFTREDIR_POD_IP")]}


def test_environment_empty_list_variable_is_an_explicit_empty_list():
    assert environment_layer({"NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST": ""}) == {"outbound-port-exclusion-list": []}


def test_environment_ignores_unrelated_and_unknown_variables():
    assert environment_layer({"PATH": "/bin", "NFTREDIR_UPDATE_GOLDENS": "1"}) == {}


# --- nftredir's own file ---------------------------------------------------------------------


def test_config_file_yaml_lists_strings_and_scalars(tmp_path):
    path = write(tmp_path, "nftredir.yaml", (
        "outbound-port-exclusion-list: [6379, 7070]\n"
        "outbound-ip-range-exclusion-list: 10.0.0.0/8, 169.254.169.254/32\n"
        "local-proxy-mode: podip\n"
        "pod-ip: 10.1.2.3\n"
        "proxy-uid: 1337\n"
    ))
    layer = read_config_file(path)
    assert texts(layer, "outbound-port-exclusion-list") == ["6379", "7070"]
    assert str(layer["outbound-port-exclusion-list"][1].source) == f"{path}:1: outbound-port-exclusion-list[1]"
    assert texts(layer, "outbound-ip-range-exclusion-list") == ["10.0.0.0/8", "169.254.169.254/32"]
    config = build_config(layer)
    assert config.proxy_uid == 1337 and config.pod_ip == ipaddress.IPv4Address("10.1.2.3")


def test_config_file_json(tmp_path):
    path = write(tmp_path, "nftredir.json", json.dumps({"inbound-port-exclusion-list": [80, "81,82"], "table": "t"}))
    config = build_config(read_config_file(path))
    assert config.inbound_port_exclusions == (80, 81, 82) and config.table == "t"


def test_config_file_empty_is_no_settings(tmp_path):
    assert read_config_file(write(tmp_path, "empty.yaml", "")) == {}


def test_config_file_key_without_value_is_an_empty_list(tmp_path):
    assert read_config_file(write(tmp_path, "c.yaml", "outbound-port-exclusion-list:\n")) == {
        "outbound-port-exclusion-list": []
    }


def test_config_file_unknown_key_names_file_and_line(tmp_path):
    path = write(tmp_path, "c.yaml", "table: t\ntabel: x\n")
    error = error_of(read_config_file, path)
    assert error.source == f"{path}:2" and error.value == "tabel" and "unknown key" in error.reason


@pytest.mark.parametrize(
    "text, source, reason",
    [
        ("table: [a, b]\n", ":1: table", "expected a string or an integer"),
        ("proxy-uid: true\n", ":1: proxy-uid", "expected a string or an integer"),
        ("probe-ports: [[1]]\n", ":1: probe-ports[0]", "expected a string or an integer"),
        ("- table\n", ":1", "expected a mapping, got a list"),
        ("table: t\ntable: u\n", ":2", "duplicate key"),
        ("table: [\n", ":2", "malformed YAML"),
        ('{"table": "t",}', ":1:15", "malformed JSON"),
        ('{"table": "t", "table": "u"}', "", "duplicate key"),
    ],
)
def test_config_file_malformed_names_the_position(tmp_path, text, source, reason):
    path = write(tmp_path, "c.yaml", text)
    error = error_of(read_config_file, path)
    assert error.source == path + source and reason in error.reason


def test_unreadable_and_non_utf8_files(tmp_path):
    missing = error_of(read_config_file, str(tmp_path / "absent.yaml"))
    assert missing.source.endswith("absent.yaml") and "cannot read" in missing.reason
    path = write(tmp_path, "latin1.yaml", b"table: t\ntable2: caf\xe9\n")
    error = error_of(read_config_file, path)
    assert error.source == f"{path}:2" and "not UTF-8" in error.reason


# --- FSM's MeshConfig ------------------------------------------------------------------------


def test_meshconfig_yaml_reads_the_global_lists_with_field_paths(tmp_path):
    path = write(tmp_path, "mesh.yaml", MESH_YAML)
    layer = read_mesh_config(path)
    assert texts(layer, "outbound-ip-range-exclusion-list") == ["169.254.169.254/32", "10.96.0.0/12"]
    assert texts(layer, "outbound-ip-range-inclusion-list") == []
    assert texts(layer, "outbound-port-exclusion-list") == ["6379", "7070"]
    assert texts(layer, "inbound-port-exclusion-list") == ["9090"]
    assert texts(layer, "network-interface-exclusion-list") == ["eth1"]
    assert texts(layer, "local-proxy-mode") == ["PodIP"]
    assert str(layer["outbound-port-exclusion-list"][1].source) == f"{path}:18: spec.traffic.outboundPortExclusionList[1]"
    assert str(layer["local-proxy-mode"][0].source) == f"{path}:8: spec.sidecar.localProxyMode"


def test_meshconfig_json_as_kubectl_prints_it(tmp_path):
    import yaml

    path = write(tmp_path, "mesh.json", json.dumps(yaml.safe_load(MESH_YAML), indent=4))
    layer = read_mesh_config(path)
    assert texts(layer, "outbound-port-exclusion-list") == ["6379", "7070"]
    assert str(layer["outbound-port-exclusion-list"][0].source) == f"{path}: spec.traffic.outboundPortExclusionList[0]"


def test_meshconfig_without_traffic_or_spec_gives_nothing(tmp_path):
    assert read_mesh_config(write(tmp_path, "m.yaml", "kind: MeshConfig\nmetadata: {name: x}\n")) == {}
    assert read_mesh_config(write(tmp_path, "m2.yaml", "spec:\n  traffic: {enableEgress: true}\n")) == {}


@pytest.mark.parametrize(
    "text, source, reason",
    [
        ("spec:\n  traffic:\n    outboundPortExclusionList:\n    - {port: 80}\n",
         ":4: spec.traffic.outboundPortExclusionList[0]", "expected an integer, got a mapping"),
        ("spec:\n  traffic:\n    outboundPortExclusionList: ['80']\n",
         ":3: spec.traffic.outboundPortExclusionList[0]", "expected an integer, got a string"),
        ("spec:\n  traffic:\n    inboundPortExclusionList: [true]\n",
         ":3: spec.traffic.inboundPortExclusionList[0]", "expected an integer, got a boolean"),
        ("spec:\n  traffic:\n    outboundIPRangeExclusionList: 10.0.0.0/8\n",
         ":3: spec.traffic.outboundIPRangeExclusionList", "expected a list, got a string"),
        ("spec:\n  traffic:\n    outboundIPRangeExclusionList: [8]\n",
         ":3: spec.traffic.outboundIPRangeExclusionList[0]", "expected a string, got an integer"),
        ("spec:\n  traffic: []\n", ":2: spec.traffic", "expected a mapping"),
        ("spec:\n  sidecar: {localProxyMode: 1}\n", ":2: spec.sidecar.localProxyMode", "expected a string"),
        ("kind: List\nitems: []\n", ":1: kind", "expected kind MeshConfig"),
    ],
)
def test_meshconfig_wrong_type_names_the_field_path(tmp_path, text, source, reason):
    path = write(tmp_path, "mesh.yaml", text)
    error = error_of(read_mesh_config, path)
    assert error.source == path + source and reason in error.reason


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("outboundPortExclusionList", "[0]", "not a port"),
        ("outboundPortExclusionList", "[70000]", "not a port"),
        ("outboundIPRangeExclusionList", "[foobar]", "not an IPv4 CIDR"),
    ],
)
def test_meshconfig_bad_values_are_refused_naming_the_item(tmp_path, field, value, reason):
    path = write(tmp_path, "mesh.yaml", f"spec:\n  traffic:\n    {field}: {value}\n")
    error = error_of(build_config, read_mesh_config(path))
    assert error.source == f"{path}:3: spec.traffic.{field}[0]" and reason in error.reason


@pytest.mark.parametrize("bad, reason", [("10.0.0.0/33", "prefix length 33"), ("fd00::/129", "over 128"),
                                          ("10.0.0.1", "expected a.b.c.d/len")])
def test_a_bad_cidr_deep_in_a_long_list_is_named_by_its_position(tmp_path, bad, reason):
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(2_000)]
    cidrs[1234] = bad
    path = write(tmp_path, "mesh.json", json.dumps({"spec": {"traffic": {"outboundIPRangeExclusionList": cidrs}}}))
    error = error_of(build_config, read_mesh_config(path))
    assert error.source == f"{path}: spec.traffic.outboundIPRangeExclusionList[1234]", error.source
    assert error.value == bad and reason in error.reason


def test_a_meshconfig_list_reads_as_its_items_by_index_slice_and_iteration(tmp_path):
    path = write(tmp_path, "mesh.yaml", "spec:\n  traffic:\n    outboundIPRangeExclusionList:\n    - 10.0.0.0/8\n    - 10.1.0.0/16\n    - 10.2.0.0/16\n")
    items = read_mesh_config(path)["outbound-ip-range-exclusion-list"]
    eager = list(items)
    assert [item.text for item in eager] == ["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16"]
    assert [str(item.source) for item in eager] == [f"{path}:{4 + i}: spec.traffic.outboundIPRangeExclusionList[{i}]" for i in range(3)]
    assert (items[0], items[-1], items[1:], len(items)) == (eager[0], eager[2], eager[1:], 3)
    with pytest.raises(IndexError):
        items[3]


def test_fsm_merge_of_a_meshconfig_list_with_an_annotation_keeps_each_source(tmp_path):
    mesh = write(tmp_path, "mesh.yaml", "spec:\n  traffic:\n    outboundIPRangeExclusionList: [10.0.0.0/8, 10.1.0.0/16, 10.0.0.0/8]\n")
    pod = {"outbound-ip-range-exclusion-list": [Item("10.1.0.0/16", "annotation"), Item("10.9.0.0/16", "annotation")]}
    merged = merge_fsm(read_mesh_config(mesh), pod)["outbound-ip-range-exclusion-list"]
    assert [(item.text, str(item.source).split(": ")[-1]) for item in merged] == [
        ("10.1.0.0/16", "annotation"), ("10.9.0.0/16", "annotation"),
        ("10.0.0.0/8", "spec.traffic.outboundIPRangeExclusionList[0]")]
    alone = merge_fsm(read_mesh_config(mesh), {})["outbound-ip-range-exclusion-list"]
    assert [item.text for item in alone] == ["10.0.0.0/8", "10.1.0.0/16"]  # the repeat dropped, first kept


def test_meshconfig_billion_laughs_costs_nothing(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 10)]
    path = write(tmp_path, "mesh.yaml", "\n".join(lines) + "\nspec:\n  traffic:\n    outboundIPRangeExclusionList: *a9\n")
    error = error_of(read_mesh_config, path)
    assert "expected a string, got a list" in error.reason and len(str(error)) < 300


def test_meshconfig_tens_of_thousands_of_cidrs(tmp_path):
    cidrs = [str(ipaddress.IPv4Network((0x0A000000 + i * 256, 24))) for i in range(50_000)]
    body = "".join(f"    - {c}\n" for c in cidrs)
    path = write(tmp_path, "mesh.yaml", f"kind: MeshConfig\nspec:\n  traffic:\n    outboundIPRangeExclusionList:\n{body}")
    config = build_config(read_mesh_config(path))
    assert len(config.outbound_ip_range_exclusions) == 50_000


# --- the pod's annotations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "quoted, value",
    [
        ('""', ""),
        ('"80,81"', "80,81"),
        ('"a\\"b\\\\c"', 'a"b\\c'),
        ('"\\a\\b\\f\\n\\r\\t\\v"', "\a\b\f\n\r\t\v"),
        ('"\\x41\\101\\u00e9\\U0001F600"', "AA\u00e9\U0001F600"),
        ('"é"', "é"),
        ('"\\xff"', "\udcff"),  # a byte that is not UTF-8 stays visible, for the validators to refuse
    ],
)
def test_go_unquote_reads_what_strconv_quote_writes(quoted, value):
    assert go_unquote(quoted) == value


@pytest.mark.parametrize(
    "quoted",
    ['"', "80", '"80', '80"', '"a"b"', '"a\nb"', '"\\q"', '"\\x4"', '"\\u12"', '"\\ud800"', '"\\U00110000"',
     '"\\400"', '"\\19"', '"\\"', "'80'", '"\\\'"'],
)
def test_go_unquote_refuses_what_go_refuses(quoted):
    with pytest.raises(ValueError):
        go_unquote(quoted)


def test_downward_api_annotations_file(tmp_path):
    path = write(tmp_path, "annotations", ANNOTATIONS)
    layer = read_pod_annotations(path)
    assert texts(layer, "inbound-port-exclusion-list") == ["8080", "9090"]
    assert texts(layer, "outbound-ip-range-exclusion-list") == ["10.0.0.0/8", "169.254.169.254/32"]
    assert texts(layer, "outbound-port-exclusion-list") == ["7070", "5432"]
    assert str(layer["outbound-port-exclusion-list"][0].source) == f"{path}:3 flomesh.io/outbound-port-exclusion-list"
    assert "outbound-ip-range-inclusion-list" not in layer


def test_empty_downward_api_file_means_no_annotations(tmp_path):
    assert read_pod_annotations(write(tmp_path, "annotations", "")) == {}


@pytest.mark.parametrize("suffix, dump", [("yaml", "yaml"), ("json", "json")])
def test_pod_manifest_annotations(tmp_path, suffix, dump):
    import yaml

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"flomesh.io/outbound-port-exclusion-list": "6379, 7070", "x": "y"}},
        "spec": {"containers": []},
    }
    text = yaml.safe_dump(pod) if dump == "yaml" else json.dumps(pod)
    path = write(tmp_path, f"pod.{suffix}", text)
    layer = read_pod_annotations(path)
    assert texts(layer, "outbound-port-exclusion-list") == ["6379", "7070"]
    assert "metadata['flomesh.io/outbound-port-exclusion-list']" not in layer["outbound-port-exclusion-list"][0].source
    assert layer["outbound-port-exclusion-list"][0].source.endswith(
        "metadata.annotations['flomesh.io/outbound-port-exclusion-list']"
    )


@pytest.mark.parametrize(
    "text, source, reason",
    [
        ('flomesh.io/outbound-port-exclusion-list="80\\q"', ":1 flomesh.io/outbound-port-exclusion-list", "unknown escape"),
        ('a="1"\nflomesh.io/outbound-port-exclusion-list=80', ":2 flomesh.io/outbound-port-exclusion-list", "not a Go-quoted string"),
        ('a="1"\nno equals sign', ":2", "not a `key=\"value\"` line"),
        ('a="1"\na="2"', ":2 a", "appears twice"),
        ('flomesh.io/outbound-port-exclusion-list="80,,81"', ":1 flomesh.io/outbound-port-exclusion-list", "empty item"),
        ('flomesh.io/outbound-port-exclusion-list=""', ":1 flomesh.io/outbound-port-exclusion-list", "empty item"),
    ],
)
def test_malformed_annotations_name_file_line_and_key(tmp_path, text, source, reason):
    path = write(tmp_path, "annotations", text)
    error = error_of(read_pod_annotations, path)
    assert error.source == path + source and reason in error.reason


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("flomesh.io/outbound-port-exclusion-list", "0", "not a port"),
        ("flomesh.io/inbound-port-exclusion-list", "70000", "not a port"),
        ("flomesh.io/outbound-ip-range-exclusion-list", "foobar", "not an IPv4 CIDR"),
        ("flomesh.io/outbound-ip-range-inclusion-list", "10.0.0.0/8,\\xff", "not an IPv4 CIDR"),
    ],
)
def test_bad_annotation_values_name_the_key(tmp_path, key, value, reason):
    path = write(tmp_path, "annotations", f'{key}="{value}"')
    error = error_of(build_config, read_pod_annotations(path))
    assert error.source == f"{path}:1 {key}" and reason in error.reason


# --- FSM's merge and the precedence between sources ------------------------------------------


def layer_of(option: str, *values: str, source: str = "s") -> dict[str, list[Item]]:
    return {option: [Item(v, source) for v in values]}


def test_fsm_merge_ip_ranges_pod_first_then_global_without_duplicates():
    mesh = layer_of("outbound-ip-range-exclusion-list", "1.1.1.1/32", "2.2.2.0/24", source="mesh")
    pod = layer_of("outbound-ip-range-exclusion-list", "3.3.3.3/32", "1.1.1.1/32", source="pod")
    merged = merge_fsm(mesh, pod)["outbound-ip-range-exclusion-list"]
    assert merged == [Item("3.3.3.3/32", "pod"), Item("1.1.1.1/32", "pod"), Item("2.2.2.0/24", "mesh")]


def test_fsm_merge_ports_global_first_then_pod_without_duplicates():
    mesh = layer_of("outbound-port-exclusion-list", "6060", "8080", source="mesh")
    pod = layer_of("outbound-port-exclusion-list", "6060", "7070", source="pod")
    merged = merge_fsm(mesh, pod)["outbound-port-exclusion-list"]
    assert merged == [Item("6060", "mesh"), Item("8080", "mesh"), Item("7070", "pod")]


def test_fsm_merge_of_the_files(tmp_path):
    mesh = write(tmp_path, "mesh.yaml", MESH_YAML)
    annotations = write(tmp_path, "annotations", ANNOTATIONS)
    config = build_config(gather({}, {"POD_IP": "10.1.2.3"}, Files(mesh_config=mesh, pod_annotations=annotations)))
    assert [str(n) for n in config.outbound_ip_range_exclusions] == ["10.0.0.0/8", "169.254.169.254/32", "10.96.0.0/12"]
    assert config.outbound_port_exclusions == (6379, 7070, 5432)
    assert config.inbound_port_exclusions == (9090, 8080)
    assert config.network_interface_exclusions == ("eth1",)
    assert config.local_proxy_mode == "podip" and str(config.pod_ip) == "10.1.2.3"


def test_one_side_only_merges_to_itself():
    pod = layer_of("inbound-port-exclusion-list", "80", "80", "81")
    assert merge_fsm({}, pod) == {"inbound-port-exclusion-list": [Item("80", "s"), Item("81", "s")]}


def test_overlay_replaces_whole_options_and_keeps_the_rest():
    low = {**layer_of("table", "low"), **layer_of("probe-ports", "1", "2")}
    high = layer_of("probe-ports", "3")
    assert overlay(low, high) == {"table": [Item("low", "s")], "probe-ports": [Item("3", "s")]}
    assert overlay(low, {"probe-ports": []})["probe-ports"] == []


PORTS = "outbound-port-exclusion-list"


@pytest.fixture
def every_source(tmp_path):
    """Each source sets the outbound ports differently; the test removes some of them."""
    mesh = write(tmp_path, "mesh.yaml", "spec:\n  traffic:\n    outboundPortExclusionList: [1]\n")
    pod = write(tmp_path, "annotations", f'flomesh.io/{PORTS}="2"')
    own = write(tmp_path, "nftredir.yaml", f"{PORTS}: [3]\n")
    return {
        "files": Files(config=own, mesh_config=mesh, pod_annotations=pod),
        "environ": {"NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST": "4"},
        "flags": layer_of(PORTS, "5", source="--outbound-port-exclusion-list"),
    }


def ports(flags, environ, files) -> tuple[int, ...]:
    return build_config(gather(flags, environ, files)).outbound_port_exclusions


def test_precedence_flags_over_everything(every_source):
    assert ports(**every_source) == (5,)


def test_precedence_environment_over_files(every_source):
    assert ports({}, every_source["environ"], every_source["files"]) == (4,)


def test_precedence_own_file_over_mesh_and_annotations(every_source):
    assert ports({}, {}, every_source["files"]) == (3,)


def test_precedence_mesh_and_annotations_merge_under_everything(every_source):
    assert ports({}, {}, every_source["files"]._replace(config=None)) == (1, 2)


def test_precedence_defaults_last():
    assert ports({}, {}, Files()) == Config().outbound_port_exclusions == ()


def test_an_explicit_empty_list_clears_the_lower_layers(every_source):
    assert ports({}, {"NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST": ""}, every_source["files"]) == ()


def test_precedence_applies_per_option(tmp_path):
    own = write(tmp_path, "nftredir.yaml", "table: fromfile\nproxy-uid: 7\n")
    config = build_config(gather(layer_of("table", "fromflag"), {"NFTREDIR_PROXY_UID": "8"}, Files(config=own)))
    assert (config.table, config.proxy_uid) == ("fromflag", 8)


def test_file_paths_come_from_flags_then_environment(tmp_path):
    flagged = write(tmp_path, "a.yaml", "table: a\n")
    env = write(tmp_path, "b.yaml", "table: b\n")
    assert build_config(gather({}, {"NFTREDIR_CONFIG": env}, Files())).table == "b"
    assert build_config(gather({}, {"NFTREDIR_CONFIG": env}, Files(config=flagged))).table == "a"


def test_podip_mode_from_meshconfig_needs_pod_ip(tmp_path):
    mesh = write(tmp_path, "mesh.yaml", MESH_YAML)
    error = error_of(build_config, gather({}, {}, Files(mesh_config=mesh)))
    assert error.source == f"{mesh}:8: spec.sidecar.localProxyMode" and "POD_IP" in error.reason
