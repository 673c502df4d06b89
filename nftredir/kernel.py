"""The one door to the kernel: libnftables through Debian's python3-nftables binding.

Every change is one JSON batch, so one netlink transaction: the kernel commits all of it or
none of it. Reading goes through the same door (`list_table`, `list_chains`), except what
libnftables 1.0.6 cannot say cheaply or right, which nftredir.netlink_table reads itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from nftredir.errors import SystemRefused

CAP_NET_ADMIN = 12
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NO_SUCH_OBJECT = "No such file or directory"


def has_net_admin() -> bool:
    """Whether this process may use nftables: CAP_NET_ADMIN in its effective set, from
    /proc/self/status, or from capget(2) where /proc is not mounted."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return _capget_net_admin()


def _capget_net_admin() -> bool:
    import ctypes  # only without /proc: ctypes costs an init container's start-up a few ms

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    if ctypes.CDLL(None, use_errno=True).capget(ctypes.byref(header), data) != 0:
        return os.geteuid() == 0  # cannot tell: assume root has it, as it does unless dropped
    return bool(data[0].effective >> CAP_NET_ADMIN & 1)


def describe_command(command: dict[str, Any]) -> str:
    """'add rule inet nftredir PROXY_OUTPUT "comment"' for one command of a batch."""
    (verb, body), = command.items()
    if not isinstance(body, dict):
        return verb
    (kind, obj), = body.items()
    words = [verb, kind, obj.get("family", ""), obj.get("table", obj.get("name", ""))]
    if kind in ("chain", "set", "counter"):
        words.append(obj.get("name", ""))
    if kind == "rule":
        words += [obj.get("chain", ""), json.dumps(obj["comment"]) if "comment" in obj else ""]
    return " ".join(str(word) for word in words if word)


def table_header(text: str) -> dict[str, Any]:
    """The table's own attributes from `nft list table` text: flags, comment, owning program.

    libnftables 1.0.6 prints a table's flags in JSON from freed memory (table_flags_json) and
    its comment not at all; the text listing has them right, and alone names the process that
    holds a `flags owner` table (list_table reads the rest over netlink, which is cheaper).
    """
    lines = text.splitlines()
    first = lines[0] if lines else ""
    program = first.split("# progname ", 1)[1].strip() if "# progname " in first else None
    flags: list[str] = []
    comment = None
    for line in lines[1:]:
        if line.startswith("\tflags "):
            flags = [flag.strip() for flag in line[len("\tflags ") :].split(",") if flag.strip()]
        elif line.startswith('\tcomment "') and line.endswith('"'):
            comment = line[len('\tcomment "') : -1]
        else:
            break  # the table's own lines come first, before its sets and chains
    return {"flags": sorted(flags), "comment": comment, "program": program}


class Kernel:
    """libnftables, set up for JSON in and out."""

    def __init__(self, trace: Callable[[str], None] | None = None, write: bool = True) -> None:
        """`trace`, when given, is told each batch before it is sent (the CLI's -v). `write`
        says whether the caller changes the ruleset or only reads it (for the message)."""
        self._trace = trace
        if not has_net_admin():
            action = "changing" if write else "reading"
            raise SystemRefused(
                f"permission denied: {action} nftables needs CAP_NET_ADMIN in the pod's network namespace "
                "(the kernel answers no nftables request without it); run as root"
            )
        from nftredir.binding import open_nftables

        self._nft = open_nftables()
        # With json output on, libnftables also reads its input as JSON (the binding's json_cmd
        # relies on it), so batches go in as JSON text and listings come back as JSON.
        self._nft.set_json_output(True)

    def _run(self, text: str, dry_run: bool = False) -> tuple[int, str, str]:
        """One JSON batch, as text, through libnftables (checked by the kernel only, with dry_run)."""
        self._nft.set_dry_run(dry_run)
        try:
            return self._nft.cmd(text)  # JSON in, as json output is on (see __init__)
        finally:
            self._nft.set_dry_run(False)

    def _run_text(self, command: str) -> tuple[int, str, str]:
        """One listing command in nft syntax, terse (no set elements). Only for names that
        nftredir.config validated: nothing a user typed reaches this as syntax otherwise."""
        self._nft.set_json_output(False)
        self._nft.set_terse_output(True)
        try:
            return self._nft.cmd(command)
        finally:
            self._nft.set_terse_output(False)
            self._nft.set_json_output(True)

    def send(self, batch: dict[str, Any] | str, dry_run: bool = False) -> None:
        """Commit the batch as one transaction (or only have the kernel check it, with dry_run).

        The batch may come as its JSON text, which goes to libnftables as it is: that is what
        json_cmd does with the text it makes, and a batch with 50,000 set elements then costs
        neither a parse into Python objects nor a serialisation back.
        """
        text = batch if isinstance(batch, str) else json.dumps(batch)
        if self._trace:
            self._trace(f"sending{' dry-run' if dry_run else ''} batch: {text}")
        rc, _, error = self._run(text, dry_run)
        if rc != 0:
            raise SystemRefused(self._explain(json.loads(text), error))

    def _explain(self, batch: dict[str, Any], error: str) -> str:
        """The kernel's message and the command it refused.

        libnftables reports JSON errors without a position, so the failing command is found by
        bisecting the batch with dry runs: only on this error path, and nothing is committed.
        """
        lines = (" ".join(line.replace("internal:0:0-0: Error:", "").split()) for line in error.splitlines())
        message = "; ".join(dict.fromkeys(line for line in lines if line)) or "unknown error"
        if "Operation not permitted" in message:
            return f"permission denied by the kernel ({message}): run as root with CAP_NET_ADMIN"
        commands = batch["nftables"]
        low, high = 0, len(commands)  # commands[:low] pass; commands[:high] fail
        while high - low > 1:
            middle = (low + high) // 2
            if self._run(json.dumps({"nftables": commands[:middle]}), dry_run=True)[0] == 0:
                low = middle
            else:
                high = middle
        return f"the kernel refused command {high} of {len(commands)} ({describe_command(commands[high - 1])}): {message}"

    def _listing(self, command: dict[str, Any], what: str) -> dict[str, Any] | None:
        """A JSON list command's output; None when the object does not exist."""
        rc, output, error = self._run(json.dumps({"nftables": [{"list": command}]}))
        if rc != 0:
            if _NO_SUCH_OBJECT in error:
                return None
            raise SystemRefused(f"could not list {what}: {' '.join(error.split())}")
        try:
            return json.loads(output)
        except ValueError:
            raise SystemRefused(f"libnftables listed {what} as malformed JSON") from None

    def table_text(self, table: str) -> str | None:
        """`nft -t list table inet <table>` (no set elements), or None when there is no such table."""
        rc, text, error = self._run_text(f"list table inet {table}")
        if rc != 0:
            if _NO_SUCH_OBJECT in error:
                return None
            raise SystemRefused(f"could not list table inet {table}: {' '.join(error.split())}")
        return text

    def list_table(self, table: str) -> dict[str, Any] | None:
        """The live `inet <table>` as libnftables JSON, or None when there is no such table.

        The table object carries "flags" (a sorted list), "comment" and "program" (the process
        holding a `flags owner` table). libnftables 1.0.6 gets the first two wrong in JSON (see
        table_header), so they are read from the kernel over netlink; the program, only for a
        table with `flags owner`, from the text listing, which names it as nft does.
        """
        header = self._header(table)
        if header is None:
            return None
        what = f"table inet {table}"
        if header["flags"]:
            # The JSON of the table object itself is broken by its flags (see table_header):
            # list its contents object by object instead.
            items = [{"table": {"family": "inet", "name": table}}]
            for kind in ("sets", "maps", "counters", "chains"):
                listed = self._listing({kind: {"family": "inet"}}, what) or {"nftables": []}
                items += [i for i in listed["nftables"] if next(iter(i.values())).get("table") == table]
            for chain in [i["chain"]["name"] for i in items if "chain" in i]:
                listed = self._listing({"chain": {"family": "inet", "table": table, "name": chain}}, what)
                items += [i for i in (listed or {"nftables": []})["nftables"] if "rule" in i]
            listing: dict[str, Any] | None = {"nftables": items}
        else:
            listing = self._listing({"table": {"family": "inet", "name": table}}, what)
        if listing is None:
            return None  # deleted between the two listings
        for item in listing["nftables"]:
            if "table" in item:
                item["table"].update(header)
        return listing

    def _header(self, table: str) -> dict[str, Any] | None:
        """The table's flags, comment and owning program; None when there is no such table."""
        from nftredir import netlink_table

        try:
            attributes = netlink_table.read_table("inet", table)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SystemRefused(f"could not read table inet {table} over netlink: {exc.strerror or exc}") from None
        if attributes.flags & netlink_table.OWNER:
            text = self.table_text(table)
            return None if text is None else table_header(text)
        return {"flags": attributes.flag_names, "comment": attributes.comment, "program": None}

    def list_ruleset(self) -> dict[str, Any]:
        """Every table of the namespace, every family, with its chains, rules and named
        counters, as libnftables JSON items (metainfo first, then the tables): for doctor.

        Not one JSON `list ruleset`: libnftables 1.0.6 prints a table's flags in JSON from freed
        memory (see table_header), which cuts that whole listing short as soon as any table in
        the namespace has flags. So the tables come from the text listing, and the rest from
        JSON listings that hold no table object.
        """
        rc, text, error = self._run_text("list tables")
        if rc != 0:
            raise SystemRefused(f"could not list the tables: {' '.join(error.split())}")
        tables = [line.split()[1:3] for line in text.splitlines() if line.startswith("table ")]
        chains = self._listing({"chains": {}}, "the chains") or {"nftables": []}
        counters = self._listing({"counters": {}}, "the counters") or {"nftables": []}
        items = [*chains["nftables"][:1], *({"table": {"family": f, "name": n}} for f, n in tables)]
        for item in chains["nftables"]:
            if "chain" in item:
                ref = {key: item["chain"][key] for key in ("family", "table", "name")}
                listed = self._listing({"chain": ref}, f"chain {' '.join(ref.values())}") or {"nftables": []}
                items += [i for i in listed["nftables"] if "chain" in i or "rule" in i]
        return {"nftables": items + [i for i in counters["nftables"] if "counter" in i]}

    def list_chains(self) -> list[dict[str, Any]]:
        """Every chain in the namespace, of every family and table (JSON chain objects)."""
        listed = self._listing({"chains": {}}, "the chains") or {"nftables": []}
        return [item["chain"] for item in listed["nftables"] if "chain" in item]
