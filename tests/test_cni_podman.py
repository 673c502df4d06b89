"""nftredir-cni run by a real CNI runtime: Debian's podman 4.3 with its CNI backend and Debian's
containernetworking-plugins (bridge, host-local), nftredir-cni chained last by `nftredir cni
install`.

podman itself runs inside a network namespace of the test's own (`nsenter --net`, not `ip netns
exec`, which remounts /sys and breaks runc's cgroups), so the bridge the bridge plugin makes,
and its gateway address, exist only there; the pods' namespaces hang off that bridge. podman's
configuration, storage and state are private, under /var/tmp; the pod's image is one static
`pause` binary compiled here and `podman import`ed. Everything is removed at the end. The one
path outside them is libcni's result cache, /var/lib/cni/results (podman 4.3 has no setting for
it): ADD writes an entry there and DEL removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netlab
from lab.netlab import Listener, Netns, Probe

REPO = Path(__file__).resolve().parent.parent
SUBNET, GATEWAY = "10.89.7.0/24", "10.89.7.1"
NETWORK = "cnnet"  # the conflist's network name; podman uses it with --network
IMAGE = "localhost/nftredir-cni-pause"
APP_UID, EXCLUDED_PORT, WORLD_PORT = 1000, 6379, 8080

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: podman's CNI backend and network namespaces"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)"),
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(),
                       reason="the CNI plugins are not installed (apt-get install containernetworking-plugins)"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the pod's static pause binary"),
]

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void bye(int s) { (void)s; _exit(0); }
int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }
"""


class Runtime:
    """podman, configured privately, run inside the test's namespace."""

    def __init__(self, work: Path, host: Netns) -> None:
        self.work, self.host = work, host
        self.log = work / "cni.log"
        self.env = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(work / "storage.conf")}

    def podman(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["nsenter", f"--net=/run/netns/{self.host.name}", "podman", "--network-backend", "cni", *argv]
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def sandbox(self, container: str) -> str:
        """The path of the pod's network namespace (podman keeps it under /run/netns)."""
        return self.podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container).stdout.strip()

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def _write_config(work: Path) -> None:
    for sub in ("net.d", "bin", "tmp", "storage", "run", "ipam"):
        (work / sub).mkdir()
    (work / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{work}/events.log"
tmp_dir = "{work}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{work}/bin", "/usr/lib/cni"]
network_config_dir = "{work}/net.d"
""")
    (work / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/storage"\nrunroot = "{work}/run"\n')
    # The node's conflist as a cluster's network plugin would leave it: no masquerade, so
    # nothing but the bridge and its routes is made in the test's namespace.
    bridge = {"type": "bridge", "bridge": "cnbr0", "isGateway": True, "ipMasq": False,
              "ipam": {"type": "host-local", "dataDir": str(work / "ipam"), "routes": [{"dst": "0.0.0.0/0"}],
                       "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]]}}
    (work / "net.d" / "10-cnnet.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [bridge]}, indent=2))
    # The binary the runtime executes, as `type` names it: this tree's plugin.
    plugin = work / "bin" / "nftredir-cni"
    plugin.write_text(f"#!/bin/sh\ncd {REPO} && exec {netlab.PYTHON} -c 'from nftredir.cni import main; main()'\n")
    plugin.chmod(0o755)


def _build_image(runtime: Runtime) -> None:
    work = runtime.work
    (work / "pause.c").write_text(PAUSE_C)
    (work / "rootfs").mkdir()
    subprocess.run(["cc", "-static", "-O2", "-o", str(work / "rootfs" / "pause"), str(work / "pause.c")],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["tar", "-C", str(work / "rootfs"), "-cf", str(work / "pause.tar"), "."], check=True, timeout=60)
    runtime.podman("import", "--change", 'CMD ["/pause"]', str(work / "pause.tar"), IMAGE)


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    work = Path(f"/var/tmp/{netlab.unique_name('podman')}")
    work.mkdir(mode=0o700)
    try:
        with netlab.netns(netlab.unique_name("podhost")) as host:
            runtime = Runtime(work, host)
            _write_config(work)
            plugin_keys = work / "plugin.json"
            plugin_keys.write_text(json.dumps({"outbound-port-exclusion-list": [EXCLUDED_PORT], "log-file": str(runtime.log)}))
            done = netlab.run_nftredir("cni", "install", "--conf-dir", str(work / "net.d"), "--plugin-config", str(plugin_keys))
            assert done.returncode == 0, done.stderr
            try:
                _build_image(runtime)
                yield runtime
            finally:
                runtime.podman("rm", "--all", "--force", check=False)
                runtime.podman("rmi", "--all", "--force", check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def pod(runtime: Runtime, request: pytest.FixtureRequest) -> Iterator[str]:
    """A container created (not started) on the conflist's network; removed at the end."""
    name = netlab.unique_name("pod")
    runtime.podman("create", "--name", name, "--network", NETWORK, IMAGE)
    try:
        yield name
    finally:
        runtime.podman("rm", "--force", name, check=False)


def _nft(netns_path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns_path}", "nft", *argv], capture_output=True, text=True, timeout=60)


def test_the_conflist_chains_nftredir_last(runtime):
    conflist = json.loads((runtime.work / "net.d" / "10-cnnet.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "nftredir-cni"]
    assert "cnnet" in runtime.podman("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_the_runtime_adds_the_table_before_any_container_process_runs(runtime, pod):
    runtime.podman("init", pod)  # the sandbox and its network: CNI ADD; the container is not started
    assert runtime.podman("inspect", "--format", "{{.State.Status}}", pod).stdout.strip() == "initialized"
    sandbox = runtime.sandbox(pod)
    listing = _nft(sandbox, "list", "table", "inet", "nftredir")
    assert listing.returncode == 0, listing.stderr
    assert "counter managed_by_nftredir" in listing.stdout  # apply's ownership mark
    assert f"elements = {{ {EXCLUDED_PORT} }}" in listing.stdout  # the plugin's own keys
    assert any("applied table inet nftredir" in line and sandbox in line for line in runtime.log_lines())
    # The ruleset is exactly what `nftredir apply` makes with the same options.
    with netlab.netns(netlab.unique_name("apply")) as ns:
        assert ns.nftredir("apply", "--outbound-port-exclusion-list", str(EXCLUDED_PORT)).returncode == 0
        assert _nft(sandbox, "-s", "list", "table", "inet", "nftredir").stdout == ns.list_table()


def test_a_pods_traffic_is_redirected_to_the_sidecar(runtime, pod):
    runtime.podman("start", pod)
    sandbox = Netns(os.path.basename(runtime.sandbox(pod)))
    assert f"/run/netns/{sandbox.name}" == runtime.sandbox(pod)
    world = [Listener(f"world:{port}", port) for port in (WORLD_PORT, EXCLUDED_PORT)]
    with netlab.serve(runtime.host, world), netlab.serve(sandbox, [Listener("sidecar", netlab.OUTBOUND_PORT)]):
        app = netlab.probe_many(sandbox, [Probe(GATEWAY, WORLD_PORT), Probe(GATEWAY, EXCLUDED_PORT)], uid=APP_UID)
        proxy = netlab.probe(sandbox, GATEWAY, WORLD_PORT, uid=netlab.SIDECAR_UID)
    assert (app[0].listener, app[0].orig_dst) == ("sidecar", f"{GATEWAY}:{WORLD_PORT}")
    assert app[1].listener == f"world:{EXCLUDED_PORT}"  # the plugin's port exclusion
    assert proxy.listener == f"world:{WORLD_PORT}"  # the sidecar's own traffic goes out


def test_removing_the_pod_deletes_the_table(runtime, pod):
    runtime.podman("init", pod)
    sandbox = runtime.sandbox(pod)
    # A process of the test's holds the pod's namespace, so what DEL did can be seen after rm.
    holder = subprocess.Popen(["nsenter", f"--net={sandbox}", "sh", "-c", "echo in; exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "in\n"  # past setns: /proc/PID/ns/net is the pod's
        held = f"/proc/{holder.pid}/ns/net"
        assert _nft(held, "list", "table", "inet", "nftredir").returncode == 0
        runtime.podman("rm", "--force", pod)
        assert not os.path.exists(sandbox)
        assert "table inet nftredir" not in _nft(held, "list", "tables").stdout
        assert any("deleted table inet nftredir" in line for line in runtime.log_lines())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        holder.stdout.close()
