"""Input that used to crash, hang or mean something else (issue 10, items 6-8 and 12-14, 20):
each is one line with exit 2, or a value that means what it means as a flag."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nftredir import cidr, render
from nftredir.config import Item, build_config
from nftredir.errors import ConfigError, SystemRefused
from nftredir.sources import documents
from nftredir.sources.annotations import read_pod_annotations
from nftredir.sources.config_file import read_config_file
from nftredir.sources.meshconfig import read_mesh_config
from lab.netlab import run_nftredir

DEEP = 50_000


def refused(result, *phrases: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("nftredir: error: ") and result.stderr.count("\n") == 1
    for phrase in phrases:
        assert phrase in result.stderr
    return result.stderr


# --- 6. deep nesting -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["flow", "block"])
@pytest.mark.parametrize("flag", ["--config", "--mesh-config", "--pod-annotations"])
def test_a_document_nested_fifty_thousand_deep_is_refused_not_a_crash(tmp_path, flag, shape):
    nested = "[" * DEEP + "]" * DEEP if shape == "flow" else "\n" + "- " * DEEP + "x"
    path = tmp_path / "deep.yaml"
    path.write_text(f"table: {nested}\n" if flag == "--config" else f"kind: MeshConfig\nspec: {nested}\n")
    refused(run_nftredir("render", flag, str(path)), "nested more than 100 levels deep")


def test_a_real_meshconfig_is_not_slowed_by_the_depth_guard(tmp_path):
    """The guard's cheap bound lets a plain 50,000-CIDR file through without a second parse."""
    text = "spec:\n  traffic:\n    outboundIPRangeExclusionList:\n" + "".join(f"    - 10.{i >> 8 & 255}.{i & 255}.0/30\n" for i in range(50_000))
    assert documents._depth_bound(text) <= documents.MAX_DEPTH


# --- 7. size and files that never end ----------------------------------------------------------


def test_a_device_is_not_read(tmp_path):
    refused(run_nftredir("render", "--config", "/dev/zero"), "/dev/zero", "not a regular file")


def test_a_file_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 2000 + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        read_config_file(str(path))


def test_a_pipe_that_never_ends_is_cut_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1 << 16)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer() -> None:
        try:
            with open(fifo, "wb") as out:
                while not stop.is_set():
                    out.write(b"#" * 4096)
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigError, match="larger than"):
            read_config_file(str(fifo))
    finally:
        stop.set()
        thread.join(timeout=60)


# --- 8. empty names ----------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["iptables", "nft", "json"])
def test_an_empty_interface_name_in_meshconfig_is_refused(tmp_path, format):
    path = tmp_path / "mesh.yaml"
    path.write_text('kind: MeshConfig\nspec:\n  traffic:\n    networkInterfaceExclusionList: [""]\n')
    refused(run_nftredir("render", "-f", format, "--mesh-config", str(path)),
            "spec.traffic.networkInterfaceExclusionList[0]", "cannot be empty")


def test_an_empty_interface_name_from_any_source_is_refused():
    with pytest.raises(ConfigError, match="cannot be empty"):
        build_config({"network-interface-exclusion-list": [Item("", "x")]})


# --- 12. numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["01500", "0x50", "1:20", "1_000", "0o17", "1500.0", "+1500"])
def test_a_number_in_nftredir_s_own_file_means_what_it_means_as_a_flag(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(f"proxy-uid: {text}\n")
    as_file = run_nftredir("render", "--config", str(path))
    as_flag = run_nftredir("render", "--proxy-uid", text)
    assert as_file.returncode == as_flag.returncode == 2
    assert f"'{text}': " in as_file.stderr
    assert as_file.stderr.split("': ", 1)[1] == as_flag.stderr.split("': ", 1)[1]  # the same verdict


def test_a_plain_number_in_nftredir_s_own_file_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("proxy-uid: 1337\nprobe-ports: [15901, 15902]\n")
    config = build_config(read_config_file(str(path)))
    assert (config.proxy_uid, config.probe_ports) == (1337, (15901, 15902))


def test_meshconfig_numbers_are_read_as_kubernetes_reads_them(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text("kind: MeshConfig\nspec:\n  traffic:\n    outboundPortExclusionList: [0x50, 1_000, 8080]\n")
    assert build_config(read_mesh_config(str(path))).outbound_port_exclusions == (80, 1000, 8080)
    path.write_text("kind: MeshConfig\nspec:\n  traffic:\n    outboundPortExclusionList: [1:20]\n")
    with pytest.raises(ConfigError, match="base-60"):
        read_mesh_config(str(path))


# --- 13. pod IPs and leading zeros ---------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.2.3", "127.0.0.1", "127.1.2.3", "240.0.0.1"])
def test_an_address_that_cannot_be_a_pod_s_is_refused(address):
    with pytest.raises(ConfigError, match="cannot be a pod's IP"):
        build_config({"local-proxy-mode": [Item("podip", "m")], "pod-ip": [Item(address, "--pod-ip")]})


@pytest.mark.parametrize("option,text", [
    ("outbound-port-exclusion-list", "0080"), ("outbound-port-exclusion-list", "00000080"),
    ("proxy-uid", "01500"), ("outbound-ip-range-exclusion-list", "10.0.0.0/08"),
    ("outbound-ip-range-exclusion-list", "10.0.0.0/032"), ("outbound-ip-range-exclusion-list", "010.0.0.0/8"),
])
def test_leading_zeros_are_refused_in_every_number(option, text):
    with pytest.raises(ConfigError, match="leading zeros"):
        build_config({option: [Item(text, f"--{option}")]})


def test_zero_itself_is_a_number():
    assert build_config({"proxy-uid": [Item("0", "--proxy-uid")]}).proxy_uid == 0
    assert str(cidr.parse("0.0.0.0/0")) == "0.0.0.0/0"


# --- 14. what the kubelet writes -------------------------------------------------------------------


def test_a_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "annotations"
    path.write_bytes(b'\xef\xbb\xbfflomesh.io/outbound-port-exclusion-list="6379"')
    assert build_config(read_pod_annotations(str(path))).outbound_port_exclusions == (6379,)


def test_a_line_that_the_kubelet_cannot_write_says_what_was_expected(tmp_path):
    path = tmp_path / "annotations"
    path.write_text(' flomesh.io/outbound-port-exclusion-list="6379"\n')
    with pytest.raises(ConfigError, match='expected a downward-API annotations file .key="value" lines'):
        read_pod_annotations(str(path))


# --- 20. blind spots -----------------------------------------------------------------------------


def test_a_scalar_option_given_twice_takes_the_last():
    assert build_config({"proxy-uid": [Item("1", "a"), Item("2", "b")]}).proxy_uid == 2


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a\nb", "é"])
def test_the_nft_renderer_refuses_a_string_it_cannot_quote(value):
    with pytest.raises(ValueError, match="cannot be quoted"):
        render._nft_str(value)


def test_merge_keeps_ranges_one_address_apart_apart():
    merged = cidr.merge([cidr.parse("10.0.0.0/32"), cidr.parse("10.0.0.2/32")])
    assert [str(c) for c in merged] == ["10.0.0.0/32", "10.0.0.2/32"]


small_block = st.builds(lambda offset, length: cidr.parse(f"10.0.0.{offset}/{length}"), st.integers(0, 15), st.integers(28, 32))


@settings(max_examples=300, deadline=None)
@given(st.lists(small_block, max_size=12))
def test_merge_covers_exactly_the_same_addresses_in_a_small_block(blocks):
    """Drawn from 16 addresses, so near and adjacent ranges are common."""
    covered = {a for b in blocks for a in range(b.network, b.last + 1)}
    merged = cidr.merge(blocks)
    assert {a for b in merged for a in range(b.network, b.last + 1)} == covered


class _RefusingNft:
    """A libnftables stand-in that fails every command with `error`."""

    def __init__(self, error: str) -> None:
        self.error = error

    def cmd(self, text: str) -> tuple[int, str, str]:
        return 1, "", self.error

    def set_dry_run(self, value: bool) -> None: ...

    def set_json_output(self, value: bool) -> None: ...

    def set_terse_output(self, value: bool) -> None: ...


@pytest.mark.parametrize("error,absent", [("Error: No such file or directory", True),
                                          ("Error: cache initialization failed: Operation not permitted", False),
                                          ("Error: Could not process rule: Device or resource busy", False)])
def test_only_a_missing_table_lists_as_none(error, absent):
    """Both listings list_table may make (the JSON one, and the text one for a held table)."""
    from nftredir.kernel import Kernel

    kernel = Kernel.__new__(Kernel)
    kernel._nft, kernel._trace = _RefusingNft(error), None
    listings = (lambda: kernel.table_text("nftredir"),
                lambda: kernel._listing({"table": {"family": "inet", "name": "nftredir"}}, "table inet nftredir"))
    for listing in listings:
        if absent:
            assert listing() is None
        else:
            with pytest.raises(SystemRefused, match="could not list table inet nftredir"):
                listing()


def test_a_netlink_refusal_reading_the_table_is_one_system_error(monkeypatch):
    from nftredir import netlink_table, ownership
    from nftredir.kernel import Kernel

    def refuse(family, name, timeout=5.0):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(netlink_table, "read_table", refuse)
    kernel = Kernel.__new__(Kernel)
    kernel._nft, kernel._trace = _RefusingNft("Error: No such file or directory"), None
    with pytest.raises(SystemRefused, match="could not read table inet nftredir over netlink: Operation not permitted"):
        kernel.list_table("nftredir")
    assert ownership.is_marked("nftredir") is False  # then the listing decides, and says why
