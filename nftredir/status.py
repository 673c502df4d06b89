"""`nftredir status`: is the table there, does it match, and what is each rule counting.

Pure, like nftredir.diff: it takes the live listing and the desired batch as JSON dicts.

JSON shape of `status_report(...)` (what `nftredir status --format json` prints):

    {"table": {"family": "inet", "name": "nftredir"},
     "installed": true,
     "flags": ["dormant", ...],        # the table's own flags
     "matches": false,                 # the same comparison as `nftredir diff`
     "differences": [DIFFERENCE, ...], # as in `nftredir diff --format json`
     "other_nat_chains": [{"family", "table", "chain", "type", "hook", "prio"}, ...],
     "sets": [{"name", "type", "flags", "elements"}, ...],
     "chains": [{"name", "type", "hook", "prio", "policy",
                 "rules": [{"handle", "rule", "comment", "packets", "bytes"}, ...]}, ...]}

Live objects only: with the table absent, "installed" is false and "sets"/"chains" are empty.
"other_nat_chains" lists every nat base chain on the prerouting and output hooks outside the
table (iptables-nft's `ip nat`, other tools, another nftredir table): they act on the same
traffic, so nftredir's table matching does not mean the traffic is redirected as configured.
"packets"/"bytes" are null for a rule without a counter.
"""

from __future__ import annotations

from typing import Any

from nftredir import diff
from nftredir.model import FAMILY


def status_report(
    listing: dict[str, Any] | None, batch: dict[str, Any], table: str, others: list[dict[str, Any]]
) -> dict[str, Any]:
    """`others` are the other nat base chains on nftredir's hooks (nftredir.inventory)."""
    result = diff.drift(listing, batch, table)
    live, desired, differences = result.live, result.desired, result.differences
    sets = list(live.sets.values()) if live else []
    names = diff.ordered_names(desired.chains, live.chains) if live else []
    chains = [live.chains[name] for name in names if name in live.chains] if live else []
    return {
        "table": {"family": FAMILY, "name": table},
        "installed": live is not None,
        "flags": list(live.flags) if live else [],
        "matches": not differences,
        "differences": differences,
        "other_nat_chains": others,
        "sets": [{"name": s.name, **diff.set_json(s)} for s in sets],
        "chains": [
            {
                "name": chain.name,
                **chain.header(),
                "rules": [
                    {"handle": r.handle, "rule": r.text, "comment": r.comment, "packets": r.packets, "bytes": r.bytes}
                    for r in chain.rules
                ],
            }
            for chain in chains
        ],
    }


def _summary(difference: dict[str, Any]) -> str:
    """'missing rule in PROXY_OUTPUT: tcp dport 9999 return' for one difference."""
    obj, change, name = difference["object"], difference["change"], difference["name"]
    if obj == "rule" and change == "changed":
        return f"changed rule in {name}: {difference['live']['rule']} -> {difference['desired']['rule']}"
    if obj == "rule":
        side = difference["desired"] if change == "missing" else difference["live"]
        return f"{change} rule in {name}: {side['rule']}"
    if "fields" in difference:
        return f"{change} {obj} {name} ({', '.join(difference['fields'])})"
    return f"{change} {obj} {name}"


def format_text(report: dict[str, Any]) -> str:
    """The report for a person: a verdict, then every chain with each rule's counters."""
    name = f"table {report['table']['family']} {report['table']['name']}"
    others = [
        f"  - table {c['family']} {c['table']} chain {c['chain']} (type {c['type']} hook {c['hook']} priority {c['prio']})"
        for c in report["other_nat_chains"]
    ]
    if others:
        others.insert(0, f"other nat chains on the same hooks ({len(others)}), which also decide what is redirected:")
    if not report["installed"]:
        verdict = "nftredir redirects nothing, but the chains below may" if others else "nothing is redirected"
        return "\n".join([f"{name}: not installed ({verdict}); run nftredir apply", *others]) + "\n"
    lines = [f"{name}: installed"]
    if "dormant" in report["flags"]:
        lines.append("table flags: dormant: the table is inactive and redirects nothing")
    if report["matches"]:
        lines.append("ruleset: matches the desired ruleset")
    else:
        count = len(report["differences"])
        lines.append(f"ruleset: DIFFERS from the desired ruleset ({count} difference{'s' * (count != 1)}; see nftredir diff)")
        lines += [f"  - {_summary(d)}" for d in report["differences"]]
    lines += others
    for s in report["sets"]:
        flags = f" flags {','.join(s['flags'])}" if s["flags"] else ""
        lines.append(f"set {s['name']} ({s['type']}{flags}): {{ {', '.join(s['elements'])} }}")
    width = max(
        [len(str(r[k])) for c in report["chains"] for r in c["rules"] for k in ("packets", "bytes") if r[k] is not None]
        + [7]
    )
    for chain in report["chains"]:
        hook = f" (type {chain['type']} hook {chain['hook']} priority {chain['prio']}; policy {chain['policy']})"
        lines += ["", f"chain {chain['name']}{hook if chain['hook'] else ''}"]
        if not chain["rules"]:
            lines.append("  (no rules)")
            continue
        lines.append(f"  {'packets':>{width}} {'bytes':>{width}}  rule")
        for rule in chain["rules"]:
            packets, bytes_ = ("-" if rule[k] is None else rule[k] for k in ("packets", "bytes"))
            comment = f"  # {rule['comment']}" if rule["comment"] is not None else ""
            lines.append(f"  {packets:>{width}} {bytes_:>{width}}  {rule['rule']}{comment}")
    return "\n".join(lines) + "\n"
