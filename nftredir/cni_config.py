"""The plugin's configuration: its object in the conflist, as the runtime passes it on stdin.

Two kinds of keys sit side by side in that object:
- nftredir's options, named exactly as in `--config` (nftredir.config.OPTIONS, read by
  nftredir.sources.config_file): the cluster-wide values, merged with each pod's annotations as
  FSM merges MeshConfig with them;
- the plugin's own keys (PLUGIN_KEYS): where the API server is, which pods are the mesh's, what
  to do when the API server cannot be reached, where to log.

The CNI spec's keys (cniVersion, name, type, prevResult, runtimeConfig, ...) are the runtime's.
Any other key is refused, naming it: a typo in a conflist would otherwise silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nftredir.config import OPTIONS, Item
from nftredir.errors import ConfigError
from nftredir.sources.config_file import config_file_layer
from nftredir.sources.documents import Document

# Keys the CNI spec gives the runtime or every plugin (SPEC.md, "Network configuration").
SPEC_KEYS = frozenset({"cniVersion", "name", "type", "args", "capabilities", "runtimeConfig", "prevResult",
                       "ipMasq", "ipam", "dns"})
ON_UNREACHABLE = ("fail", "skip")
PLUGIN_KEYS = {
    "kubeconfig": "path of a kubeconfig for the API server: per-pod annotations and the injection marker",
    "injection-marker": 'the mark of a mesh pod: {"label": NAME} or {"annotation": NAME}, with an optional '
                        '"value"; default {"label": "fsm-proxy-uuid"}, FSM\'s',
    "on-api-unreachable": "fail (the default: the pod is not started) or skip (the pod is left unredirected, "
                          "and the log says why)",
    "log-file": "a file each decision is appended to, besides standard error",
}
SOURCE = "the plugin's network configuration (stdin)"


@dataclass(frozen=True)
class Marker:
    """A pod is the mesh's when it has this label (or annotation), with `value` if one is given."""

    kind: str  # "label" or "annotation"
    name: str
    value: str | None = None

    def matches(self, labels: Mapping[str, str], annotations: Mapping[str, str]) -> bool:
        found = (labels if self.kind == "label" else annotations).get(self.name)
        return found is not None and (self.value is None or found == self.value)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f"={self.value}" if self.value is not None else "")


# FSM's injector labels every pod it injects with its proxy's UUID.
FSM_MARKER = Marker("label", "fsm-proxy-uuid")


@dataclass(frozen=True)
class PluginConfig:
    """The plugin object, read: its options as a layer, and its own keys."""

    options: dict[str, list[Item]]
    kubeconfig: str | None = None
    marker: Marker = FSM_MARKER
    on_unreachable: str = "fail"
    log_file: str | None = None


def _string(data: Mapping[str, Any], key: str, source: str = SOURCE) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{source}: {key}", value, "expected a non-empty string")
    return value


def _marker(value: Any, source: str) -> Marker:
    where = f"{source}: injection-marker"
    if not isinstance(value, dict):
        raise ConfigError(where, value, 'expected {"label": NAME} or {"annotation": NAME}')
    kinds = [kind for kind in ("label", "annotation") if kind in value]
    unknown = set(value) - {"label", "annotation", "value"}
    if len(kinds) != 1 or unknown:
        raise ConfigError(where, value, 'expected exactly one of "label" and "annotation", and optionally "value"')
    return Marker(kinds[0], _string(value, kinds[0], where) or "", _string(value, "value", where))


def plugin_config(data: Mapping[str, Any], source: str = SOURCE) -> PluginConfig:
    """Validate the plugin object's keys (not its option values: build_config does that);
    `source` names where they were read, for messages."""
    unknown = [key for key in data if key not in SPEC_KEYS and key not in PLUGIN_KEYS and key not in OPTIONS]
    if unknown:
        known = ", ".join([*PLUGIN_KEYS, *OPTIONS])
        raise ConfigError(f"{source}: {unknown[0]}", unknown[0], f"unknown key; nftredir's keys are: {known}")
    on_unreachable = _string(data, "on-api-unreachable", source) or "fail"
    if on_unreachable not in ON_UNREACHABLE:
        raise ConfigError(f"{source}: on-api-unreachable", on_unreachable, "must be 'fail' or 'skip'")
    options = {key: value for key, value in data.items() if key in OPTIONS}
    return PluginConfig(
        options=config_file_layer(Document(source, options)),
        kubeconfig=_string(data, "kubeconfig", source),
        marker=_marker(data["injection-marker"], source) if "injection-marker" in data else FSM_MARKER,
        on_unreachable=on_unreachable,
        log_file=_string(data, "log-file", source),
    )
