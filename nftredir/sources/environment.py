"""The environment as a layer: `NFTREDIR_<OPTION>` for every option, `POD_IPS` and `POD_IP`.

`<OPTION>` is the option name upper-cased with '-' as '_':
`NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST=6379,7070`. `POD_IPS` (the downward API's
status.podIPs, comma-separated: both addresses of a dual-stack pod) or else `POD_IP` (its usual
name for status.podIP) sets pod-ip unless `NFTREDIR_POD_IP` is set. A variable that is set but empty is an explicit
empty value: for a list, the empty list. Other `NFTREDIR_*` variables are ignored.

The environment is passed in (`os.environ` by the CLI), so tests need not touch the process's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from nftredir.config import OPTIONS, Item, option_items

PREFIX = "NFTREDIR_"


def variable(option: str) -> str:
    """'outbound-port-exclusion-list' -> 'NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST'."""
    return PREFIX + option.upper().replace("-", "_")


class FileVariables(NamedTuple):
    """The variables that name files, for an init container that cannot easily pass flags."""

    config: str = PREFIX + "CONFIG"
    mesh_config: str = PREFIX + "MESH_CONFIG"
    pod_annotations: str = PREFIX + "POD_ANNOTATIONS"


FILE_VARIABLES = FileVariables()


def environment_layer(environ: Mapping[str, str]) -> dict[str, list[Item]]:
    layer: dict[str, list[Item]] = {}
    for option in OPTIONS:
        name = variable(option)
        if name not in environ:  # the downward API's names, in order (POD_IPS, then POD_IP)
            name = next((var for var in OPTIONS[option].also_env if var in environ), name)
        if name not in environ:
            continue
        text = environ[name]
        layer[option] = option_items(option, text, name)
    return layer
