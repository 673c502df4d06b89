"""nftredir's own vocabulary of nft expressions, printed as `nft list` prints it.

What nftredir writes (meta and payload matches, counter, verdicts, jumps, redirect, dnat) is
shown in nft syntax; any other expression, say a hand-added `limit` or `ct state`, is shown as
its libnftables JSON after `json:`, so nothing is hidden and nothing is guessed.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNQUALIFIED_META = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
_IFNAME_META = {"iifname", "oifname"}
_BARE_RE = re.compile(r"[@A-Za-z0-9_.:/-]+")
VERDICTS = ("accept", "drop", "return", "continue", "queue")


def value_text(value: Any, quote: bool = False) -> str:
    """A value in nft syntax: 80, 10.0.0.0/8, 1-5, "eth0", @set, { 1, 2 }."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value) if quote or not _BARE_RE.fullmatch(value) else value
    if isinstance(value, dict):
        if "prefix" in value and isinstance(value["prefix"], dict):
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "range" in value and isinstance(value["range"], list) and len(value["range"]) == 2:
            return f"{value_text(value['range'][0])}-{value_text(value['range'][1])}"
        if "set" in value and isinstance(value["set"], list):
            return "{ " + ", ".join(value_text(v, quote) for v in value["set"]) + " }"
    if isinstance(value, list):  # flags
        return ",".join(value_text(v, quote) for v in value)
    return _json(value)


def _json(value: Any) -> str:
    return "json:" + json.dumps(value, sort_keys=True)


def _left_text(left: Any) -> tuple[str, bool] | None:
    """The left side of a match nftredir writes (meta, or a protocol's payload field), and
    whether string values there are quoted; None for any other."""
    if isinstance(left, dict) and isinstance(left.get("meta"), dict):
        key = left["meta"].get("key", "")
        return (key if key in _UNQUALIFIED_META else f"meta {key}"), key in _IFNAME_META
    if isinstance(left, dict) and isinstance(left.get("payload"), dict) and "protocol" in left["payload"]:
        return f"{left['payload']['protocol']} {left['payload'].get('field')}", False
    return None


def expression_text(expr: Any) -> str:
    """One expression in nft syntax; any kind nftredir does not write, as `json:` and its JSON."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return _json(expr)
    (kind, body), = expr.items()
    if kind == "match" and isinstance(body, dict) and (left := _left_text(body.get("left"))) is not None:
        op = body.get("op", "==")
        shown_op = "" if op in ("==", "in") else f"{op} "
        return f"{left[0]} {shown_op}{value_text(body.get('right'), left[1])}"
    if kind == "counter":
        return "counter"
    if kind in VERDICTS and body is None:
        return kind
    if kind in ("jump", "goto") and isinstance(body, dict):
        return f"{kind} {body.get('target')}"
    if kind == "redirect" and isinstance(body, dict) and set(body) <= {"port"}:
        return f"redirect to :{body['port']}" if "port" in body else "redirect"
    if kind == "dnat" and isinstance(body, dict) and set(body) <= {"family", "addr"} and "addr" in body:
        family = f"{body['family']} " if "family" in body else ""
        return f"dnat {family}to {value_text(body['addr'])}"
    return _json(expr)
