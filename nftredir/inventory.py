"""What else in the namespace acts on the hooks nftredir uses: pure functions over listings.

`nftredir diff` compares nftredir's own table only; whether traffic is redirected also depends
on every other nat chain on the same hooks (iptables-nft's `ip nat`, another tool's table, a
second nftredir table under another name), which `status` and `doctor` report from this.
"""

from __future__ import annotations

from typing import Any

# The hooks nftredir's base chains use (see templates/ruleset.j2).
HOOKS = ("prerouting", "output")


def foreign_nat_chains(chains: list[dict[str, Any]], own_table: str) -> list[dict[str, Any]]:
    """The nat base chains on nftredir's hooks outside `inet <own_table>`, in listing order.

    `chains` is Kernel.list_chains() output; each result is {family, table, chain, type, hook, prio}.
    """
    return [
        {key: chain.get(field) for key, field in (("family", "family"), ("table", "table"), ("chain", "name"),
                                                   ("type", "type"), ("hook", "hook"), ("prio", "prio"))}
        for chain in chains
        if chain.get("type") == "nat" and chain.get("hook") in HOOKS
        and (chain.get("family"), chain.get("table")) != ("inet", own_table)
    ]
