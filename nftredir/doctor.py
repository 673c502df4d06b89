"""`nftredir doctor`: what in this host or namespace stands between the ruleset and a redirect.

Each check returns a `Finding` (plain data): ok, warning (worth knowing, does not fail) or
problem (the redirect is, or is about to be, broken), with what to do about it; "skipped"
when a check could not run (say, without CAP_NET_ADMIN), and the finding says why. The checks
read the system; the judgements over what they read (`mesh_iptables`, `nftredir_like`,
`redirecting_chains`, `version_skew`, ...) are pure functions over libnftables JSON, so they are
tested with captured listings as well as for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nftredir.config import Config

OK, WARNING, PROBLEM, SKIPPED = "ok", "warning", "problem", "skipped"

# Chain-name prefixes of the meshes' iptables init containers (FSM, OSM, Istio, Linkerd, Kuma).
MESH_CHAIN_PREFIXES = {
    "FSM_PROXY_": "Flomesh Service Mesh (FSM)",
    "OSM_PROXY_": "Open Service Mesh (OSM)",
    "PROXY_INIT_": "Linkerd (proxy-init)",
    "ISTIO_": "Istio",
    "KUMA_": "Kuma",
    "PROXY_": "OSM or an older FSM",
}
# nftredir's own chains (templates/ruleset.j2): a table holding them is a copy of nftredir's.
NFTREDIR_CHAINS = frozenset({"PROXY_INBOUND", "PROXY_IN_REDIRECT", "PROXY_OUTPUT", "PROXY_REDIRECT"})
_REDIRECTING = ("redirect", "dnat", "tproxy", "queue")  # statements that send a packet elsewhere
# iptables-nft writes its NAT targets as xtables targets, which libnftables' JSON shows as such.
_REDIRECTING_XT = ("REDIRECT", "DNAT", "TPROXY", "NFQUEUE")


def _redirects(expr: dict[str, Any]) -> bool:
    xt = expr.get("xt")
    if isinstance(xt, dict):
        return xt.get("type") == "target" and xt.get("name") in _REDIRECTING_XT
    return any(key in expr for key in _REDIRECTING)
_DIFF_LINES = 30  # of the unified diff, in drift's details
SCRATCH_TABLE = "nftredir_doctor"  # dry runs only: never committed


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  # ok, warning, problem, skipped
    summary: str
    advice: str | None = None  # what to do, for a warning or a problem
    details: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ kernel features


def _table() -> dict[str, Any]:
    return {"add": {"table": {"family": "inet", "name": SCRATCH_TABLE}}}


def _chain(name: str, hook: str | None = None, kind: str = "nat") -> dict[str, Any]:
    chain: dict[str, Any] = {"family": "inet", "table": SCRATCH_TABLE, "name": name}
    if hook:
        chain.update(type=kind, hook=hook, prio=-100, policy="accept")
    return {"add": {"chain": chain}}


def _rule(chain: str, *expr: dict[str, Any], comment: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"family": "inet", "table": SCRATCH_TABLE, "chain": chain, "expr": list(expr)}
    if comment is not None:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _match(key: str, value: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


# What the ruleset uses, each alone, so a refusal names the feature (checked by dry runs).
FEATURES: dict[str, list[dict[str, Any]]] = {
    "inet nat chains": [_table(), _chain("pre", "prerouting"), _chain("out", "output")],
    "meta skuid": [_table(), _chain("c"), _rule("c", _match("skuid", 1500), {"return": None})],
    "interval sets": [
        _table(),
        {"add": {"set": {"family": "inet", "table": SCRATCH_TABLE, "name": "s", "type": "ipv4_addr",
                         "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}},
    ],
    "redirect": [_table(), _chain("out", "output"), _rule("out", _match("l4proto", "tcp"), {"redirect": {"port": 15001}})],
    "dnat": [_table(), _chain("out", "output"),
             _rule("out", _match("nfproto", "ipv4"), {"dnat": {"family": "ip", "addr": "10.0.0.1"}})],
    "comments": [_table(), _chain("c"), _rule("c", {"counter": None}, comment="nftredir doctor")],
}


def _dry_run(kernel, commands: list[dict[str, Any]]) -> str | None:
    """None when the kernel accepts the batch (nothing is committed), else its message."""
    from nftredir.errors import SystemRefused

    try:
        kernel.send({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}, dry_run=True)
    except SystemRefused as exc:
        return str(exc)
    return None


def kernel_findings(kernel, batch: dict[str, Any], features: dict[str, list[dict[str, Any]]] = FEATURES) -> list[Finding]:
    """The real batch and each feature alone, dry-run by the kernel."""
    refused = _dry_run(kernel, batch["nftables"])
    findings = [
        Finding("kernel-batch", OK, "the kernel accepts the ruleset these options apply (dry run)")
        if refused is None
        else Finding("kernel-batch", PROBLEM, "the kernel refuses the ruleset these options apply",
                     "see which feature below is missing: the node's kernel needs it (nf_tables, nft_nat, nft_redir)",
                     [refused])
    ]
    for feature, commands in features.items():
        error = _dry_run(kernel, commands)
        name = "kernel-feature: " + feature
        findings.append(
            Finding(name, OK, f"the kernel supports {feature}")
            if error is None
            else Finding(name, PROBLEM, f"the kernel refuses {feature}",
                         f"the node's kernel lacks {feature}: enable it (a kernel with nf_tables NAT, as any distribution's)",
                         [error])
        )
    return findings


# ------------------------------------------------------------------------------ the ruleset


def _objects(listing: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item[kind] for item in listing.get("nftables", []) if kind in item]


def mesh_of(chain: str) -> str | None:
    """The mesh whose iptables init container names its chains so, if any."""
    return next((mesh for prefix, mesh in MESH_CHAIN_PREFIXES.items() if chain.startswith(prefix)), None)


def mesh_iptables(listing: dict[str, Any]) -> Finding:
    """iptables-nft rules of a mesh (FSM, OSM, Istio, Linkerd, Kuma): they redirect too."""
    found: dict[tuple[str, str], list[str]] = {}
    meshes: set[str] = set()
    for chain in _objects(listing, "chain"):
        if chain.get("family") not in ("ip", "ip6"):
            continue
        mesh = mesh_of(chain["name"])
        if mesh:
            found.setdefault((chain["family"], chain["table"]), []).append(chain["name"])
            meshes.add(mesh)
    if not found:
        return Finding("mesh-iptables", OK, "no iptables rules of a service mesh (FSM_PROXY_*, PROXY_*, ISTIO_*, PROXY_INIT_*, ...)")
    details = [f"table {family} {table}: chains {', '.join(chains)}" for (family, table), chains in found.items()]
    removal = "; ".join(f"iptables-nft -t {table} -F && iptables-nft -t {table} -X" if family == "ip"
                        else f"ip6tables-nft -t {table} -F && ip6tables-nft -t {table} -X" for family, table in found)
    return Finding(
        "mesh-iptables", PROBLEM,
        f"iptables rules of {', '.join(sorted(meshes))} are loaded beside nftredir's table: they redirect too",
        f"a leftover from before the migration to nftredir: remove them ({removal}), or stop the other init container",
        details,
    )


def _rule_text(rule: dict[str, Any]) -> str:
    """The rule in nft syntax; iptables-nft's xtables targets by name (libnftables JSON hides their arguments)."""
    from nftredir.model import canonical_expressions
    from nftredir.nft_text import expression_text

    def text(expr: Any) -> str:
        xt = expr.get("xt") if isinstance(expr, dict) else None
        return f"xt {xt.get('type')} {xt.get('name')}" if isinstance(xt, dict) else expression_text(expr)

    return " ".join(text(expr) for expr in canonical_expressions(list(rule.get("expr", []))))


def _reachable(table_chains: dict[str, list[dict[str, Any]]], start: str) -> list[str]:
    """`start` and every chain it jumps or goes to, in the order met."""
    seen, todo = [start], [start]
    while todo:
        for rule in table_chains.get(todo.pop(), []):
            for expr in rule.get("expr", []):
                target = next((expr[v]["target"] for v in ("jump", "goto") if isinstance(expr.get(v), dict)), None)
                if target and target not in seen:
                    seen.append(target)
                    todo.append(target)
    return seen


def redirecting_chains(listing: dict[str, Any], own_table: str) -> list[Finding]:
    """Other nat base chains on nftredir's hooks, and what they do (a redirect is a problem)."""
    from nftredir.inventory import foreign_nat_chains

    chains = _objects(listing, "chain")
    rules: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for rule in _objects(listing, "rule"):
        rules.setdefault((rule["family"], rule["table"]), {}).setdefault(rule["chain"], []).append(rule)
    foreign = foreign_nat_chains(chains, own_table)
    if not foreign:
        return [Finding("other-nat-chains", OK, "no other nat chain on the prerouting or output hook")]
    findings = []
    for base in foreign:
        table_rules = rules.get((base["family"], base["table"]), {})
        what = []
        redirects = False
        for name in _reachable(table_rules, base["chain"]):
            for rule in table_rules.get(name, []):
                if any(_redirects(expr) for expr in rule.get("expr", [])):
                    redirects = True
                    what.append(f"{name}: {_rule_text(rule)}")
        where = f"{base['family']} {base['table']} {base['chain']} (hook {base['hook']}, priority {base['prio']})"
        count = sum(len(table_rules.get(n, [])) for n in _reachable(table_rules, base["chain"]))
        if redirects:
            findings.append(Finding(
                "other-nat-chains", PROBLEM, f"nat chain {where} redirects traffic too",
                f"whichever nat chain runs first decides; remove it (nft delete table {base['family']} {base['table']}) "
                "unless you mean it", what))
        else:
            findings.append(Finding(
                "other-nat-chains", WARNING, f"nat chain {where}: {count} rule(s), none redirects",
                "harmless as it stands; a redirect added there would compete with nftredir's"))
    return findings


def nftredir_like(listing: dict[str, Any], own_table: str) -> Finding:
    """A second nftredir table under another name: it redirects as well (and differently, maybe).

    A copy carries nftredir's mark or, in family inet, at least two of nftredir's chains (a
    problem); a table only named like nftredir's (`nftredir2`, empty say) is a warning.
    """
    from nftredir.ownership import MARK

    by_table: dict[tuple[str, str], set[str]] = {(t["family"], t["name"]): set() for t in _objects(listing, "table")}
    for chain in _objects(listing, "chain"):
        by_table.setdefault((chain["family"], chain["table"]), set()).add(chain["name"])
    marked = {(c["family"], c["table"]) for c in _objects(listing, "counter") if c.get("name") == MARK}
    copies, namesakes = [], []
    for key in dict.fromkeys([*by_table, *marked]):
        family, table = key
        if key == ("inet", own_table):
            continue
        chains = sorted(by_table.get(key, set()) & NFTREDIR_CHAINS)
        if key in marked or family == "inet" and len(chains) >= 2:
            why = [*([f"the {MARK} mark"] if key in marked else []), *([f"chains {', '.join(chains)}"] if chains else [])]
            copies.append(f"table {family} {table} ({', '.join(why)})")
        elif table.startswith("nftredir"):
            namesakes.append(f"table {family} {table} (named like nftredir's, without its chains)")
    remove = "remove it with `nftredir remove --table NAME` (or nft delete table FAMILY NAME)"
    if copies:
        return Finding("other-nftredir", PROBLEM, f"{len(copies)} other table(s) hold nftredir's chains",
                       f"an apply with another --table (or NFTREDIR_TABLE) left it: {remove}", copies + namesakes)
    if namesakes:
        return Finding("other-nftredir", WARNING, f"{len(namesakes)} other table(s) are named like nftredir's",
                       f"nothing of nftredir's is in it; if nothing else uses it, {remove}", namesakes)
    return Finding("other-nftredir", OK, f"no second nftredir table besides inet {own_table}")


# ------------------------------------------------------------------------------ versions


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups(default="0")) if match else None


def nft_binary_version(run: Callable[[list[str]], str] | None = None) -> tuple[str, str] | None:
    """(path, version text) of the `nft` on PATH, or None when there is none."""
    path = shutil.which("nft")
    if path is None:
        return None
    try:
        output = run([path, "--version"]) if run else subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return path, "unknown (it did not run)"
    return path, output.strip()


def version_skew(library: str | None, binary: tuple[str, str] | None) -> Finding:
    if binary is None:
        return Finding("nft-version", OK, f"libnftables {library or 'unknown'}; no nft on PATH to differ from it")
    path, text = binary
    if library is None:
        return Finding("nft-version", SKIPPED, f"{path} is {text}; libnftables' version comes from a listing, "
                       "which needs CAP_NET_ADMIN")
    if parse_version(text) is None:
        return Finding("nft-version", WARNING, f"could not compare libnftables {library} with {path} ({text})")
    if parse_version(text)[:3] == parse_version(library)[:3]:
        return Finding("nft-version", OK, f"libnftables {library} and {path} ({text}) are the same version")
    return Finding(
        "nft-version", WARNING, f"nftredir uses libnftables {library}, {path} is {text}",
        "tables written by the newer one may list wrongly, or crash the older one (nft >= 1.1.2 set userdata "
        "crashes older nft): use the same nftables on the host and in the image where you can")


def table_writers(stamps: dict[str, Any], library: str | None) -> Finding:
    """Tables stamped by a newer nft than our libnftables (stamps: 'family name' -> Stamp|None|error)."""
    ours = parse_version(library or "")
    newer = [f"table {name}: written by nft {stamp}" for name, stamp in stamps.items()
             if stamp is not None and not isinstance(stamp, str) and ours and stamp.version[:3] > ours[:3]]
    unread = [f"table {name}: {stamp}" for name, stamp in stamps.items() if isinstance(stamp, str)]
    stamped = [f"table {name}: written by nft {stamp}" for name, stamp in stamps.items()
               if stamp is not None and not isinstance(stamp, str)]
    if newer:
        return Finding(
            "table-writer", WARNING, f"{len(newer)} table(s) were written by a newer nft than libnftables {library}",
            "this libnftables may not list or compare them correctly; the newer userspace on this node wrote them",
            newer)
    summary = (f"no table was written by a newer nft than libnftables {library}" if ours
               else "libnftables' version is unknown: cannot compare")
    return Finding("table-writer", OK if ours and not unread else WARNING, summary, None, stamped + unread)


# ------------------------------------------------------------------------------ the checks


def privilege() -> Finding:
    from nftredir.kernel import has_net_admin

    root = os.geteuid() == 0
    if not has_net_admin():
        return Finding("privilege", PROBLEM, f"no CAP_NET_ADMIN (UID {os.geteuid()})",
                       "run as root with CAP_NET_ADMIN in the pod's network namespace "
                       "(FSM's init container: runAsUser 0, capabilities add NET_ADMIN)")
    from nftredir.validate import switchable

    who = "root" if root else f"UID {os.geteuid()}"
    if not switchable():
        return Finding("privilege", WARNING, f"{who} with CAP_NET_ADMIN, without CAP_SETUID/CAP_SETGID",
                       "apply, diff and doctor work; validate can only connect as this UID, so it skips the checks "
                       "that need the proxy's or an app's UID: add SETUID and SETGID to run them all")
    return Finding("privilege", OK, f"{who} with CAP_NET_ADMIN, CAP_SETUID and CAP_SETGID")


def binding() -> tuple[Finding, Any]:
    """The libnftables binding and library: (finding, an Nftables or None)."""
    from nftredir.binding import BindingMissing, open_nftables

    try:
        nft = open_nftables()
    except BindingMissing as missing:
        return Finding("libnftables", PROBLEM, missing.problem, missing.remedy), None
    import nftables

    return Finding("libnftables", OK, f"binding {os.path.dirname(nftables.__file__)}"), nft


def json_support(nft) -> Finding:
    nft.set_json_output(True)
    rc, _, error = nft.cmd('{"nftables": [{"metainfo": {"json_schema_version": 1}}]}')
    if rc != 0:
        return Finding("json", PROBLEM, "libnftables does not take JSON (built without JSON support?)",
                       "install a libnftables built --with-json (Debian's, Fedora's and RHEL's are)",
                       [" ".join(error.split())])
    return Finding("json", OK, "libnftables takes and gives JSON")


def library_version(listing: dict[str, Any]) -> str | None:
    """libnftables' own version, from the metainfo it puts at the head of every JSON listing."""
    meta = next(iter(_objects(listing, "metainfo")), {})
    return meta.get("version")


def drift(listing_table: dict[str, Any] | None, batch: dict[str, Any], table: str) -> Finding:
    from nftredir import diff

    result = diff.drift(listing_table, batch, table)
    if listing_table is None:
        return Finding("drift", PROBLEM, f"table inet {table} is not installed: nothing is redirected",
                       "run nftredir apply with these options")
    if result.identical:
        return Finding("drift", OK, f"table inet {table} matches these options")
    lines = result.text().splitlines()
    shown = lines if len(lines) <= _DIFF_LINES else [*lines[:_DIFF_LINES], f"... {len(lines) - _DIFF_LINES} more lines"]
    return Finding("drift", PROBLEM, f"table inet {table} differs from these options ({len(result.differences)} difference(s))",
                   "see nftredir diff; nftredir apply puts it right", shown)


def legacy_findings(tables: Iterable[Any]) -> Finding:
    """Legacy xtables tables (nftredir.legacy.LegacyTable): rules that redirect are a problem."""
    tables = list(tables)
    if not tables:
        return Finding("legacy-xtables", OK, "no legacy iptables tables in this namespace")
    details = []
    for t in tables:
        line = f"{t.family} {t.name}: " + ("?" if t.rules is None else f"{t.rules} entr{'y' if t.rules == 1 else 'ies'} beyond the empty table")
        if t.chains:
            line += f"; chains {', '.join(t.chains)}"
        if t.targets:
            line += f"; targets {', '.join(t.targets)}"
        details.append(line)
    meshes = sorted({m for t in tables for m in map(mesh_of, t.chains) if m})
    redirecting = [t for t in tables if t.name == "nat" and t.rules or set(t.targets) & set(_REDIRECTING_XT)]
    if redirecting or meshes:
        who = f" of {', '.join(meshes)}" if meshes else ""
        families = sorted({t.family for t in redirecting or tables})
        tools = " and ".join(f"{'ip6tables' if f == 'ip6' else 'iptables'}-legacy-save" for f in families)
        return Finding("legacy-xtables", PROBLEM, f"legacy iptables rules{who} redirect before or after nftredir's",
                       f"{tools} {'show' if len(families) > 1 else 'shows'} them; remove them (-F and -X in each table), "
                       "or stop what loads them", details)
    if any(t.rules or t.rules is None and t.family != "arp" for t in tables):
        return Finding("legacy-xtables", WARNING, "legacy iptables tables hold rules in this namespace",
                       "legacy and nf_tables rules both apply; prefer one (iptables-legacy-save shows them)", details)
    return Finding("legacy-xtables", OK, "legacy iptables tables exist but are empty", None, details)


def doctor(config: Config, batch: dict[str, Any]) -> list[Finding]:
    """Every check, in order; the kernel is only asked (dry runs and listings), never changed."""
    from nftredir import legacy, netlink_table
    from nftredir.errors import SystemRefused
    from nftredir.kernel import Kernel

    findings = [privilege()]
    privileged = findings[0].status != PROBLEM
    bound, nft = binding()
    findings.append(bound)
    findings.append(json_support(nft) if nft else Finding("json", SKIPPED, "no libnftables"))
    needs = "needs CAP_NET_ADMIN" if not privileged else "needs libnftables with JSON"
    kernel = None
    if privileged and nft is not None and findings[-1].status == OK:
        try:
            kernel = Kernel(write=False)
        except SystemRefused as exc:
            needs = str(exc)
    listing: dict[str, Any] | None = None
    library = None
    if kernel is not None:
        listing = kernel.list_ruleset()
        library = library_version(listing)
        findings[1] = Finding("libnftables", OK, f"libnftables {library}, binding {findings[1].summary.split(' ', 1)[1]}")
        findings += kernel_findings(kernel, batch)
        findings.append(drift(kernel.list_table(config.table), batch, config.table))
        findings.append(nftredir_like(listing, config.table))
        findings.append(mesh_iptables(listing))
        findings += redirecting_chains(listing, config.table)
    else:
        for name in ("kernel-batch", *("kernel-feature: " + f for f in FEATURES), "drift", "other-nftredir",
                     "mesh-iptables", "other-nat-chains"):
            findings.append(Finding(name, SKIPPED, needs))
    try:
        findings.append(legacy_findings(legacy.tables()))
    except OSError as exc:
        findings.append(Finding("legacy-xtables", SKIPPED, f"could not read /proc/net: {exc}"))
    findings.append(version_skew(library, nft_binary_version()))
    if listing is not None:
        stamps: dict[str, Any] = {}
        for table in _objects(listing, "table"):
            key = f"{table['family']} {table['name']}"
            try:
                stamps[key] = netlink_table.table_stamp(table["family"], table["name"])
            except OSError as exc:
                stamps[key] = f"could not read its userdata ({exc.strerror})"
        findings.append(table_writers(stamps, library))
    else:
        findings.append(Finding("table-writer", SKIPPED, needs))
    return findings


def report(findings: list[Finding]) -> dict[str, Any]:
    counts = {s: sum(f.status == s for f in findings) for s in (OK, WARNING, PROBLEM, SKIPPED)}
    return {"ok": counts[PROBLEM] == 0, "counts": counts, "checks": [asdict(f) for f in findings]}


def format_text(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.status.upper():7} {f.name}: {f.summary}")
        lines += [f"          {line}" for line in f.details]
        if f.advice and f.status in (WARNING, PROBLEM):
            lines.append(f"          -> {f.advice}")
    counts = report(findings)["counts"]
    verdict = "no problems" if not counts[PROBLEM] else f"{counts[PROBLEM]} problem(s)"
    lines.append(f"doctor: {verdict}, {counts[WARNING]} warning(s), {counts[SKIPPED]} skipped")
    return "\n".join(lines) + "\n"
