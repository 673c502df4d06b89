"""FSM's init-container command for a Config, exactly as its injector writes it.

pkg/injector/iptables.go GenerateIptablesCommands: `iptables-restore --noflush <<EOF`, the
`# FSM sidecar interception rules` comment, the rules from `*nat` to `COMMIT` (our generator:
`render --format iptables`), `EOF`; the podip DNAT names `$POD_IP` for the shell to expand.
Other meshes' scripts differ from FSM's only in their chain names (SCHEMES).
"""

from __future__ import annotations

import re

from nftredir.config import Config
from nftredir.render import render
from nftredir.sources.mesh_script import SCHEMES

_FSM_CHAINS = SCHEMES["FSM"]


def rename_chains(text: str, scheme: str) -> str:
    """FSM's script with another mesh's chain names."""
    names = {_FSM_CHAINS[role]: chain for role, chain in SCHEMES[scheme].items()}
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: names[m.group(1)], text)


def fsm_script(config: Config, scheme: str = "FSM") -> str:
    """The heredoc's body: FSM's comment, then the rules, `$POD_IP` where FSM writes it."""
    text = render(config, "iptables")
    if config.local_proxy_mode == "podip":
        text = text.replace(f"--to-destination {config.pod_ip}\n", "--to-destination $POD_IP\n")
    return "# FSM sidecar interception rules\n" + rename_chains(text, scheme)


def fsm_command(config: Config, scheme: str = "FSM") -> str:
    """The `-c` argument of FSM's init container: `/bin/sh -c` runs it with POD_IP set."""
    return f"iptables-restore --noflush <<EOF\n{fsm_script(config, scheme)}EOF\n"
