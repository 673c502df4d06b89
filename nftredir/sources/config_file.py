"""nftredir's own configuration file (`--config FILE`), YAML or JSON.

A mapping from option names (the flag names without '--') to values:

    outbound-port-exclusion-list: [6379, 7070]      # a list...
    outbound-ip-range-exclusion-list: 10.0.0.0/8,169.254.169.254/32   # ...or a comma-separated string
    local-proxy-mode: podip
    table: nftredir

An unknown key, or a value of the wrong type, is a ConfigError naming file, line and key.
An empty list (`[]`, or a key with no value) is an explicit empty list: it replaces the list
from MeshConfig and annotations.
"""

from __future__ import annotations

from pathlib import Path

from nftredir.config import OPTIONS, Item, option_items
from nftredir.errors import ConfigError
from nftredir.sources.documents import Document, Where, expect, load_document, shown


def read_config_file(path: str | Path, only: str | None = None) -> dict[str, list[Item]]:
    """The file's layer; with `only`, just that option, and other keys are not looked at."""
    return config_file_layer(load_document(path, numbers_as_text=True), only)


def _scalar(doc: Document, path: tuple[str | int, ...], value: object, option: str) -> list[Item]:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(doc.where(path), shown(value), "expected a string or an integer")
    return option_items(option, str(value), Where(doc, path))  # spelled out only for a message


def config_file_layer(doc: Document, only: str | None = None) -> dict[str, list[Item]]:
    if doc.data is None:
        return {}  # an empty file
    root = expect(doc, (), doc.data, dict)
    layer: dict[str, list[Item]] = {}
    for key, value in root.items():
        if only is not None and key != only:
            continue
        if not isinstance(key, str) or key not in OPTIONS:
            known = ", ".join(OPTIONS)
            raise ConfigError(doc.at((key if isinstance(key, (str, int)) else str(key),)), shown(key), f"unknown key; the keys are: {known}")
        is_list = OPTIONS[key].is_list
        if is_list and value is None:
            layer[key] = []
        elif is_list and isinstance(value, list):
            layer[key] = [item for i, v in enumerate(value) for item in _scalar(doc, (key, i), v, key)]
        else:
            layer[key] = _scalar(doc, (key,), value, key)
    return layer
