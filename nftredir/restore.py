"""`nftredir iptables-restore`, and its fast path: the image's `iptables-restore`.

FSM's init container runs `/bin/sh -c "iptables-restore --noflush <<EOF ... EOF"` at every pod
start. `nftredir-iptables-restore` (what image/iptables-restore execs) reads the arguments
`nftredir iptables-restore` takes itself and runs the same `restore`, without importing typer
or building its commands (~40 ms of every pod start). Any other argument (`--help`, an unknown
or combined option) goes to the typer command, which explains or refuses it as usual.
"""

from __future__ import annotations

import os
import sys

_FLAGS = {"-n": "noflush", "--noflush": "noflush", "-t": "test", "--test": "test", "-v": "verbose", "--verbose": "verbose"}


def restore(file: str | None, test: bool, verbose: bool) -> None:
    """Apply the script in `file` (stdin when None or '-') as `nftredir apply` would."""
    from nftredir.ownership import refuse_unless_ours
    from nftredir.render import render
    from nftredir.runner import kernel as door, table_source
    from nftredir.sources.mesh_script import script_config

    config = script_config(file, os.environ)
    kernel = door(verbose)
    refuse_unless_ours(kernel, config.table, table_source(config), "replace")
    kernel.send(render(config, "json"), dry_run=test)
    if test:
        print(f"test: the kernel accepted the ruleset for table inet {config.table}; nothing was committed", file=sys.stderr)


def main() -> None:
    from nftredir.runner import run

    argv = sys.argv[1:]
    flags = {_FLAGS.get(arg) for arg in argv if arg.startswith("-") and arg != "-"}
    files = [arg for arg in argv if not arg.startswith("-") or arg == "-"]
    if None in flags or len(files) > 1:
        from nftredir import cli

        sys.argv = ["nftredir", "iptables-restore", *argv]
        cli.main()
    run(lambda: restore(files[0] if files else None, "test" in flags, "verbose" in flags))
