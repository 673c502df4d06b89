"""The environment as a layer: `NFTREDIR_<OPTION>` for every option, and `POD_IP`.

`<OPTION>` is the option name upper-cased with '-' as '_':
`NFTREDIR_OUTBOUND_PORT_EXCLUSION_LIST=6379,7070`. `POD_IP` (the downward API's usual name)
sets pod-ip unless `NFTREDIR_POD_IP` is set. A variable that is set but empty is an explicit
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
        also = OPTIONS[option].also_env
        if name not in environ and also is not None and also in environ:
            name = also
        if name not in environ:
            continue
        text = environ[name]
        layer[option] = option_items(option, text, name)
    return layer
