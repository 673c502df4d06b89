"""`nftredir cni install` and `uninstall`: the node's conflist, edited in place and atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import netlab
from nftredir import cni_install
from nftredir.errors import ConfigError

# As a cluster's network plugin writes it: its own layout, kept until uninstall.
CALICO = """{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "calico", "datastore_type": "kubernetes", "ipam": {"type": "calico-ipam"}},
    {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
"""
KEYS = {"outbound-port-exclusion-list": [6379], "kubeconfig": "/etc/cni/net.d/nftredir-kubeconfig"}


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    (tmp_path / "10-calico.conflist").write_text(CALICO)
    (tmp_path / "10-calico.conflist").chmod(0o600)
    (tmp_path / "99-loopback.conf").write_text('{"cniVersion": "0.3.1", "name": "lo", "type": "loopback"}')
    return tmp_path


def plugins(path: Path) -> list[dict]:
    return json.loads(path.read_text())["plugins"]


def test_install_chains_the_plugin_last_with_its_keys(conf_dir):
    path = cni_install.install(str(conf_dir), KEYS)
    assert path == conf_dir / "10-calico.conflist"
    assert [p["type"] for p in plugins(path)] == ["calico", "portmap", "bandwidth", "nftredir-cni"]
    assert plugins(path)[-1] == {"type": "nftredir-cni", **KEYS}
    assert json.loads(path.read_text())["cniVersion"] == "0.3.1"  # the rest as it was


def test_install_twice_leaves_one_entry_with_the_new_keys(conf_dir):
    cni_install.install(str(conf_dir), KEYS)
    path = cni_install.install(str(conf_dir), {"proxy-uid": "1337"})
    assert [p for p in plugins(path) if p["type"] == "nftredir-cni"] == [{"type": "nftredir-cni", "proxy-uid": "1337"}]


def test_uninstall_restores_the_file_byte_for_byte(conf_dir):
    cni_install.install(str(conf_dir), KEYS)
    cni_install.install(str(conf_dir), KEYS)
    cni_install.uninstall(str(conf_dir))
    assert (conf_dir / "10-calico.conflist").read_text() == CALICO
    assert sorted(p.name for p in conf_dir.iterdir()) == ["10-calico.conflist", "99-loopback.conf"]


def test_uninstall_after_another_installer_rewrote_the_file_removes_only_our_entry(conf_dir):
    path = cni_install.install(str(conf_dir), KEYS)
    data = json.loads(path.read_text())
    data["plugins"].insert(0, {"type": "istio-cni"})
    path.write_text(json.dumps(data))
    cni_install.uninstall(str(conf_dir))
    assert [p["type"] for p in plugins(path)] == ["istio-cni", "calico", "portmap", "bandwidth"]


def test_an_entry_installed_without_a_record_is_removed_not_restored(conf_dir):
    path = cni_install.install(str(conf_dir), KEYS)
    next(conf_dir.glob(".*nftredir-orig")).unlink()  # e.g. the directory was restored from a backup
    cni_install.install(str(conf_dir), KEYS)
    cni_install.uninstall(str(conf_dir))
    assert [p["type"] for p in plugins(path)] == ["calico", "portmap", "bandwidth"]


def test_uninstall_when_not_installed_changes_nothing(conf_dir):
    cni_install.uninstall(str(conf_dir))
    assert (conf_dir / "10-calico.conflist").read_text() == CALICO


def test_writes_keep_the_mode_and_leave_no_temporary_file(conf_dir):
    path = cni_install.install(str(conf_dir), KEYS)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not [p for p in conf_dir.iterdir() if "tmp" in p.name]
    # What stays beside the conflist is never read as a network configuration.
    assert all(p.suffix not in cni_install.CONF_SUFFIXES for p in conf_dir.iterdir() if p.name.startswith("."))


def test_the_conflist_is_the_first_configuration_by_name_or_the_one_named(conf_dir):
    (conf_dir / "05-first.conflist").write_text('{"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "ptp"}]}')
    assert cni_install.install(str(conf_dir), {}) == conf_dir / "05-first.conflist"
    assert cni_install.install(str(conf_dir), {}, "10-calico.conflist") == conf_dir / "10-calico.conflist"


@pytest.mark.parametrize(("content", "message"), [
    ('{"cniVersion": "0.3.1", "name": "lo", "type": "loopback"}', "single-plugin configuration"),
    ("{not json", "not JSON"),
    ('{"plugins": [{"name": "x"}]}', 'not an object with a "type"'),
])
def test_a_file_that_is_not_a_conflist_is_refused_and_left_as_it_was(tmp_path, content, message):
    (tmp_path / "10-net.conflist").write_text(content)
    with pytest.raises(ConfigError, match=message):
        cni_install.install(str(tmp_path), KEYS)
    assert [p.name for p in tmp_path.iterdir()] == ["10-net.conflist"]
    assert (tmp_path / "10-net.conflist").read_text() == content


@pytest.mark.parametrize(("keys", "message"), [
    ({"outbound-port-exclusion-list": [70000]}, "'70000': not a port"),
    ({"proxy-uuid": "1"}, "unknown key"),
    ({"type": "other"}, "a key the runtime sets"),
])
def test_bad_plugin_keys_are_refused_before_anything_is_written(conf_dir, keys, message):
    with pytest.raises(ConfigError, match=message):
        cni_install.install(str(conf_dir), keys)
    assert (conf_dir / "10-calico.conflist").read_text() == CALICO


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no network configuration"):
        cni_install.install(str(tmp_path), {})


def test_the_command_installs_from_a_yaml_file_and_uninstalls(conf_dir, tmp_path):
    keys = tmp_path / "plugin.yaml"
    keys.write_text("outbound-port-exclusion-list: [6379]\nproxy-uid: 1337\n")
    done = netlab.run_nftredir("cni", "install", "--conf-dir", str(conf_dir), "--plugin-config", str(keys))
    assert done.returncode == 0 and "10-calico.conflist" in done.stdout
    # Numbers stay the text they were written as, and are validated as the flags' values are.
    assert plugins(conf_dir / "10-calico.conflist")[-1] == {
        "type": "nftredir-cni", "outbound-port-exclusion-list": ["6379"], "proxy-uid": "1337"}
    done = netlab.run_nftredir("cni", "uninstall", "--conf-dir", str(conf_dir))
    assert done.returncode == 0 and (conf_dir / "10-calico.conflist").read_text() == CALICO


def test_the_command_refuses_bad_input_in_one_line_with_exit_2(conf_dir, tmp_path):
    keys = tmp_path / "plugin.yaml"
    keys.write_text("proxy-uid: 01500\n")
    done = netlab.run_nftredir("cni", "install", "--conf-dir", str(conf_dir), "--plugin-config", str(keys))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "leading zeros" in done.stderr
    done = netlab.run_nftredir("cni", "install", "--conf-dir", str(tmp_path / "none"))
    assert done.returncode == 2 and "cannot be listed" in done.stderr
    assert (conf_dir / "10-calico.conflist").read_text() == CALICO
