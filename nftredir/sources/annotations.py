"""A pod's annotations as the pod layer: the four `flomesh.io/...` lists FSM reads per pod.

Two forms are read:
- the Kubernetes downward-API annotations file (a `downwardAPI` volume item with
  `fieldPath: metadata.annotations`): one `key="value"` per line, sorted by key, the value
  quoted by Go's strconv.Quote (kubelet's fieldpath.FormatMap);
- a pod manifest in YAML or JSON (`kubectl get pod -o yaml`): `metadata.annotations`.

Values are split on commas and trimmed, as FSM does. FSM refuses a pod whose annotation has an
empty item (`"80,,81"` or `""`), so nftredir refuses it too, naming the line and the key.
"""

from __future__ import annotations

import re
from pathlib import Path

from nftredir.config import OPTIONS, Item
from nftredir.errors import ConfigError
from nftredir.sources.documents import Document, display_path, expect, expect_resource, parse_document, read_text

# annotation -> option name (nftredir.config.OPTIONS' `annotation`)
ANNOTATIONS = {option.annotation: name for name, option in OPTIONS.items() if option.annotation}
# An annotation key: an optional DNS-subdomain prefix and '/', then a name (Kubernetes' rules, loosely).
_KEY_RE = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
_HEX = "0123456789abcdefABCDEF"


def go_unquote(quoted: str) -> str:
    """The string a Go double-quoted literal stands for (strconv.Unquote, strictly).

    Raises ValueError on anything Go would refuse: a missing quote, an unescaped '"' or
    newline, an unknown escape, a short hex escape, a surrogate or out-of-range code point.
    Bytes that are not UTF-8 (from \\xNN escapes) are kept as surrogate escapes, so the
    validators see, and refuse, them.
    """
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError("not a double-quoted Go string")
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char == '"' or char == "\n":
            raise ValueError(f"unescaped {char!r} inside the quotes")
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        escape = body[i + 1 : i + 2]
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
        elif escape in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[escape]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in _HEX for d in digits):
                raise ValueError(f"\\{escape} needs {width} hex digits")
            value = int(digits, 16)
            if escape == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError(f"\\{escape}{digits} is not a Unicode code point")
            else:
                out += chr(value).encode("utf-8")
            i += 2 + width
        elif escape in "01234567" and escape:
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError("an octal escape is three digits, at most \\377")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{escape}" if escape else "a '\\' ends the string")
    return out.decode("utf-8", "surrogateescape")


def parse_downward_api(text: str, name: str) -> dict[str, tuple[str, str]]:
    """`key="value"` lines -> {key: (value, source)}; the source is `file:line key`."""
    annotations: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue  # kubelet writes no trailing newline; a blank line carries nothing
        where = f"{name}:{number}"
        key, sep, quoted = line.partition("=")
        if not sep or not _KEY_RE.fullmatch(key):
            raise ConfigError(where, line, 'not a `key="value"` line of a downward-API annotations file')
        try:
            value = go_unquote(quoted)
        except ValueError as exc:
            raise ConfigError(f"{where} {key}", quoted, f"not a Go-quoted string: {exc}") from None
        if key in annotations:
            raise ConfigError(f"{where} {key}", quoted, "the key appears twice")
        annotations[key] = (value, f"{where} {key}")
    return annotations


def _manifest_annotations(doc: Document) -> dict[str, tuple[str, str]]:
    root = expect_resource(doc, "Pod", "expected a Pod manifest (kind: Pod)")
    metadata = root.get("metadata")
    if metadata is None:
        return {}
    expect(doc, ("metadata",), metadata, dict)
    found = metadata.get("annotations")
    if found is None:
        return {}
    expect(doc, ("metadata", "annotations"), found, dict)
    annotations = {}
    for key in ANNOTATIONS:
        if key in found:
            path = ("metadata", "annotations", key)
            annotations[key] = (expect(doc, path, found[key], str), doc.where(path))
    return annotations


def is_downward_api(text: str) -> bool:
    """The downward-API format: empty, or a first line `key=...`. Anything else is a manifest."""
    first = text.lstrip("\n").split("\n", 1)[0]
    key, sep, rest = first.partition("=")
    return not first or (bool(sep) and bool(_KEY_RE.fullmatch(key)))


def read_pod_annotations(path: str | Path) -> dict[str, list[Item]]:
    """The pod layer from a downward-API annotations file or a pod manifest."""
    text, name = read_text(path), display_path(path)
    if is_downward_api(text):
        annotations = parse_downward_api(text, name)
    else:
        doc = parse_document(text, name)
        if not isinstance(doc.data, dict):
            first = text.lstrip("\n").split("\n", 1)[0]
            raise ConfigError(
                f"{name}:1", first, 'expected a downward-API annotations file (key="value" lines, as the kubelet '
                "writes them, each key at the start of its line) or a Pod manifest in YAML or JSON",
            )
        annotations = _manifest_annotations(doc)
    return pod_layer(annotations)


def pod_layer(annotations: dict[str, tuple[str, str]]) -> dict[str, list[Item]]:
    """FSM's reading of each known annotation: split on ',', trim, and refuse empty items."""
    layer: dict[str, list[Item]] = {}
    for key, option in ANNOTATIONS.items():
        if key not in annotations:
            continue
        value, source = annotations[key]
        items = [Item(part.strip(), source) for part in value.split(",")]
        for item in items:
            if not item.text:
                raise ConfigError(source, value, "empty item in the comma-separated list (FSM refuses the pod)")
        layer[option] = items
    return layer
