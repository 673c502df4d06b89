"""Hostile input in every source: each is refused with a one-line ConfigError naming its source,
or becomes a Config holding only validated values (ints, IPv4 networks and addresses, inert
interface and table names), so nothing a user wrote can reach nft as syntax."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nftredir.cidr import Cidr
from nftredir.config import LOCAL_PROXY_MODES, OPTIONS, Config, Item, build_config
from nftredir.errors import ConfigError
from nftredir.nft_keywords import KEYWORDS
from nftredir.sources import Files, gather
from nftredir.sources.annotations import ANNOTATIONS, go_unquote, read_pod_annotations
from nftredir.sources.config_file import read_config_file
from nftredir.sources.environment import environment_layer, variable
from nftredir.sources.meshconfig import FIELDS, read_mesh_config

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_IFNAME_RE = re.compile(r"[!-~]{1,15}")
HOSTILE = [
    "80\n}", "80;", "10.0.0.0/8 } ; flush ruleset", "eth0\"", "'; rm -rf / #", "$(reboot)", "`id`",
    "a{b}", "\\x00", "\x00", "\u202e", "\udcff", "1" * 1_000_000, "é", "6379 ,\t7070", "+", "eth0+",
    "lo", "a;b", "#c", "@set", "0x50", "-1", "1e3", "80.0", "::1/128", "10.0.0.1/33", "10.0.0.1/8",
    # issue 10: YAML 1.1 number forms, leading zeros, keywords as table names, empty names
    "01500", "1:20", "1_000", "0o17", "0080", "10.0.0.0/08", "ip", "table", "counter", "flush", "", " ",
    "0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255",
    "dual", "ipv4", "fd00::/8", "2001:db8::/129", "fe80::1%eth0/64", "::ffff:10.0.0.0/104", "10.0.0.5,fd00::5",
    "fd00::5, 10.0.0.5", "::/0", "[::1]/128", "podip",
]
# Documents that used to crash or mislead: deep nesting, a byte order mark, number forms.
NUMBER_FORMS = ["01500", "0x50", "1:20", "1_000", "0o17", "1500.0", "+1500", "1e3", ".inf", "0b101", "~", "yes"]
hostile_documents = st.one_of(
    st.builds(lambda key, depth, flow: f"{key}: " + ("[" * depth + "]" * depth if flow else "\n" + "- " * depth + "x"),
              st.sampled_from(["table", "spec", "metadata", "probe-ports"]), st.integers(1, 3000), st.booleans()),
    st.builds(lambda key, number: f"{key}: {number}\n", st.sampled_from(["proxy-uid", "probe-ports", "healthcheck-port", "table"]),
              st.sampled_from(NUMBER_FORMS)),
    st.builds(lambda text: "\ufeff" + text, st.text(max_size=60)),
)
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40), st.text(alphabet="0123456789./,; }{\"'\n", max_size=30))


def assert_validated(config: Config) -> None:
    """The only values a Config can carry."""
    for network in (*config.outbound_ip_range_exclusions, *config.outbound_ip_range_inclusions):
        assert type(network) is Cidr and 0 <= network.network <= network.last < 2**network.bits
        assert 0 <= network.prefixlen <= network.bits and (network.version == 4 or config.ip_family == "dual")
    for port in (*config.outbound_port_exclusions, *config.inbound_port_exclusions, *config.probe_ports,
                 config.proxy_admin_port, config.proxy_outbound_port, config.proxy_inbound_port,
                 config.prometheus_port, config.healthcheck_port):
        assert type(port) is int and 1 <= port <= 65535
    for name in config.network_interface_exclusions:
        assert _IFNAME_RE.fullmatch(name) and not set(name) & set('"\\*/:')  # never empty
    assert config.local_proxy_mode in LOCAL_PROXY_MODES
    assert config.pod_ip is None or type(config.pod_ip) is ipaddress.IPv4Address
    assert config.pod_ip6 is None or (type(config.pod_ip6) is ipaddress.IPv6Address and config.ip_family == "dual")
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", config.table) and config.table not in KEYWORDS
    assert type(config.proxy_uid) is int
    pod_ip = config.pod_ip
    assert pod_ip is None or not (pod_ip.is_loopback or pod_ip.is_multicast or pod_ip.is_unspecified or pod_ip.is_reserved)


def outcome(read, *args) -> None:
    """Read and validate; either a validated Config or one ConfigError line."""
    try:
        config = build_config(read(*args))
    except ConfigError as error:
        assert error.source and "\n" not in str(error) and "\r" not in str(error)
        assert len(str(error)) < 2000
        return
    assert_validated(config)


@FUZZ
@given(st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))
def test_go_unquote_inverts_go_style_quoting(value):
    # json.dumps without ensure_ascii escapes only what Go's strconv.Quote may also escape this way.
    assert go_unquote(json.dumps(value, ensure_ascii=False)) == value


@FUZZ
@given(st.text(max_size=50))
def test_go_unquote_returns_text_or_raises_valueerror(quoted):
    try:
        assert isinstance(go_unquote(quoted), str)
    except ValueError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_annotations_file(tmp_path, data):
    path = tmp_path / "annotations"
    path.write_bytes(data)
    outcome(read_pod_annotations, str(path))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(ANNOTATIONS)), hostile_text, max_size=4))
def test_hostile_annotation_values(tmp_path, annotations):
    path = tmp_path / "annotations"
    path.write_text("\n".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(annotations.items())),
                    errors="surrogateescape")
    outcome(read_pod_annotations, str(path))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SECTIONS = {option.mesh.field: option.mesh.section for option in FIELDS.values()}
mesh_fields = st.dictionaries(st.sampled_from(sorted(SECTIONS)), json_values, max_size=4)


def _mesh(fields: dict) -> dict:
    spec: dict = {}
    for name, value in fields.items():
        spec.setdefault(SECTIONS[name], {})[name] = value
    return {"kind": "MeshConfig", "spec": spec}


@FUZZ
@given(mesh_fields, st.sampled_from(["json", "yaml"]))
def test_hostile_meshconfig_fields(tmp_path, fields, fmt):
    import yaml

    path = tmp_path / f"mesh.{fmt}"
    document = _mesh(fields)
    try:
        text = json.dumps(document) if fmt == "json" else yaml.safe_dump(document, allow_unicode=True)
        path.write_text(text, errors="surrogateescape")
    except (UnicodeEncodeError, yaml.YAMLError):
        return  # not something a file can hold
    outcome(read_mesh_config, str(path))


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | hostile_documents)
def test_any_text_and_deep_numeric_or_bom_documents_in_every_file_source(tmp_path, text):
    path = tmp_path / "file"
    path.write_text(text, errors="surrogateescape")
    outcome(read_mesh_config, str(path))
    outcome(read_config_file, str(path))
    outcome(read_pod_annotations, str(path))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(OPTIONS)) | st.text(max_size=10), json_values, max_size=5))
def test_hostile_config_file(tmp_path, document):
    path = tmp_path / "nftredir.json"
    try:
        path.write_text(json.dumps(document), errors="strict")
    except UnicodeEncodeError:
        return
    outcome(read_config_file, str(path))


@FUZZ
@given(st.dictionaries(st.sampled_from([variable(o) for o in OPTIONS] + ["POD_IP"]), hostile_text, max_size=6))
def test_hostile_environment(environ):
    outcome(environment_layer, environ)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.lists(hostile_text, max_size=3), max_size=5))
def test_hostile_flags(flags):
    from nftredir.sources.flags import flags_layer

    outcome(lambda: gather(flags_layer({k.replace("-", "_"): v for k, v in flags.items()}), {}, Files()))


# Interface names the validator accepts although they hold characters that mean something to
# nft or a shell; the nft text and the JSON batch must give the kernel the very same ruleset.
ODD_IFNAMES = ["a;b", "x}y{", "$(id)", "`id`", "'q'", "#c", "e&f|g", "<>", "s@", "$x", "eth+"]


def test_odd_but_valid_interface_names_reach_the_kernel_only_as_names(netns):
    from nftredir.render import render

    config = build_config({"network-interface-exclusion-list": [Item(n, "t") for n in ODD_IFNAMES]})
    assert config.network_interface_exclusions == tuple(ODD_IFNAMES)
    applied = netns.nftredir("apply", "--network-interface-exclusion-list", ",".join(ODD_IFNAMES))
    assert applied.returncode == 0, applied.stderr
    via_json = netns.list_table()
    netns.nftredir("remove")
    netns.nft("-f", "-", input=render(config, "nft"))
    assert netns.list_table() == via_json
    for name in ODD_IFNAMES:
        assert f'"{name[:-1] + "*" if name.endswith("+") else name}"' in via_json


def test_an_interface_name_starting_with_at_is_refused_it_would_be_a_set_reference_in_json():
    with pytest.raises(ConfigError, match="'@'"):
        build_config({"network-interface-exclusion-list": [Item("@s", "--network-interface-exclusion-list")]})


@pytest.mark.parametrize("source", ["annotation", "meshconfig", "config", "environment", "flag"])
def test_a_megabyte_value_is_refused_in_one_short_line(tmp_path, source):
    big = "1" * 1_000_000
    if source == "annotation":
        (tmp_path / "a").write_text(f'flomesh.io/outbound-port-exclusion-list="{big}"')
        read = lambda: read_pod_annotations(str(tmp_path / "a"))  # noqa: E731
    elif source == "meshconfig":
        (tmp_path / "m.json").write_text(json.dumps({"spec": {"traffic": {"outboundIPRangeExclusionList": [big]}}}))
        read = lambda: read_mesh_config(str(tmp_path / "m.json"))  # noqa: E731
    elif source == "config":
        (tmp_path / "c.yaml").write_text(f"table: {big}\n")
        read = lambda: read_config_file(str(tmp_path / "c.yaml"))  # noqa: E731
    elif source == "environment":
        read = lambda: environment_layer({"NFTREDIR_PROBE_PORTS": big})  # noqa: E731
    else:
        from nftredir.sources.flags import flags_layer

        read = lambda: flags_layer({"healthcheck_port": big})  # noqa: E731
    with pytest.raises(ConfigError) as info:
        build_config(read())
    assert len(str(info.value)) < 300 and "1000000 bytes" in str(info.value)
