"""Reading a YAML or JSON file into plain data, remembering the line of each value.

Every failure is a ConfigError naming the file (and line, where the parser knows it): an
unreadable file, bytes that are not UTF-8, a syntax error, a duplicate key. PyYAML is imported
only here and only when a YAML file is read, with libyaml's C parser when it is available
(tens of thousands of CIDRs in a MeshConfig).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from nftredir.config import Item
from nftredir.errors import ConfigError

FieldPath = tuple[str | int, ...]
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_NUMBER_TAGS = (_INT_TAG, "tag:yaml.org,2002:float")


def display_path(path: str | Path) -> str:
    """A file name fit for a one-line message: as given, or escaped if it holds odd characters."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def format_path(path: FieldPath) -> str:
    """('spec', 'traffic', 'x', 3) -> 'spec.traffic.x[3]'; odd keys are quoted: a['b/c']."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("-", "_").isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass(frozen=True)
class Document:
    """A parsed file: its data, and the line (1-based) of values by path, where known."""

    name: str
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def location(self, path: FieldPath) -> str:
        """'file:line' of the value at `path` (or just 'file')."""
        line = self.lines.get(path)
        return f"{self.name}:{line}" if line else self.name

    def source(self, path: FieldPath) -> str:
        """The source of the value at `path`: 'file:line: a.b[3]' (or 'file: a.b[3]')."""
        head = self.location(path)
        return f"{head}: {format_path(path)}" if path else head


class FieldSource(NamedTuple):
    """The source of the value at `path`, spelled out (`Document.source`) only when a message
    shows it: a MeshConfig can hold 50,000 CIDRs, and formatting each source up front costs more
    than validating the value."""

    doc: Document
    path: FieldPath

    def __str__(self) -> str:
        return self.doc.source(self.path)


# Far above any real file: Kubernetes objects are at most ~1.5 MB (etcd's limit), and a
# MeshConfig of 200,000 CIDRs is ~4 MB. The cap bounds memory for /dev/zero and the like.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Real documents nest a handful of levels; libyaml's C composer recurses on the C stack and
# crashes the process on documents nested tens of thousands deep, so deeper ones are refused.
MAX_DEPTH = 100
_BOM = "\ufeff"


def read_bytes(path: str | Path, file: BinaryIO | None = None) -> bytes:
    """The file's bytes (or those of the open `file`, such as stdin, named `path`): devices,
    directories and anything over MAX_FILE_BYTES are ConfigErrors, so nothing that never ends
    is read to the end."""
    name = display_path(path)
    try:
        with open(path, "rb") if file is None else contextlib.nullcontext(file) as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if file is None and not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise ConfigError(name, str(path), "not a regular file (or a pipe)")
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, str(path), f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(name, str(path), f"larger than {MAX_FILE_BYTES // 2**20} MiB: not a configuration file")
    return data


def read_text(path: str | Path) -> str:
    """The file as text (read_bytes); bytes that are not UTF-8 are ConfigErrors. A leading byte
    order mark is dropped."""
    name = display_path(path)
    data = read_bytes(path)
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end]
        reason = f"not UTF-8 text (byte 0x{bad[0]:02x} at offset {exc.start})"
        raise ConfigError(f"{name}:{line}", bad.decode("latin-1"), reason) from None


def looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def load_document(path: str | Path, numbers_as_text: bool = False) -> Document:
    """Parse a YAML or JSON file (JSON if it starts with '{' or '['; YAML is the rest)."""
    return parse_document(read_text(path), display_path(path), numbers_as_text)


def parse_document(text: str, name: str, numbers_as_text: bool = False) -> Document:
    """`numbers_as_text`: a YAML number stays the text it was written as (nftredir's own file,
    where a value must mean what it means as a flag: `01500` is not octal 832)."""
    if looks_like_json(text):
        return Document(name, _load_json(text, name))
    data, lines = _load_yaml(text, name, numbers_as_text)
    return Document(name, data, lines)


def _depth_bound(text: str) -> int:
    """An upper bound of the YAML nesting depth, cheap enough for a 50,000-item file: every
    level needs an open bracket, more indentation, or a '- ' / '? ' / ': ' on its line."""
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH:
        return brackets
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    inline = max((line.count("- ") + line.count("? ") + line.count(": ") for line in text.splitlines()), default=0)
    return brackets + indent + inline


def _check_depth(loader: Any, text: str, name: str) -> None:
    """Refuse a document nested over MAX_DEPTH, from the parser's events, before composing it."""
    import yaml

    depth = 0
    while True:
        event = loader.get_event()
        if event is None or isinstance(event, yaml.StreamEndEvent):
            return
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line
                raise ConfigError(f"{name}:{line + 1}", _line_of(text, event.start_mark), f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _load_json(text: str, name: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ConfigError(name, key, "duplicate key in a JSON object")
            result[key] = value
        return result

    def constant(word: str) -> Any:
        raise ConfigError(name, word, "not valid JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        snippet = exc.doc[exc.pos : exc.pos + 20]
        raise ConfigError(f"{name}:{exc.lineno}:{exc.colno}", snippet, f"malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(name, text[:20], "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(name, text[:20], f"malformed JSON: {exc}") from None


def _load_yaml(text: str, name: str, numbers_as_text: bool = False) -> tuple[Any, dict[FieldPath, int]]:
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lines: dict[FieldPath, int] = {}
    loader = None
    try:
        if _depth_bound(text) > MAX_DEPTH:
            checker = loader_class(text)
            try:
                _check_depth(checker, text, name)
            finally:
                checker.dispose()
        loader = loader_class(text)
        node = loader.get_single_node()
        if node is None:
            return None, lines
        return _Walker(loader, lines, name, numbers_as_text).value(node, ()), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = exc.problem or exc.context or "malformed"
        raise ConfigError(where, _line_of(text, mark), f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, text[:20], f"malformed YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(name, text[:20], "YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _line_of(text: str, mark: Any) -> str:
    if mark is None:
        return text[:20]
    lines = text.splitlines()
    return lines[mark.line] if mark.line < len(lines) else ""


class _Walker:
    """Builds plain data from YAML nodes, like SafeConstructor, and notes each value's line.

    An alias yields the very object its anchor built (no copy), so a 'billion laughs' file
    costs no more than its text, and a self-referencing one cannot loop.
    """

    def __init__(self, loader: Any, lines: dict[FieldPath, int], name: str, numbers_as_text: bool = False) -> None:
        self.loader, self.lines, self.name = loader, lines, name
        self.numbers_as_text = numbers_as_text
        self.built: dict[int, Any] = {}

    def value(self, node: Any, path: FieldPath) -> Any:
        import yaml

        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.built:
            return self.built[id(node)]
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            self.built[id(node)] = result
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                try:
                    duplicate = key in result
                except TypeError:  # an unhashable key, e.g. a list
                    raise ConfigError(f"{self.name}:{key_node.start_mark.line + 1}", key, "not a valid key") from None
                if duplicate:
                    where = f"{self.name}:{key_node.start_mark.line + 1}"
                    raise ConfigError(where, key, "duplicate key")
                part = key if isinstance(key, (str, int)) else str(key)
                result[key] = self.value(value_node, (*path, part))
            return result
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            self.built[id(node)] = items
            items.extend(self.value(child, (*path, index)) for index, child in enumerate(node.value))
            return items
        if node.tag == _STR_TAG:  # most scalars: skip the constructor's bookkeeping
            return node.value
        if self.numbers_as_text and node.tag in _NUMBER_TAGS and not node.style:  # plain: None, or '' from libyaml
            return node.value  # validated as a flag's text would be
        if node.tag == _INT_TAG and ":" in node.value:
            # YAML 1.1's base 60 (`1:20` is 80): Kubernetes' YAML reader has no such number.
            where = f"{self.name}:{node.start_mark.line + 1}"
            raise ConfigError(where, node.value, "a base-60 number in YAML 1.1; quote it if it is text")
        try:
            return self.loader.construct_object(node, deep=True)
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            where = f"{self.name}:{node.start_mark.line + 1}"
            raise ConfigError(where, node.value, f"cannot read this value: {str(exc).split(';')[0]}") from None


# ---------------------------------------------------------------------------------------------
# Checks of a parsed document

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


def _is(value: Any, expected: type) -> bool:
    return isinstance(value, expected) and not isinstance(value, bool)


def expect(doc: Document, path: FieldPath, value: Any, expected: type) -> Any:
    """`value` if it is of the `expected` type, else a ConfigError naming the field path."""
    if not _is(value, expected):
        raise ConfigError(doc.source(path), value, f"expected {_TYPE_NAMES[expected]}, got {_type_name(value)}")
    return value


def expect_resource(doc: Document, resource: str, reason: str) -> dict[str, Any]:
    """The document's top-level mapping, refused when its `kind` names another resource."""
    root = expect(doc, (), doc.data, dict)
    found = root.get("kind")
    if found is not None and found != resource:
        raise ConfigError(doc.source(("kind",)), found, reason)
    return root


class ListItems(Sequence[Item]):
    """A document list's elements as Items, each made only when asked for: a MeshConfig list can
    hold 50,000, and only a value that fails validation needs its position (`texts` serves the
    bulk path, nftredir.config.item_texts)."""

    def __init__(self, doc: Document, path: FieldPath, texts: list[str]):
        self.doc, self.path, self.texts = doc, path, texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index):  # an int (a slice gives a list of Items)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # a negative index counts from the end; too large raises
        return self._item(index, self.texts[index])

    def __iter__(self) -> Iterator[Item]:
        return (self._item(index, text) for index, text in enumerate(self.texts))

    def _item(self, index: int, text: str) -> Item:
        return Item(text, FieldSource(self.doc, (*self.path, index)))


def list_items(doc: Document, path: FieldPath, values: list[Any], expected: type) -> Sequence[Item]:
    """A list's elements as Items, each checked to be of the `expected` type: in one pass when
    all are (a MeshConfig list can hold 50,000), else refused at the first that is not."""
    if all(type(value) is expected for value in values):  # bool is not int here either
        return ListItems(doc, path, values if expected is str else [str(value) for value in values])
    return [scalar_item(doc, (*path, index), value, expected) for index, value in enumerate(values)]


def scalar_item(doc: Document, path: FieldPath, value: Any, expected: type) -> Item:
    """One list element or scalar as an Item whose text is exactly what the file said."""
    return Item(str(expect(doc, path, value, expected)), FieldSource(doc, path))
