"""A mesh's init-container script (FSM's, OSM's) recognised as a configuration layer.

FSM's injector does not pass options to its init container: it writes them into an
`iptables-restore --noflush` script (pkg/injector/iptables.go). `read_mesh_script` reads such a
script back into `{option name: [Item, ...]}`, each Item naming the line it came from, from
what the rules mean (which chain, which target, which matches), not from where they stand.

Then it checks its reading: FSM's script for the configuration it read (`render --format
iptables`) must make the same rules as the input, chain by chain. Order matters only where it
can change a verdict, so each chain is compared as its runs of rules with the same target, a
run as the set of what its rules match (a multiport list is one match per port). A script
that does anything else (an exclusion in one direction only, a missing bypass rule, a changed
static rule, a rule out of place) is refused at the line that differs: "it applied" then means
"the same redirection this script would have made".
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from nftredir.config import Config, Item, build_config
from nftredir.errors import ConfigError
from nftredir.sources.iptables_restore import Match, Rule, Script, parse, refuse

Layer = dict[str, list[Item]]

# The chain names each mesh's script uses, by role. FSM's are render --format iptables's.
SCHEMES: dict[str, dict[str, str]] = {
    "FSM": {"inbound": "FSM_PROXY_INBOUND", "in_redirect": "FSM_PROXY_IN_REDIRECT",
            "outbound": "FSM_PROXY_OUTBOUND", "out_redirect": "FSM_PROXY_OUT_REDIRECT"},
    "OSM": {"inbound": "OSM_PROXY_INBOUND", "in_redirect": "OSM_PROXY_IN_REDIRECT",
            "outbound": "OSM_PROXY_OUTBOUND", "out_redirect": "OSM_PROXY_OUT_REDIRECT"},
    "OSM's init-iptables.sh": {"inbound": "PROXY_INBOUND", "in_redirect": "PROXY_IN_REDIRECT",
                               "outbound": "PROXY_OUTPUT", "out_redirect": "PROXY_REDIRECT"},
}
BUILTIN_ROLES = {"PREROUTING": "prerouting", "OUTPUT": "output"}
ROLES = ("prerouting", "output", "inbound", "in_redirect", "outbound", "out_redirect")
LOCALHOST = "127.0.0.1/32"

# Every option a script decides: the environment may not override these (see the CLI).
SCRIPT_OPTIONS = (
    "outbound-ip-range-exclusion-list", "outbound-ip-range-inclusion-list", "outbound-port-exclusion-list",
    "inbound-port-exclusion-list", "network-interface-exclusion-list", "local-proxy-mode", "pod-ip",
    "proxy-uid", "proxy-admin-port", "proxy-outbound-port", "proxy-inbound-port", "prometheus-port",
    "probe-ports", "healthcheck-port",
)
_LISTS = SCRIPT_OPTIONS[:5] + ("probe-ports",)


class Chains(NamedTuple):
    """A parsed script's rules by role, and the chain names it used for each role."""

    script: Script
    rules: dict[str, list[Rule]]
    names: dict[str, str]  # role -> the script's chain name


def read_mesh_script(data: bytes, name: str) -> Layer:
    """The configuration a mesh's iptables-restore script states; ConfigError if the script
    is not exactly FSM's script for that configuration (with any scheme's chain names)."""
    chains = _chains(parse(data, name))
    layer = _derive(chains)
    _check(chains, layer, data)
    return layer


def read_input(path: str | None) -> tuple[bytes, str]:
    """The script's bytes and the name messages give it: a file, or stdin for None or '-'
    (both capped as every file nftredir reads is)."""
    from nftredir.sources.documents import display_path, read_bytes

    if path in (None, "-"):
        if sys.stdin is None:
            raise ConfigError("<stdin>", "", "standard input is closed: give the script as FILE or on stdin")
        return read_bytes("<stdin>", sys.stdin.buffer), "<stdin>"
    return read_bytes(path), display_path(path)


def script_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """The Config `nftredir iptables-restore` applies: the script's options, and from the
    other sources (environment, files they name) only options a script cannot state, such as
    the table. An option the script states and the environment sets too is refused: the
    script must mean what it says. POD_IP is not read: the shell already expanded it."""
    from nftredir.sources import gather

    layer = read_mesh_script(*read_input(path))
    rest = gather({}, {name: value for name, value in environ.items() if name != "POD_IP"})
    for option, items in rest.items():
        if option in SCRIPT_OPTIONS:
            source = items[0].source if items else option
            raise ConfigError(source, ",".join(item.text for item in items),
                              f"{option} is stated by the iptables-restore script; unset it")
    return build_config({**rest, **layer})


def _chains(script: Script) -> Chains:
    declared = list(script.declared)
    for chain in declared:
        if not any(chain in scheme.values() for scheme in SCHEMES.values()):
            raise refuse(*script.declared[chain], f"{chain!r} is not a chain of FSM's or OSM's redirection script")
    scheme = next((s for s in SCHEMES.values() if set(s.values()) == set(declared)), None)
    if scheme is None:
        near = max(SCHEMES.values(), key=lambda s: len(set(s.values()) & set(declared)))
        missing = [chain for chain in near.values() if chain not in declared]
        stray = [chain for chain in declared if chain not in near.values()]
        why = f"mixes chain names of different meshes ({', '.join(stray)})" if stray else f"does not declare {', '.join(missing)}"
        raise refuse(*script.table, f"the script {why}: a mesh's script declares its four chains")  # type: ignore[misc]
    role_of = {**BUILTIN_ROLES, **{chain: role for role, chain in scheme.items()}}
    rules: dict[str, list[Rule]] = {role: [] for role in ROLES}
    for chain, chain_rules in script.chains.items():
        if chain not in role_of:
            rule = chain_rules[0]
            raise refuse(rule.where, rule.text, f"rules in {chain} are not part of a mesh's redirection")
        rules[role_of[chain]] = chain_rules
    return Chains(script, rules, {role: chain for chain, role in role_of.items()})


def _role(chains: Chains, rule: Rule) -> str:
    """A rule's target with a jump named by role, so any scheme's names compare equal."""
    for role, chain in chains.names.items():
        if rule.target.name == chain:
            return role
    return rule.target.name


def _items(values: Iterable[object], rule: Rule) -> list[Item]:
    return [Item(str(value), rule.where) for value in values]


def _derive(chains: Chains) -> Layer:
    """What the rules state, option by option. Values that are missing stay missing (FSM's
    default is then rendered, and `_check` names the rule the script lacks)."""
    rules = chains.rules
    layer: Layer = {option: [] for option in _LISTS}

    def returns(role: str, match: Match | None = None) -> list[Rule]:
        return [r for r in rules[role] if r.target.name == "RETURN" and (match is None or r.match == match)]

    def one_multiport(role: str, option: str) -> None:
        lists = [r for r in returns(role, Match(proto="tcp")) if r.multiport]
        for extra in lists[1:]:
            raise refuse(extra.where, extra.text, f"a second multiport exclusion in {extra.chain}: FSM writes one")
        if lists:
            layer[option] = _items(lists[0].dports, lists[0])

    # Inbound: the multiport list is the pod's exclusions; single --dport returns are FSM's
    # static ones, whose order is the only thing that names them (Prometheus, probes, healthcheck).
    one_multiport("inbound", "inbound-port-exclusion-list")
    static = [r for r in returns("inbound", Match(proto="tcp")) if not r.multiport and len(r.dports) == 1]
    if static:
        layer["prometheus-port"] = _items(static[0].dports, static[0])
    if len(static) >= 2:
        layer["healthcheck-port"] = _items(static[-1].dports, static[-1])
        layer["probe-ports"] = [item for r in static[1:-1] for item in _items(r.dports, r)]
    for role, option in (("in_redirect", "proxy-inbound-port"), ("out_redirect", "proxy-outbound-port")):
        redirect = next((r for r in rules[role] if r.target.name == "REDIRECT"), None)
        if redirect is not None:
            layer[option] = _items([redirect.target.port], redirect)
    admin = next((r for r in rules["out_redirect"] if r.target.name == "ACCEPT" and len(r.dports) == 1), None)
    if admin is not None:
        layer["proxy-admin-port"] = _items(admin.dports, admin)

    # Outbound: the sidecar's UID from its first owner match, then the lists.
    owner = next((r for r in rules["outbound"] if r.match.uid is not None), None)
    if owner is not None:
        layer["proxy-uid"] = _items([owner.match.uid], owner)
    layer["network-interface-exclusion-list"] = [
        item for r in returns("outbound") if r.match == Match(oif=r.match.oif) and r.match.oif for item in _items([r.match.oif], r)
    ]
    destinations = [r for r in returns("outbound") if r.match == Match(dst=r.match.dst) and r.match.dst]
    # FSM's static `-d 127.0.0.1/32 -j RETURN` comes first; a later one is an exclusion.
    static_localhost = next((r for r in destinations if str(r.match.dst) == LOCALHOST), None)
    layer["outbound-ip-range-exclusion-list"] = [
        item for r in destinations if r is not static_localhost for item in _items([r.match.dst], r)
    ]
    one_multiport("outbound", "outbound-port-exclusion-list")
    layer["outbound-ip-range-inclusion-list"] = [
        item for r in rules["outbound"]
        if _role(chains, r) == "out_redirect" and r.match == Match(dst=r.match.dst) and r.match.dst
        for item in _items([r.match.dst], r)
    ]

    dnat = next((r for r in rules["output"] if r.target.name == "DNAT"), None)
    if dnat is not None:
        layer["local-proxy-mode"] = [Item("podip", dnat.where)]
        layer["pod-ip"] = _items([dnat.target.address], dnat)
    else:
        layer["local-proxy-mode"] = [Item("localhost", f"{chains.script.name}: no podip DNAT rule in OUTPUT")]
    return layer


class Run(NamedTuple):
    """Consecutive rules with the same target: their order among themselves changes nothing."""

    target: tuple[object, ...]
    atoms: frozenset[Match]
    rules: list[Rule]


def _runs(chains: Chains, role: str) -> list[Run]:
    runs: list[tuple[tuple[object, ...], set[Match], list[Rule]]] = []
    for rule in chains.rules[role]:
        target = (_role(chains, rule), rule.target.port, rule.target.address)
        if not runs or runs[-1][0] != target:
            runs.append((target, set(), []))
        runs[-1][1].update(rule.atoms())
        runs[-1][2].append(rule)
    return [Run(target, frozenset(atoms), rules) for target, atoms, rules in runs]


def _statements(data: bytes) -> list[bytes]:
    """A script's lines, as they are, but for comments and blank lines (iptables-restore skips both)."""
    return [line for line in data.splitlines() if line.strip() and not line.startswith(b"#")]


def _check(chains: Chains, layer: Layer, data: bytes) -> None:
    """Refuse the script unless FSM's script for `layer` makes the same rules."""
    from nftredir.render import render

    config = build_config(layer)
    try:
        text = render(config, "iptables").encode()
        # FSM's own script, line for line (what its init container runs): the same rules, without
        # parsing 10,000 lines a second time. Any other spelling is compared rule by rule below.
        if _statements(data) == _statements(text):
            return
        expected = _chains(parse(text, "<FSM's script>"))
    except ConfigError as exc:  # a list FSM's own script could not hold
        raise refuse(*chains.script.commit, f"FSM's script cannot state this configuration: {exc.reason}") from None  # type: ignore[misc]
    # The expected rules in the input's own chain names, for messages.
    names = {expected.names[role]: chains.names[role] for role in SCHEMES["FSM"]}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def spelled(rule: Rule) -> str:
        return pattern.sub(lambda m: names[m.group(1)], rule.text)

    for role in ROLES:
        have, want = _runs(chains, role), _runs(expected, role)
        for i in range(max(len(have), len(want))):
            if i >= len(want):
                rule = have[i].rules[0]
                raise refuse(rule.where, rule.text, "FSM's script for the options this script states ends the chain before this rule")
            if i >= len(have) or have[i].target != want[i].target:
                if i < len(have):
                    rule = have[i].rules[0]
                    raise refuse(rule.where, rule.text, f"FSM's script for the options this script states has {spelled(want[i].rules[0])!r} here")
                missing = want[i].rules[0]
                raise refuse(*chains.script.commit, f"the script lacks {spelled(missing)!r}, which FSM's script has for the options it states")  # type: ignore[misc]
            extra = next((r for r in have[i].rules if not set(r.atoms()) <= want[i].atoms), None)
            if extra is not None:
                raise refuse(extra.where, extra.text,
                             "FSM's script for the options this script states has no such rule here "
                             "(an exclusion in one direction only, a changed static rule, or a rule out of place?)")
            missing_atom = next(iter(sorted(want[i].atoms - have[i].atoms, key=repr)), None)
            if missing_atom is not None:
                missing = next(r for r in want[i].rules if missing_atom in r.atoms())
                elsewhere = next((r for r in chains.rules[role] if missing_atom in r.atoms()), None)
                if elsewhere is not None:
                    raise refuse(elsewhere.where, elsewhere.text,
                                 f"out of place: FSM's script has {spelled(missing)!r} where it changes "
                                 "a verdict differently (see docs/fsm-mapping.md for FSM's order)")
                raise refuse(*chains.script.commit, f"the script lacks {spelled(missing)!r}, which FSM's script has for the options it states")  # type: ignore[misc]
