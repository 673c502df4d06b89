"""The command-line flags as a layer: each option given, as Items whose source is the flag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nftredir.config import OPTIONS, Item, option_items


def flags_layer(values: Mapping[str, Any]) -> dict[str, list[Item]]:
    """`values` by parameter name (`outbound_port_exclusion_list`): a string, a list of strings
    for a repeatable list option, or None when the flag was not given."""
    layer: dict[str, list[Item]] = {}
    for name in OPTIONS:
        value = values.get(name.replace("-", "_"))
        if value is None:
            continue
        texts = value if isinstance(value, list) else [value]
        layer[name] = [item for text in texts for item in option_items(name, text, f"--{name}")]
    return layer
