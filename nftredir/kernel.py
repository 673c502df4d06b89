"""The one door to the kernel: libnftables through Debian's python3-nftables binding.

Every change is one JSON batch, so one netlink transaction: the kernel commits all of it or
none of it. Tests swap this module's `Kernel` for their own where they need to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from nftredir.errors import SystemRefused

CAP_NET_ADMIN = 12


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process may change the network namespace's nftables ruleset."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


def describe_command(command: dict[str, Any]) -> str:
    """'add rule inet nftredir PROXY_OUTPUT "comment"' for one command of a batch."""
    (verb, body), = command.items()
    if not isinstance(body, dict):
        return verb
    (kind, obj), = body.items()
    words = [verb, kind, obj.get("family", ""), obj.get("table", obj.get("name", ""))]
    if kind in ("chain", "set"):
        words.append(obj.get("name", ""))
    if kind == "rule":
        words += [obj.get("chain", ""), json.dumps(obj["comment"]) if "comment" in obj else ""]
    return " ".join(str(word) for word in words if word)


class Kernel:
    """libnftables, set up for JSON in and out."""

    def __init__(self, trace: Callable[[str], None] | None = None) -> None:
        """`trace`, when given, is told each batch before it is sent (the CLI's -v)."""
        self._trace = trace
        if not has_net_admin():
            raise SystemRefused(
                "permission denied: changing nftables needs root with CAP_NET_ADMIN in the pod's network namespace"
            )
        try:
            import nftables
        except ImportError:
            raise SystemRefused(
                "the libnftables Python binding is missing: apt-get install python3-nftables, "
                "and create the venv with /usr/bin/python3 -m venv --system-site-packages"
            ) from None
        try:
            self._nft = nftables.Nftables()
        except OSError as exc:
            raise SystemRefused(f"libnftables could not be loaded ({exc}): apt-get install libnftables1") from None
        # With json output on, libnftables also reads its input as JSON (the binding's json_cmd
        # relies on it), so batches go in as JSON text and listings come back as JSON.
        self._nft.set_json_output(True)

    def _run(self, text: str, dry_run: bool) -> tuple[int, str, str]:
        """One JSON batch, as text, through libnftables (checked by the kernel only, with dry_run)."""
        self._nft.set_dry_run(dry_run)
        try:
            return self._nft.cmd(text)  # JSON in, as json output is on (see __init__)
        finally:
            self._nft.set_dry_run(False)

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

    def list_table(self, table: str) -> dict[str, Any] | None:
        """The live `inet <table>` as libnftables JSON, or None when there is no such table."""
        command = {"nftables": [{"list": {"table": {"family": "inet", "name": table}}}]}
        rc, output, error = self._run(json.dumps(command), dry_run=False)
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise SystemRefused(f"could not list table inet {table}: {' '.join(error.split())}")
        return json.loads(output)

    def list_ruleset(self) -> dict[str, Any]:
        """Every table of the namespace, every family, as libnftables JSON (for nftredir doctor)."""
        rc, output, error = self._run(json.dumps({"nftables": [{"list": {"ruleset": None}}]}), dry_run=False)
        if rc != 0:
            raise SystemRefused(f"could not list the ruleset: {' '.join(error.split())}")
        return json.loads(output)


def remove_batch(table: str) -> dict[str, Any]:
    """Deletes `inet <table>`; adding it first makes the delete succeed when it is absent."""
    ref = {"table": {"family": "inet", "name": table}}
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, {"add": ref}, {"delete": ref}]}
