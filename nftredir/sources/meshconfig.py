"""FSM's MeshConfig resource (`kubectl get meshconfig fsm-mesh-config -n fsm-system -o yaml|json`)
as the global layer: the lists FSM's injector takes from `spec.traffic` and `spec.sidecar`.

Only the fields below are read; every other field is ignored. Types are checked as the CRD
declares them (ports are integers, ranges and names are strings), and each item's source is its
field path, e.g. `mesh.yaml:31: spec.traffic.outboundPortExclusionList[3]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nftredir.config import Item
from nftredir.errors import ConfigError
from nftredir.sources.documents import Document, Path_, Where, load_document, shown

# MeshConfig field (under spec) -> (nftredir option name, item type)
FIELDS: dict[tuple[str, str], tuple[str, type]] = {
    ("traffic", "outboundIPRangeExclusionList"): ("outbound-ip-range-exclusion-list", str),
    ("traffic", "outboundIPRangeInclusionList"): ("outbound-ip-range-inclusion-list", str),
    ("traffic", "outboundPortExclusionList"): ("outbound-port-exclusion-list", int),
    ("traffic", "inboundPortExclusionList"): ("inbound-port-exclusion-list", int),
    ("traffic", "networkInterfaceExclusionList"): ("network-interface-exclusion-list", str),
}
LOCAL_PROXY_MODE = ("sidecar", "localProxyMode")
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def expect(doc: Document, path: Path_, value: Any, kind: type) -> Any:
    """`value` if it is of `kind`, else a ConfigError naming the field path."""
    if not _is(value, kind):
        raise ConfigError(doc.where(path), shown(value), f"expected {_TYPE_NAMES[kind]}, got {_type_name(value)}")
    return value


def expect_resource(doc: Document, kind: str, reason: str) -> dict[str, Any]:
    """The document's top-level mapping, refused when it names another `kind` of resource."""
    root = expect(doc, (), doc.data, dict)
    found = root.get("kind")
    if found is not None and found != kind:
        raise ConfigError(doc.where(("kind",)), shown(found), reason)
    return root


def scalar_item(doc: Document, path: Path_, value: Any, kind: type) -> Item:
    """One list element or scalar as an Item whose text is exactly what the file said."""
    return Item(str(expect(doc, path, value, kind)), Where(doc, path))


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
    for (section, name), (option, kind_) in FIELDS.items():
        block = spec.get(section)
        if block is None:
            continue
        expect(doc, ("spec", section), block, dict)
        values = block.get(name)
        if values is None:
            continue
        field_path = ("spec", section, name)
        expect(doc, field_path, values, list)
        layer[option] = [scalar_item(doc, (*field_path, i), v, kind_) for i, v in enumerate(values)]
    sidecar = spec.get("sidecar")
    if sidecar is not None:
        expect(doc, ("spec", "sidecar"), sidecar, dict)
        mode = sidecar.get("localProxyMode")
        if mode is not None:
            layer["local-proxy-mode"] = [scalar_item(doc, ("spec", *LOCAL_PROXY_MODE), mode, str)]
    return layer
