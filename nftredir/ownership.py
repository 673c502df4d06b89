"""Whose table is it: nftredir replaces or deletes only a table it made.

Every table nftredir installs holds a named counter, `managed_by_nftredir`, that no rule uses:
the mark. (A table comment would be the natural mark, but libnftables 1.0.6's JSON input
drops table comments.) Before `apply` replaces a table or `remove` deletes it, the live table
of that name, if there is one, must carry the mark, or be a table an nftredir from before the
mark made: no mark, exactly nftredir's chains, and no set or other object nftredir does not
make. Anything else is another tool's table, and is refused with nothing sent.

The usual cases are known over netlink: no table (a new pod) from one request, nftredir's own
table from two (its flags, the mark); only another table is listed, which fetches every set
element first.
"""

from __future__ import annotations

from typing import Any

from nftredir.errors import ConfigError, SystemRefused
from nftredir.kernel import table_header

MARK = "managed_by_nftredir"
# The sets an nftredir from before the mark could make (IPv4 only: dual stack came with the mark).
LEGACY_SET_NAMES = ("outbound_ip_range_exclusions", "outbound_ip_range_inclusions",
                    "outbound_port_exclusions", "inbound_port_exclusions")


def objects(text: str) -> set[tuple[str, str]]:
    """(kind, name) of each object in a `nft list table` text listing: `\tchain PROXY_OUTPUT {`."""
    found = set()
    for line in text.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and line.endswith(" {"):
            *kind, name = line[1:-2].split(" ")
            found.add((" ".join(kind), name))
    return found


def is_ours(text: str, chain_names: set[str]) -> bool:
    """Whether the listed table carries the mark, or is a pre-mark nftredir table."""
    found = objects(text)
    if ("counter", MARK) in found:
        return True
    chains = {name for kind, name in found if kind == "chain"}
    sets = {name for kind, name in found if kind == "set"}
    others = {kind for kind, _ in found} - {"chain", "set"}
    return not others and chains == chain_names and sets <= set(LEGACY_SET_NAMES)


def check(text: str | None, table: str, source: object, chain_names: set[str], action: str) -> None:
    """Refuse to `action` ("replace", "delete") `inet <table>` unless it is nftredir's.

    `text` is the table's terse listing (Kernel.table_text; None when it does not exist),
    `chain_names` the chains nftredir makes, `source` where the table name came from.
    """
    if text is None:
        return
    header = table_header(text)
    if "owner" in header["flags"]:
        held_by = f" ({header['program']})" if header["program"] else ""
        raise SystemRefused(
            f"table inet {table} is owned by another process{held_by} (flags owner): the kernel lets only "
            "that process change it, and deletes it when that process exits"
        )
    if not is_ours(text, chain_names):
        raise ConfigError(
            source, table,
            f"table inet {table} exists and is not nftredir's (it has no {MARK} counter): "
            f"refusing to {action} it; choose another table name",
        )


def _netlink_verdict(table: str) -> str:
    """"ours": `inet <table>` carries the mark and is held by no process (`flags owner`);
    "absent": there is no such table; "look closer": anything else, or the kernel refused to say."""
    from nftredir import netlink_table  # not for render, which imports MARK from here

    try:
        held = netlink_table.read_table("inet", table).flags & netlink_table.OWNER
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "look closer"
    try:
        return "ours" if not held and netlink_table.has_counter("inet", table, MARK) else "look closer"
    except OSError:
        return "look closer"


def is_marked(table: str) -> bool:
    """Whether `inet <table>` exists, carries the mark, and is held by no process."""
    return _netlink_verdict(table) == "ours"


def refuse_unless_ours(kernel: Any, table: str, source: object, action: str) -> None:
    """Before `action` ("replace", "delete"): the live `inet <table>`, if any, must be nftredir's.
    `kernel` is a nftredir.kernel.Kernel; `source` is where the table name came from.
    A new pod has no table: one netlink request says so, and nothing is listed."""
    if _netlink_verdict(table) != "look closer":
        return
    from nftredir.render import owned_chains  # render imports MARK from here

    check(kernel.table_text(table), table, source, owned_chains(table), action)
