"""Where configuration comes from, and how the sources combine into one set of raw items.

Each source is read by its own module into a *layer*: `{option name: [Item, ...]}`, every
Item naming its exact origin. The layers, lowest precedence first:

1. defaults (nftredir.config.Config's fields; not a layer)
2. mesh: FSM's MeshConfig (global) merged with the pod's annotations, exactly as FSM's
   injector merges them (`merge_fsm`)
3. nftredir's own file (`--config`)
4. the environment (`NFTREDIR_<OPTION>`, `POD_IP`)
5. flags

An option given in a higher layer *replaces* that option from every lower layer, lists
included (`overlay`): the only union is FSM's own mesh + pod merge. nftredir.config.build_config
validates the result; nothing here judges a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from nftredir.config import GLOBAL_FIRST, OPTIONS, POD_FIRST, Item, item_texts
from nftredir.sources.environment import FILE_VARIABLES, environment_layer

Layer = dict[str, Sequence[Item]]



class Files(NamedTuple):
    """The files to read; None for a file not given."""

    config: str | None = None
    mesh_config: str | None = None
    pod_annotations: str | None = None


def _dedupe(first: Sequence[Item], then: Sequence[Item]) -> Sequence[Item]:
    """`first` then `then`, repeated values dropped, keeping the first (FSM's merge uses a set
    the same way). A list given on one side only, without repeats, is returned as it is."""
    alone = then if not first else first if not then else None
    if alone is not None and len(set(item_texts(alone))) == len(alone):
        return alone
    seen: set[str] = set()
    return [item for item in (*first, *then) if not (item.text in seen or seen.add(item.text))]


def merge_fsm(mesh: Layer, pod: Layer) -> Layer:
    """FSM's merge of the global (MeshConfig) and pod (annotation) lists, duplicates dropped."""
    merged: Layer = {}
    for option in {**mesh, **pod}:
        order = OPTIONS[option].merge
        if order == POD_FIRST:
            merged[option] = _dedupe(pod.get(option, []), mesh.get(option, []))
        elif order == GLOBAL_FIRST:
            merged[option] = _dedupe(mesh.get(option, []), pod.get(option, []))
        else:  # MeshConfig-only settings: interfaces, localProxyMode
            merged[option] = mesh.get(option, []) if option in mesh else pod[option]
    return merged


def overlay(*layers: Layer) -> Layer:
    """Combine layers, lowest precedence first: an option in a later layer replaces it whole."""
    combined: Layer = {}
    for layer in layers:
        combined.update(layer)
    return combined


def file_paths(given: Files, environ: Mapping[str, str]) -> Files:
    """Each file named by its flag, else by its variable (NFTREDIR_CONFIG, ...)."""
    return Files(*(path or environ.get(var) or None for path, var in zip(given, FILE_VARIABLES)))


def table_layer(flag: str | None, environ: Mapping[str, str], config: str | None = None) -> Layer:
    """Only the table name, by the same precedence as `gather` (flag, NFTREDIR_TABLE, the
    config file's table key): what `remove` needs, so no other source can make it fail."""
    if flag is not None:
        return {"table": [Item(flag, "--table")]}
    environment = environment_layer(environ)
    if "table" in environment:
        return {"table": environment["table"]}
    path = config or environ.get(FILE_VARIABLES.config) or None
    if path:
        from nftredir.sources.config_file import read_config_file

        return read_config_file(path, only="table")
    return {}


def gather(flags: Layer, environ: Mapping[str, str], files: Files = Files()) -> Layer:
    """All sources, read and combined by precedence: flags > environment > --config > mesh."""
    paths = file_paths(files, environ)
    mesh: Layer = {}
    pod: Layer = {}
    own: Layer = {}
    # The file readers are imported only when a file is given: an init container configured by
    # flags and environment alone should not pay for them.
    if paths.mesh_config:
        from nftredir.sources.meshconfig import read_mesh_config

        mesh = read_mesh_config(paths.mesh_config)
    if paths.pod_annotations:
        from nftredir.sources.annotations import read_pod_annotations

        pod = read_pod_annotations(paths.pod_annotations)
    if paths.config:
        from nftredir.sources.config_file import read_config_file

        own = read_config_file(paths.config)
    return overlay(merge_fsm(mesh, pod), own, environment_layer(environ), flags)
