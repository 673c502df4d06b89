"""nftredir as a chained CNI plugin: the CNI contract (SPEC.md, 1.0 and 1.1) and its dispatch.

The runtime executes `nftredir-cni` with the command in CNI_COMMAND and the plugin's network
configuration (its object in the conflist, with cniVersion, name and prevResult) on stdin:

- ADD: decide whether the pod is the mesh's (cni_config's marker, read through cni_kube when a
  kubeconfig is configured), build the Config from the plugin's options merged with the pod's
  annotations as FSM merges MeshConfig with them, enter CNI_NETNS (cni_netns) and apply exactly
  what `nftredir apply` applies: the ownership check, then one transaction. Prints prevResult
  unchanged. ADD runs before any container of the pod starts, so no app runs unredirected.
- DEL: deletes nftredir's table in CNI_NETNS; a namespace or table that is gone is success, and
  a table that is not nftredir's is left alone (logged), so DEL never blocks a pod's teardown.
- CHECK: `nftredir diff`: an error (code 102, the diff in details) when the table differs.
- VERSION; STATUS (1.1: libnftables loads); GC (1.1: nothing to collect, all state lives in the
  pods' namespaces and goes with them).

Every failure is CNI error JSON on stdout ({"cniVersion", "code", "msg", "details"}) and a
non-zero exit: nftredir's own codes (2 invalid input, 3 the system refused, 1 CHECK found a
difference, 4 a bug). Decisions (applied, skipped and why) are logged on stderr and, when the
config names one, in its log-file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from nftredir.errors import EXIT_INTERNAL, EXIT_INVALID, EXIT_SYSTEM, ConfigError, NftredirError
from nftredir.runner import exit_now

if TYPE_CHECKING:
    from nftredir.cni_config import PluginConfig
    from nftredir.config import Config

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# The first version each command exists in; ADD and DEL are in all of them.
COMMAND_SINCE = {"ADD": "0.3.0", "DEL": "0.3.0", "CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}
MAX_STDIN = 64 * 1024 * 1024  # as for nftredir's files: a conflist with 200,000 ranges is ~4 MB

# CNI's well-known error codes (SPEC.md, "Error"); 100 and up are the plugin's own.
INCOMPATIBLE_VERSION, UNKNOWN_CONTAINER, INVALID_ENVIRONMENT = 1, 3, 4
DECODE_FAILURE, INVALID_CONFIG, TRY_AGAIN_LATER, NOT_AVAILABLE = 6, 7, 11, 50
SYSTEM_REFUSED, API_SERVER, TABLE_DIFFERS, INTERNAL = 100, 101, 102, 199
EXIT_DIFFERENT = 1


class CniError(Exception):
    """A failure as the runtime reads it: CNI code, one-line msg, details; and the exit code."""

    def __init__(self, code: int, msg: str, details: str = "", exit_code: int = EXIT_INVALID) -> None:
        super().__init__(msg)
        self.code, self.msg, self.details, self.exit_code = code, msg, details, exit_code


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `K=V;K=V` (K8S_POD_NAMESPACE, K8S_POD_NAME, ...); other keys are kept and ignored."""
    args: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r}: not a KEY=VALUE pair")
        args[key] = value
    return args


def _require(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise CniError(INVALID_ENVIRONMENT, f"{name} is not set: the runtime must pass it for {environ.get('CNI_COMMAND')}")
    return value


def _network_config(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_STDIN:
        raise CniError(DECODE_FAILURE, f"the network configuration on stdin is over {MAX_STDIN} bytes")
    try:
        data = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODE_FAILURE, f"the network configuration on stdin is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not a JSON object")
    return data


def _version(data: Mapping[str, Any]) -> str:
    version = data.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    return version


class Logger:
    """One line per decision on stderr (the runtime shows it) and in the configured log file."""

    def __init__(self, container: str, path: str | None = None) -> None:
        self.container, self.path = container[:12] or "-", path

    def __call__(self, message: str) -> None:
        line = f"nftredir-cni: {self.container}: {message}"
        print(line, file=sys.stderr)
        if self.path:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            try:
                with open(self.path, "a", encoding="utf-8") as log:
                    log.write(f"{stamp} {line}\n")
            except OSError as exc:
                print(f"nftredir-cni: cannot write log-file {self.path}: {exc.strerror}", file=sys.stderr)


def _prev_result_pod_ips(prev: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The pod's addresses from the previous plugin's result: a pod-ip layer for podip mode."""
    from nftredir.config import Item

    found: dict[bool, str] = {}
    for ip in prev.get("ips") or []:
        address = str(ip.get("address", "")).split("/")[0] if isinstance(ip, dict) else ""
        if address:
            found.setdefault(":" in address, address)
    text = ",".join(found[v6] for v6 in (False, True) if v6 in found)
    return {"pod-ip": [Item(text, "prevResult.ips")]} if text else {}


def _pod_layer(plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> dict[str, Any] | None:
    """The pod's annotations as a layer; None when the pod is to be left alone (logged why)."""
    if plugin.kubeconfig is None:
        return {}  # no API server configured: every pod this conflist sees is the mesh's
    from nftredir import cni_kube
    from nftredir.sources.annotations import pod_layer

    args = parse_cni_args(environ.get("CNI_ARGS", ""))
    namespace, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
    if not namespace or not name:
        log("skipped: CNI_ARGS names no Kubernetes pod (K8S_POD_NAMESPACE, K8S_POD_NAME)")
        return None
    try:
        pod = cni_kube.get_pod(cni_kube.read_kubeconfig(plugin.kubeconfig), namespace, name)
    except cni_kube.Unreachable as exc:
        if plugin.on_unreachable == "skip":
            log(f"skipped pod {namespace}/{name}, left unredirected (on-api-unreachable: skip): {exc}")
            return None
        raise CniError(TRY_AGAIN_LATER, str(exc), "on-api-unreachable is fail: the pod is not started",
                       EXIT_SYSTEM) from None
    except cni_kube.ApiError as exc:
        raise CniError(API_SERVER, str(exc), exit_code=EXIT_SYSTEM) from None
    if not plugin.marker.matches(pod.labels, pod.annotations):
        log(f"skipped pod {namespace}/{name}: no {plugin.marker} (not the mesh's)")
        return None
    where = f"pod {namespace}/{name} annotation"
    return pod_layer({key: (value, f"{where} {key}") for key, value in pod.annotations.items()})


def _config(plugin: PluginConfig, pod: Mapping[str, Any], prev: Mapping[str, Any]) -> Config:
    from nftredir.config import build_config
    from nftredir.sources import merge_fsm, overlay

    # The plugin's options are the cluster-wide values, as MeshConfig's are to FSM.
    return build_config(overlay(_prev_result_pod_ips(prev), merge_fsm(plugin.options, dict(pod))))


def _enter(environ: Mapping[str, str]) -> bool:
    """Enter CNI_NETNS; False when it is gone."""
    from nftredir import cni_netns

    path = environ.get("CNI_NETNS", "")
    if not path:
        return False
    try:
        cni_netns.enter(path)
    except cni_netns.NetnsGone:
        return False
    except OSError as exc:
        raise CniError(SYSTEM_REFUSED, f"cannot enter CNI_NETNS {path!r}: {exc.strerror or exc}",
                       exit_code=EXIT_SYSTEM) from None
    return True


def add(data: dict[str, Any], plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> str:
    prev = data.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(INVALID_CONFIG, "no prevResult: nftredir-cni is a chained plugin, listed after the "
                       "plugin that makes the pod's interface")
    _require(environ, "CNI_CONTAINERID")
    netns = _require(environ, "CNI_NETNS")
    pod = _pod_layer(plugin, environ, log)
    if pod is not None:
        from nftredir.ownership import refuse_unless_ours
        from nftredir.render import render
        from nftredir.runner import kernel as door, table_source

        config = _config(plugin, pod, prev)
        if not _enter(environ):
            raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {netns!r} does not exist", exit_code=EXIT_SYSTEM)
        kernel = door(False)
        refuse_unless_ours(kernel, config.table, table_source(config), "replace")
        kernel.send(render(config, "json"))
        log(f"applied table inet {config.table} in {netns}")
    return json.dumps(prev)  # unchanged: the next plugin, or the runtime, reads it


def delete(data: dict[str, Any], plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> str:
    from nftredir.config import build_config
    from nftredir.ownership import refuse_unless_ours
    from nftredir.render import remove_batch
    from nftredir.runner import kernel as door, table_source

    _require(environ, "CNI_CONTAINERID")
    config = build_config({"table": plugin.options["table"]} if "table" in plugin.options else {})
    if not _enter(environ):
        netns = environ.get("CNI_NETNS", "")
        log(f"nothing to delete: CNI_NETNS {netns!r} is gone" if netns else "nothing to delete: no CNI_NETNS (the runtime's namespace is already gone)")
        return ""
    kernel = door(False)
    try:
        refuse_unless_ours(kernel, config.table, table_source(config), "delete")
    except NftredirError as exc:  # never nftredir's to delete, and never a reason to keep a pod
        log(f"left table inet {config.table} alone: {exc}")
        return ""
    kernel.send(remove_batch(config.table))  # an absent table is fine
    log(f"deleted table inet {config.table} (if it was there)")
    return ""


def check(data: dict[str, Any], plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> str:
    netns = _require(environ, "CNI_NETNS")
    _require(environ, "CNI_CONTAINERID")
    pod = _pod_layer(plugin, environ, log)
    if pod is None:
        return ""
    from nftredir.diff import drift
    from nftredir.render import render_batch
    from nftredir.runner import kernel as door

    config = _config(plugin, pod, data.get("prevResult") or {})
    if not _enter(environ):
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {netns!r} does not exist", exit_code=EXIT_SYSTEM)
    result = drift(door(False).list_table(config.table), render_batch(config), config.table)
    if not result.identical:
        raise CniError(TABLE_DIFFERS, f"table inet {config.table} in {netns} is not what ADD applies",
                       result.text(), EXIT_DIFFERENT)
    return ""


def status(data: dict[str, Any], plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> str:
    from nftredir.runner import kernel as door

    try:
        door(False)
    except NftredirError as exc:
        raise CniError(NOT_AVAILABLE, str(exc), exit_code=EXIT_SYSTEM) from None
    return ""


def gc(data: dict[str, Any], plugin: PluginConfig, environ: Mapping[str, str], log: Callable[[str], None]) -> str:
    return ""  # nothing outside the pods' namespaces, which take nftredir's table with them


COMMANDS = {"ADD": add, "DEL": delete, "CHECK": check, "STATUS": status, "GC": gc}


def _version_reply(stdin: bytes) -> str:
    try:
        asked = json.loads(stdin or b"{}").get("cniVersion")
    except (ValueError, UnicodeDecodeError, AttributeError):
        asked = None
    version = asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    return json.dumps({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)})


def _dispatch(environ: Mapping[str, str], stdin: bytes, state: dict[str, Any]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "CNI_COMMAND is not set: this is a CNI plugin, run by a container "
                       "runtime (ADD, DEL, CHECK, VERSION, STATUS, GC)")
    if command == "VERSION":
        return _version_reply(stdin)
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is unknown",
                       "known: ADD, DEL, CHECK, VERSION, STATUS, GC")
    data = _network_config(stdin)
    state["version"] = version = _version(data)
    if _version_key(version) < _version_key(COMMAND_SINCE[command]):
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version} has no {command} "
                       f"(it came with {COMMAND_SINCE[command]})")
    from nftredir.cni_config import plugin_config

    try:
        plugin = plugin_config(data)
    except ConfigError as exc:
        raise CniError(INVALID_CONFIG, str(exc)) from None
    log = Logger(environ.get("CNI_CONTAINERID", ""), plugin.log_file)
    return COMMANDS[command](data, plugin, environ, log)


def run(environ: Mapping[str, str], stdin: bytes) -> tuple[str, int]:
    """One plugin invocation: (what to print on stdout, exit code). Never raises."""
    state: dict[str, Any] = {}
    try:
        return _dispatch(environ, stdin, state), 0
    except CniError as exc:
        error = exc
    except ConfigError as exc:
        error = CniError(INVALID_CONFIG, str(exc))
    except NftredirError as exc:
        error = CniError(SYSTEM_REFUSED, str(exc), exit_code=exc.exit_code)
    except Exception as exc:  # a bug: still an error the runtime can read
        error = CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc} (please report this)",
                         exit_code=EXIT_INTERNAL)
    version = state.get("version", SUPPORTED_VERSIONS[-1])
    reply = {"cniVersion": version, "code": error.code, "msg": error.msg}
    if error.details:
        reply["details"] = error.details
    return json.dumps(reply), error.exit_code


def main() -> None:
    """The `nftredir-cni` entry point the runtime executes."""
    stdin = b""
    # Without CNI_COMMAND this is a person at a terminal, not a runtime: do not wait for stdin.
    if os.environ.get("CNI_COMMAND") and sys.stdin is not None:
        try:
            stdin = sys.stdin.buffer.read(MAX_STDIN + 1)
        except OSError:
            pass
    output, code = run(os.environ, stdin)
    try:
        if output:
            sys.stdout.write(output + "\n")
        sys.stdout.flush()
    except (OSError, AttributeError):
        code = code or EXIT_SYSTEM
    exit_now(code)


if __name__ == "__main__":
    main()
