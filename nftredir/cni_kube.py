"""The one read the plugin makes from the Kubernetes API server: the pod's labels and annotations.

Standard library only (http.client, ssl): a kubeconfig's current context gives the server, its
CA (file or -data), the client's certificate and key (file or -data) or a bearer token (token or
tokenFile). Certificates given as data are handed to ssl through memfd files, never written to
disk. Relative paths are relative to the kubeconfig's directory, as kubectl reads them.

Failures come in two kinds, because the plugin config decides what the first one means:
Unreachable (no connection: refused, timed out, no route, no such host) and everything else
(a bad kubeconfig, a certificate that does not verify, a status other than 200), which is an
error whatever the config says.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nftredir.errors import ConfigError, SystemRefused
from nftredir.sources.documents import Document, expect, load_document, read_text

API_TIMEOUT = 10.0  # seconds per connect and per read: a hang guard, not a measurement
_MAX_BODY = 16 * 1024 * 1024  # a Pod object is far smaller (etcd's limit is ~1.5 MB)
# Kubernetes' own rules: a namespace is a DNS label, a pod name a DNS subdomain.
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class Unreachable(Exception):
    """No connection to the API server could be made (the message says why)."""


class ApiError(SystemRefused):
    """The API server answered, but not with the pod (a status, a TLS failure)."""


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class Cluster:
    """What the kubeconfig's current context says about reaching the API server."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    cert: tuple[str, str] | None = None  # (certificate, key): paths or PEM text (-data)
    cert_is_data: bool = False
    token: str | None = None


def _named(doc: Document, key: str, name: Any, entry: str) -> tuple[tuple[str | int, ...], dict[str, Any]]:
    """The `entry` mapping of the item called `name` in the kubeconfig's `key` list."""
    items = expect(doc, (key,), doc.data.get(key) or [], list)
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == name:
            return (key, index, entry), expect(doc, (key, index, entry), item.get(entry) or {}, dict)
    raise ConfigError(doc.source((key,)), name, f"the current context names it, and {key} has no entry of that name")


def _text(doc: Document, path: tuple[str | int, ...], data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else expect(doc, (*path, key), value, str)


def _pem(doc: Document, path: tuple[str | int, ...], data: Mapping[str, Any], key: str) -> str | None:
    """A `...-data` field: base64 of PEM text."""
    value = _text(doc, path, data, key)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(doc.source((*path, key)), value, "not base64 of PEM text") from None


def read_kubeconfig(path: str) -> Cluster:
    """The current context's cluster and user; a ConfigError names what is wrong and where."""
    doc = load_document(path)
    root = expect(doc, (), doc.data, dict)
    current = expect(doc, ("current-context",), root.get("current-context"), str)
    _, context = _named(doc, "contexts", current, "context")
    cluster_path, cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
    user_path, user = _named(doc, "users", context.get("user"), "user") if context.get("user") else ((), {})
    base = Path(path).parent

    def file(where: tuple[str | int, ...], data: Mapping[str, Any], key: str) -> str | None:
        value = _text(doc, where, data, key)
        return None if value is None else str(base / value)

    server = _text(doc, cluster_path, cluster, "server")
    if not server or urllib.parse.urlsplit(server).scheme not in ("https", "http") or not urllib.parse.urlsplit(server).hostname:
        raise ConfigError(doc.source((*cluster_path, "server")), server, "expected the API server's https:// URL")
    cert_data, key_data = _pem(doc, user_path, user, "client-certificate-data"), _pem(doc, user_path, user, "client-key-data")
    cert_file, key_file = file(user_path, user, "client-certificate"), file(user_path, user, "client-key")
    token = _text(doc, user_path, user, "token")
    token_file = file(user_path, user, "tokenFile")
    if token is None and token_file is not None:
        token = read_text(token_file).strip()
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise ConfigError(doc.source((*cluster_path, "insecure-skip-tls-verify")), insecure, "expected true or false")
    cert = (cert_data, key_data) if cert_data and key_data else (cert_file, key_file) if cert_file and key_file else None
    return Cluster(
        server=server, ca_file=file(cluster_path, cluster, "certificate-authority"),
        ca_data=_pem(doc, cluster_path, cluster, "certificate-authority-data"), insecure=insecure,
        cert=cert, cert_is_data=bool(cert_data and key_data), token=token,
    )


def _memfd(text: str) -> str:
    """A path ssl can open that holds `text` and lives as long as this process (no disk file)."""
    fd = os.memfd_create("nftredir-cni-pem")
    os.write(fd, text.encode())
    return f"/proc/self/fd/{fd}"


def _tls_context(cluster: Cluster) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cluster.ca_file, cadata=cluster.ca_data)
    if cluster.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cluster.cert:
        cert, key = (_memfd(part) for part in cluster.cert) if cluster.cert_is_data else cluster.cert
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ApiError(f"the kubeconfig's client certificate or key cannot be loaded: {exc}") from None
    return context


def check_pod_ref(namespace: str, name: str) -> None:
    """K8S_POD_NAMESPACE and K8S_POD_NAME as Kubernetes allows them (they go into a URL path)."""
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError("CNI_ARGS K8S_POD_NAMESPACE", namespace, "not a Kubernetes namespace name")
    if not _POD_NAME_RE.fullmatch(name):
        raise ConfigError("CNI_ARGS K8S_POD_NAME", name, "not a Kubernetes pod name")


def get_pod(cluster: Cluster, namespace: str, name: str) -> Pod:
    """GET /api/v1/namespaces/NAMESPACE/pods/NAME: the pod's labels and annotations."""
    check_pod_ref(namespace, name)
    url = urllib.parse.urlsplit(cluster.server)
    path = f"{url.path.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{name}"
    headers = {"Accept": "application/json", "User-Agent": "nftredir-cni"}
    if cluster.token:
        headers["Authorization"] = f"Bearer {cluster.token}"
    if url.scheme == "https":
        context = _tls_context(cluster)
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            url.hostname, url.port, timeout=API_TIMEOUT, context=context)
    else:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=API_TIMEOUT)
    where = f"the API server {cluster.server}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read(_MAX_BODY + 1)
    except ssl.SSLError as exc:
        raise ApiError(f"{where}: TLS failed: {exc.reason or exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"{where} cannot be reached: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise ApiError(f"{where} answered {response.status} for pod {namespace}/{name}: {_status_message(body)}")
    try:
        if len(body) > _MAX_BODY:
            raise ValueError("too large")
        metadata = json.loads(body).get("metadata") or {}
        labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
        if not all(isinstance(v, str) for v in (*labels.values(), *annotations.values())):
            raise ValueError("a label or annotation is not a string")
    except (ValueError, AttributeError) as exc:
        raise ApiError(f"{where} sent pod {namespace}/{name} as something other than a Pod object: {exc}") from None
    return Pod(namespace, name, labels, annotations)


def _status_message(body: bytes) -> str:
    """The message of a Kubernetes Status object, else the body's start."""
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip() or "(no body)"
