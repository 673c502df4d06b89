"""FSM's MeshConfig resource (`kubectl get meshconfig fsm-mesh-config -n fsm-system -o yaml|json`)
as the global layer: the lists FSM's injector takes from `spec.traffic` and `spec.sidecar`.

Only the fields below are read; every other field is ignored. Types are checked as the CRD
declares them (ports are integers, ranges and names are strings), and each item's source is its
field path, e.g. `mesh.yaml:31: spec.traffic.outboundPortExclusionList[3]`.
"""

from __future__ import annotations

from pathlib import Path

from nftredir.config import OPTIONS, Item
from nftredir.sources.documents import Document, expect, expect_resource, list_items, load_document, scalar_item

# The options FSM's MeshConfig holds (nftredir.config.OPTIONS' `mesh`), by option name.
FIELDS = {name: option for name, option in OPTIONS.items() if option.mesh is not None}
def read_mesh_config(path: str | Path) -> dict[str, list[Item]]:
    """The global layer from a MeshConfig file (YAML or JSON)."""
    return mesh_config_layer(load_document(path))


def mesh_config_layer(doc: Document) -> dict[str, list[Item]]:
    root = expect_resource(doc, "MeshConfig", "expected kind MeshConfig (one resource, not a list)")
    spec = root.get("spec")
    if spec is None:
        return {}
    expect(doc, ("spec",), spec, dict)
    layer: dict[str, list[Item]] = {}
    for name, option in FIELDS.items():
        section, field, item_type = option.mesh  # type: ignore[misc]
        block = spec.get(section)
        if block is None:
            continue
        expect(doc, ("spec", section), block, dict)
        values = block.get(field)
        if values is None:
            continue
        field_path = ("spec", section, field)
        if option.is_list:
            expect(doc, field_path, values, list)
            layer[name] = list_items(doc, field_path, values, item_type)
        else:
            layer[name] = [scalar_item(doc, field_path, values, item_type)]
    return layer
