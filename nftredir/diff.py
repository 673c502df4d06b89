"""Drift: the live table against the desired ruleset (nftredir.model), and the report of it.

`compare` lists the differences as plain data (the JSON shape below) and `unified` prints both
sides as nft text in a unified diff (`-` live, `+` desired). Pure: no kernel.

JSON shape of `report(...)` (what `nftredir diff --format json` prints):
    {"table": {"family": "inet", "name": "nftredir"},
     "installed": true,            # the live table exists
     "identical": false,           # no differences
     "differences": [DIFFERENCE, ...]}

Each DIFFERENCE has "object" ("table", "set", "chain" or "rule", or another nft object kind
such as "map" or "flowtable" found live), "change" ("missing": desired, not live; "extra":
live, not desired; "changed": both, different), "name", "live" and "desired" (the object on
each side, null where absent), and by kind:

- table: "missing" (everything else is then missing too, and not listed again), or "changed":
  live/desired are {"family", "name", "flags", "comment"}, with "fields" (a dormant table
  redirects nothing, whatever its rules say).
- set: live/desired are {"type", "flags", "elements"}; "changed" adds "fields" (which of
  type/flags/elements differ), "elements_missing" and "elements_extra" (canonical text).
- chain: live/desired are {"type", "hook", "prio", "policy", "rules"} (the first four null for
  a regular chain; "rules" as for a rule below, so a missing or extra chain's rules are not
  listed separately); "changed" adds "fields" (which of type/hook/prio/policy differ).
- rule: "name" is the chain; live/desired are {"index", "rule", "comment"} with "index" the
  0-based position in the chain, "rule" the nft text without the comment, and on the live side
  also "handle". A rule that moved is listed as extra at its old place and missing at its new.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nftredir.model import FAMILY, Chain, NamedSet, Rule, Ruleset, from_batch, from_listing


def table_json(ruleset: Ruleset) -> dict[str, Any]:
    return {"family": FAMILY, "name": ruleset.table, "flags": list(ruleset.flags), "comment": ruleset.comment}


def set_json(s: NamedSet) -> dict[str, Any]:
    return {"type": s.type, "flags": list(s.flags), "elements": list(s.elements)}


def _rule_json(rule: Rule, index: int, live: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "rule": rule.text, "comment": rule.comment}
    if live:
        out["handle"] = rule.handle
    return out


def _chain_json(chain: Chain, live: bool) -> dict[str, Any]:
    return {**chain.header(), "rules": [_rule_json(r, i, live) for i, r in enumerate(chain.rules)]}


def ordered_names(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Names in the desired order, then names only live has, sorted."""
    return [*desired, *sorted(name for name in live if name not in desired)]


def _difference(obj: str, change: str, name: str, live: Any, desired: Any, **extra: Any) -> dict[str, Any]:
    return {"object": obj, "change": change, "name": name, "live": live, "desired": desired, **extra}


def _rule_differences(chain: str, live: tuple[Rule, ...], desired: tuple[Rule, ...]) -> Iterator[dict[str, Any]]:
    matcher = difflib.SequenceMatcher(None, list(live), list(desired), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(paired):
            yield _difference(
                "rule", "changed", chain, _rule_json(live[i1 + k], i1 + k, True), _rule_json(desired[j1 + k], j1 + k, False)
            )
        for i in range(i1 + paired, i2):
            yield _difference("rule", "extra", chain, _rule_json(live[i], i, True), None)
        for j in range(j1 + paired, j2):
            yield _difference("rule", "missing", chain, None, _rule_json(desired[j], j, False))


def compare(live: Ruleset | None, desired: Ruleset) -> list[dict[str, Any]]:
    """Every difference that changes meaning, in the JSON shape of this module's docstring."""
    if live is None:
        return [_difference("table", "missing", desired.table, None, {"family": FAMILY, "name": desired.table})]
    out: list[dict[str, Any]] = []
    fields = [f for f in Ruleset.TABLE_FIELDS if getattr(live, f) != getattr(desired, f)]
    if fields:  # a dormant table redirects nothing, whatever its rules say
        out.append(_difference("table", "changed", desired.table, table_json(live), table_json(desired), fields=fields))
    for name in ordered_names(desired.sets, live.sets):
        have, want = live.sets.get(name), desired.sets.get(name)
        kind = (want or have).object  # type: ignore[union-attr]
        if have is None:
            out.append(_difference(kind, "missing", name, None, set_json(want)))  # type: ignore[arg-type]
        elif want is None:
            out.append(_difference(kind, "extra", name, set_json(have), None))
        elif have != want:
            fields = [f for f in NamedSet.FIELDS + ("object",) if getattr(have, f) != getattr(want, f)]
            have_elements, want_elements = set(have.elements), set(want.elements)
            out.append(
                _difference(
                    kind, "changed", name, set_json(have), set_json(want), fields=fields,
                    elements_missing=[e for e in want.elements if e not in have_elements],
                    elements_extra=[e for e in have.elements if e not in want_elements],
                )
            )
    for name in ordered_names(desired.chains, live.chains):
        have_chain, want_chain = live.chains.get(name), desired.chains.get(name)
        if have_chain is None:
            out.append(_difference("chain", "missing", name, None, _chain_json(want_chain, False)))  # type: ignore[arg-type]
            continue
        if want_chain is None:
            out.append(_difference("chain", "extra", name, _chain_json(have_chain, True), None))
            continue
        fields = [f for f in Chain.HEADER if getattr(have_chain, f) != getattr(want_chain, f)]
        if fields:
            out.append(
                _difference("chain", "changed", name, have_chain.header(), want_chain.header(), fields=fields)
            )
        out.extend(_rule_differences(name, have_chain.rules, want_chain.rules))
    for kind, name in ordered_names(desired.others, live.others):  # type: ignore[type-var]
        have_other, want_other = live.others.get((kind, name)), desired.others.get((kind, name))
        if have_other != want_other:
            change = "missing" if have_other is None else "extra" if want_other is None else "changed"
            out.append(
                _difference(
                    kind, change, name, json.loads(have_other) if have_other else None,
                    json.loads(want_other) if want_other else None,
                )
            )
    return out


def report(live: Ruleset | None, desired: Ruleset, differences: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole comparison as `nftredir diff --format json` prints it."""
    differences = compare(live, desired) if differences is None else differences
    return {
        "table": {"family": FAMILY, "name": desired.table},
        "installed": live is not None,
        "identical": not differences,
        "differences": differences,
    }


# ---------------------------------------------------------------------------------------------
# Text


_ELEMENTS_ON_ONE_LINE = 8  # a set's elements on one line up to this many, else one a line


def ruleset_lines(ruleset: Ruleset | None, order: Ruleset | None = None) -> list[str]:
    """The canonical ruleset as `nft list table` text: no handles, no counter values.

    Sets and chains come in `order`'s order (the desired side) and then the rest by name, so
    that both sides of a diff line up however the live objects were created.
    """
    if ruleset is None:
        return []
    reference = order or ruleset
    lines = [f"table {FAMILY} {ruleset.table} {{"]
    if ruleset.flags:
        lines.append(f"\tflags {','.join(ruleset.flags)}")
    if ruleset.comment is not None:
        lines.append(f"\tcomment {json.dumps(ruleset.comment)}")
    blocks: list[list[str]] = []
    for name in ordered_names(reference.sets, ruleset.sets):
        if name not in ruleset.sets:
            continue
        s = ruleset.sets[name]
        block = [f"\t{s.object} {s.name} {{", f"\t\ttype {s.type}"]
        if s.flags:
            block.append(f"\t\tflags {','.join(s.flags)}")
        if len(s.elements) > _ELEMENTS_ON_ONE_LINE:  # one a line: a diff then shows the ones that changed
            block += ["\t\telements = {", *(f"\t\t\t{e}," for e in s.elements[:-1]), f"\t\t\t{s.elements[-1]}", "\t\t}"]
        elif s.elements:
            block.append(f"\t\telements = {{ {', '.join(s.elements)} }}")
        blocks.append([*block, "\t}"])
    for name in ordered_names(reference.chains, ruleset.chains):
        if name not in ruleset.chains:
            continue
        chain = ruleset.chains[name]
        block = [f"\tchain {chain.name} {{"]
        if chain.hook is not None:
            block.append(f"\t\ttype {chain.type} hook {chain.hook} priority {chain.prio}; policy {chain.policy};")
        block += [f"\t\t{rule.line}" for rule in chain.rules]
        blocks.append([*block, "\t}"])
    for kind, name in ordered_names(reference.others, ruleset.others):  # type: ignore[type-var]
        if (kind, name) in ruleset.others:
            blocks.append([f"\t{kind} {name} {ruleset.others[(kind, name)]}"])
    for index, block in enumerate(blocks):
        if index:
            lines.append("")
        lines += block
    return [*lines, "}"]


def unified(live: Ruleset | None, desired: Ruleset, context: int = 3) -> str:
    """A unified diff in nft syntax, `-` live and `+` desired; empty when they are identical."""
    live_name = f"live: table {FAMILY} {desired.table}" + ("" if live is not None else " (absent)")
    lines = unified_lines(
        ruleset_lines(live, desired), ruleset_lines(desired), live_name, f"desired: table {FAMILY} {desired.table}", context
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


def unified_lines(a: list[str], b: list[str], fromfile: str, tofile: str, context: int) -> list[str]:
    """difflib.unified_diff of a and b, with their common head and tail (all but `context` lines
    of each) left out of difflib's matcher and the hunks' line numbers put back: one changed
    element of 50,000 costs the matcher ~60-100 ms over the whole 100,000 lines, ~0 over the rest."""
    size = min(len(a), len(b))
    head = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), size)
    tail = next((i for i, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y or i >= size - head), size - head)
    start = max(0, head - context)
    a_end, b_end = len(a) - max(0, tail - context), len(b) - max(0, tail - context)
    out = list(difflib.unified_diff(a[start:a_end], b[start:b_end], fromfile, tofile, lineterm="", n=context))
    for index, line in enumerate(out):
        if line.startswith("@@ "):
            out[index] = _shift_hunk_header(line, start)
    return out


def _shift_hunk_header(header: str, offset: int) -> str:
    """`@@ -A[,N] +B[,M] @@` with A and B moved by offset (difflib's numbers are linear in it)."""
    _, old, new, _ = header.split(" ", 3)
    return f"@@ {old[0]}{_shifted(old[1:], offset)} {new[0]}{_shifted(new[1:], offset)} @@"


def _shifted(hunk_range: str, offset: int) -> str:
    first, comma, length = hunk_range.partition(",")
    return f"{int(first) + offset}{comma}{length}"


@dataclass(frozen=True)
class Drift:
    """One comparison: the live table (None if absent), the desired one, and what differs."""

    live: Ruleset | None
    desired: Ruleset
    differences: list[dict[str, Any]]

    @property
    def identical(self) -> bool:
        return not self.differences

    def text(self) -> str:
        """The unified diff; empty when identical.

        Should two rules differ only where their nft text looks the same (say a number and a
        string of digits), the text would hide it, so such differences are listed as JSON.
        """
        if self.identical:  # nothing to show: no need to lay out both sides (100,000 lines at 50,000)
            return ""
        text = unified(self.live, self.desired)
        if not text:
            text = "".join(f"# {json.dumps(d, sort_keys=True)}\n" for d in self.differences)
        return text

    def report(self) -> dict[str, Any]:
        return report(self.live, self.desired, self.differences)


def drift(listing: dict[str, Any] | None, batch: dict[str, Any], table: str) -> Drift:
    """Compare `list table` JSON (None: no table) with the batch `apply` would send."""
    live, desired = from_listing(listing, table), from_batch(batch, table)
    return Drift(live, desired, compare(live, desired))
