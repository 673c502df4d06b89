"""The floor for any Python tool: import the libnftables binding, apply a JSON batch, exit.

    python3 bench/floor.py BATCH.json [MODULE ...]

BATCH.json is `nftredir render --format json` for the same configuration, so this sends
exactly what `nftredir apply` sends, with nothing else: no CLI, no validation, no templates.
Each MODULE is imported first: `typer jinja2` makes the floor of any tool on nftredir's stack.
"""

import importlib
import json
import sys

for module in sys.argv[2:]:
    importlib.import_module(module)

import nftables  # noqa: E402

nft = nftables.Nftables()
with open(sys.argv[1], encoding="utf-8") as f:
    batch = json.load(f)
rc, _out, err = nft.json_cmd(batch)
if rc != 0:
    sys.exit(f"floor: libnftables refused the batch: {err}")
