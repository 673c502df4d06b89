"""The plugin's one API call, against a small HTTPS API server of the test's own (stdlib,
certificates from openssl), listening on 127.0.0.1 inside a network namespace of the test's.

cni_kube is called in-process from a thread that entered that namespace; the plugin runs there
as a runtime would run it, for a pod namespace of its own.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lab import netlab
from nftredir import cni, cni_kube, cni_netns
from nftredir.errors import ConfigError
from tests.test_cni import PREV_RESULT, cni_error, network_config, run_plugin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the API server listens in a namespace")

TOKEN = "sekret-token"
PODS = {
    ("mesh", "web-0"): {"labels": {"app": "web", "fsm-proxy-uuid": "9c7b"},
                        "annotations": {"flomesh.io/outbound-port-exclusion-list": "7070, 6379",
                                        "flomesh.io/outbound-ip-range-exclusion-list": "10.1.0.0/16",
                                        "flomesh.io/inject": "true"}},
    ("mesh", "plain"): {"labels": {"app": "plain"}, "annotations": {}},
    ("mesh", "linkerd"): {"labels": {}, "annotations": {"flomesh.io/inject": "true"}},
    ("mesh", "bad"): {"labels": {"fsm-proxy-uuid": "1"}, "annotations": {"flomesh.io/inbound-port-exclusion-list": "80,,81"}},
}


def _openssl(*argv: str, cwd: Path) -> None:
    subprocess.run(["openssl", *argv], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


def _signed(directory: Path, name: str, ca: str, extension: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(extension)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(directory, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return directory


def in_netns(path: str, call: Callable[[], Any]) -> Any:
    """`call()` in a thread that entered the namespace at `path`; the test's own thread stays."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            cni_netns.enter(path)
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        peer_cert = self.connection.getpeercert()
        if not peer_cert and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"kind": "Status", "message": "Unauthorized"})
        parts = self.path.split("/")
        if len(parts) == 7 and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "pods":
            pod = PODS.get((parts[4], parts[6]))
            if pod is not None:
                return self._reply(200, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": parts[6], **pod}})
        return self._reply(404, {"kind": "Status", "message": f'pods "{parts[-1]}" not found'})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api(certs: Path) -> Iterator[tuple[netlab.Netns, str]]:
    """(the namespace the API server listens in, its URL)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    context.load_verify_locations(certs / "ca.crt")
    context.verify_mode = ssl.CERT_OPTIONAL
    with netlab.netns(netlab.unique_name("api")) as ns:
        server = in_netns(f"/run/netns/{ns.name}", lambda: ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield ns, f"https://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(directory: Path, server: str, cluster: dict[str, Any] | None = None,
                     user: dict[str, Any] | None = None) -> Path:
    """A kubeconfig with one context; the cluster and user default to certificate data."""
    path = directory / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "contexts": [{"name": "other", "context": {"cluster": "none", "user": "none"}},
                     {"name": "node", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
    }))
    return path


def data_kubeconfig(directory: Path, certs: Path, server: str) -> Path:
    return write_kubeconfig(directory, server, {"certificate-authority-data": _b64(certs / "ca.crt")},
                            {"client-certificate-data": _b64(certs / "client.crt"),
                             "client-key-data": _b64(certs / "client.key")})


def get(api: tuple[netlab.Netns, str], kubeconfig: Path, namespace: str = "mesh", name: str = "web-0") -> cni_kube.Pod:
    ns, _ = api
    return in_netns(f"/run/netns/{ns.name}",
                    lambda: cni_kube.get_pod(cni_kube.read_kubeconfig(str(kubeconfig)), namespace, name))


# ----------------------------------------------------------------------------- the client


def test_reads_the_pod_with_the_kubeconfigs_certificate_data(api, certs, tmp_path):
    pod = get(api, data_kubeconfig(tmp_path, certs, api[1]))
    assert pod.labels == PODS["mesh", "web-0"]["labels"]
    assert pod.annotations == PODS["mesh", "web-0"]["annotations"]


def test_reads_files_relative_to_the_kubeconfig_and_a_token_file(api, certs, tmp_path):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes((certs / "ca.crt").read_bytes())
    (tmp_path / "token").write_text(TOKEN + "\n")
    kubeconfig = write_kubeconfig(tmp_path, api[1], {"certificate-authority": "pki/ca.crt"}, {"tokenFile": "token"})
    assert get(api, kubeconfig).labels["app"] == "web"


def test_client_certificate_files_work_too(api, certs, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path, api[1], {"certificate-authority": str(certs / "ca.crt")},
                                  {"client-certificate": str(certs / "client.crt"), "client-key": str(certs / "client.key")})
    assert get(api, kubeconfig).name == "web-0"


def test_without_credentials_the_servers_refusal_is_an_api_error(api, certs, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path, api[1], {"certificate-authority": str(certs / "ca.crt")})
    with pytest.raises(cni_kube.ApiError, match="answered 401 .*Unauthorized"):
        get(api, kubeconfig)


def test_an_unknown_pod_is_an_api_error_with_the_servers_message(api, certs, tmp_path):
    with pytest.raises(cni_kube.ApiError, match='answered 404 for pod mesh/gone: pods "gone" not found'):
        get(api, data_kubeconfig(tmp_path, certs, api[1]), name="gone")


def test_a_server_certificate_of_another_ca_is_a_tls_error_not_unreachable(api, certs, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path, api[1], {"certificate-authority": str(certs / "other-ca.crt")},
                                  {"token": TOKEN})
    with pytest.raises(cni_kube.ApiError, match="TLS failed: CERTIFICATE_VERIFY_FAILED"):
        get(api, kubeconfig)


def test_insecure_skip_tls_verify_skips_verification(api, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path, api[1], {"insecure-skip-tls-verify": True}, {"token": TOKEN})
    assert get(api, kubeconfig).name == "web-0"


def test_a_closed_port_is_unreachable(api, certs, tmp_path):
    kubeconfig = data_kubeconfig(tmp_path, certs, "https://127.0.0.1:1")
    with pytest.raises(cni_kube.Unreachable, match="cannot be reached"):
        get(api, kubeconfig)


@pytest.mark.parametrize(("change", "message"), [
    ({"current-context": "missing"}, "contexts has no entry of that name"),
    ({"current-context": None}, "expected a string"),
    ({"clusters": [{"name": "c", "cluster": {"server": "127.0.0.1:6443"}}]}, "expected the API server's https:// URL"),
    ({"users": [{"name": "u", "user": {"client-certificate-data": "%%%", "client-key-data": "eA=="}}]}, "not base64"),
])
def test_a_broken_kubeconfig_is_a_config_error_naming_the_field(tmp_path, change, message):
    path = write_kubeconfig(tmp_path, "https://127.0.0.1:6443")
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ConfigError, match=message) as caught:
        cni_kube.read_kubeconfig(str(path))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("namespace", "name"), [("mesh", "../../secrets"), ("Mesh", "web"), ("mesh", "web?x=1"), ("", "web")])
def test_pod_references_that_kubernetes_would_not_allow_are_refused(namespace, name):
    with pytest.raises(ConfigError):
        cni_kube.check_pod_ref(namespace, name)


# ----------------------------------------------------------------------------- the plugin


@pytest.fixture
def plugin(api, certs, tmp_path, netns):
    """Run the plugin for the pod namespace `netns`, in the API server's namespace."""
    kubeconfig = data_kubeconfig(tmp_path, certs, api[1])

    def run(command: str, pod: str = "web-0", **keys: Any):
        config = network_config(kubeconfig=str(kubeconfig), **keys)
        cni_args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=mesh;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=c0ffee"
        return run_plugin(command, config, netns, inside=api[0], CNI_ARGS=cni_args)

    return run


def test_an_injected_pods_annotations_merge_with_the_plugins_keys_as_fsm_merges_them(plugin, netns):
    done = plugin("ADD", **{"outbound-port-exclusion-list": [6379, 5432],
                            "outbound-ip-range-exclusion-list": ["169.254.169.254/32"]})
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout) == PREV_RESULT
    with netlab.netns(netlab.unique_name("apply")) as other:
        # FSM: ports global first, then the pod's; IP ranges the pod's first; duplicates dropped.
        applied = other.nftredir("apply", "--outbound-port-exclusion-list", "6379,5432,7070",
                                 "--outbound-ip-range-exclusion-list", "10.1.0.0/16,169.254.169.254/32")
        assert applied.returncode == 0
        assert netns.list_table() == other.list_table()
    assert plugin("CHECK", **{"outbound-port-exclusion-list": [6379, 5432],
                              "outbound-ip-range-exclusion-list": ["169.254.169.254/32"]}).returncode == 0


def test_a_pod_without_the_injection_marker_is_skipped(plugin, netns):
    done = plugin("ADD", pod="plain")
    assert done.returncode == 0 and json.loads(done.stdout) == PREV_RESULT
    assert "skipped pod mesh/plain: no label fsm-proxy-uuid" in done.stderr
    assert netns.nft("list", "tables").stdout == ""


def test_the_injection_marker_is_configurable(plugin, netns):
    marker = {"annotation": "flomesh.io/inject", "value": "true"}
    assert plugin("ADD", pod="linkerd", **{"injection-marker": marker}).returncode == 0
    assert "table inet nftredir" in netns.nft("list", "tables").stdout
    done = plugin("ADD", pod="plain", **{"injection-marker": marker})
    assert "skipped" in done.stderr


def test_a_bad_annotation_is_error_7_naming_the_pod_and_key(plugin, netns):
    error = cni_error(plugin("ADD", pod="bad"))
    assert error["code"] == cni.INVALID_CONFIG
    assert "pod mesh/bad annotation flomesh.io/inbound-port-exclusion-list" in error["msg"]
    assert netns.nft("list", "tables").stdout == ""


def test_an_unknown_pod_is_error_101(plugin):
    done = plugin("ADD", pod="gone")
    assert cni_error(done)["code"] == cni.API_SERVER and done.returncode == 3


def test_an_unreachable_api_server_fails_the_pod_unless_the_config_says_skip(certs, tmp_path, netns, api):
    kubeconfig = data_kubeconfig(tmp_path, certs, "https://127.0.0.1:1")
    cni_args = "K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=web-0"
    done = run_plugin("ADD", network_config(kubeconfig=str(kubeconfig)), netns, inside=api[0], CNI_ARGS=cni_args)
    assert cni_error(done)["code"] == cni.TRY_AGAIN_LATER and done.returncode == 3
    log = tmp_path / "cni.log"
    config = network_config(kubeconfig=str(kubeconfig), **{"on-api-unreachable": "skip", "log-file": str(log)})
    done = run_plugin("ADD", config, netns, inside=api[0], CNI_ARGS=cni_args)
    assert done.returncode == 0 and json.loads(done.stdout) == PREV_RESULT
    assert "skipped pod mesh/web-0, left unredirected (on-api-unreachable: skip)" in log.read_text()
    assert netns.nft("list", "tables").stdout == ""
