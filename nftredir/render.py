"""Config → ruleset text, through the jinja2 templates in templates/.

`ruleset.j2` holds the rules once; `nft.j2` and `json.j2` give their syntax. The filters here
are the only way a value reaches the output, and each one refuses anything that could be read
as syntax, as a second line of defence behind nftredir.config.

`fsm-iptables.j2` is the other side of the comparison: the `iptables-restore` input FSM's init
container runs for the same Config, for users migrating and as the reference in the tests; with
`--ip-family dual`, followed by its IPv6 counterpart for `ip6tables-restore` (the same template,
with `::1/128` for `127.0.0.1/32` and the IPv6 lists).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from operator import itemgetter, mod
from pathlib import Path
from typing import Any

from nftredir import cidr
from nftredir.cidr import Cidr, dotted_many
from nftredir.config import OPTIONS, Config
from nftredir.errors import ConfigError
from nftredir.ownership import MARK

FORMATS = ("nft", "json", "iptables", "ip6tables")
# In dual mode `render --format iptables` prints both scripts, each after its header line (a
# comment to both tools): the part after IP6TABLES_HEADER is for ip6tables-restore.
IPTABLES_HEADER = "# iptables-restore --noflush"
IP6TABLES_HEADER = "# ip6tables-restore --noflush (the IPv6 counterpart, --ip-family dual)"
# What plays the part of 127.0.0.1 in each family's rules.
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
# The base chains' type, priority and policy: iptables' nat table's priority, as a number because
# nft 1.0.6 refuses `dstnat` on the output hook.
BASE_CHAIN = {"type": "nat", "prio": -100, "policy": "accept"}
# xt_multiport's XT_MULTI_PORTS: iptables refuses a longer --dports list, so FSM's script would fail.
MULTIPORT_MAX = 15
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL_RE = re.compile(r"@?[A-Za-z0-9_.:]+")  # ':' for IPv6 addresses


def _nft_ident(value: str) -> str:
    if not _IDENT_RE.fullmatch(value):
        raise ValueError(f"not an nft identifier: {value!r}")
    return value


def _nft_str(value: str) -> str:
    if any(c == '"' or c == "\\" or not c.isprintable() or not c.isascii() for c in value):
        raise ValueError(f"cannot be quoted for nft: {value!r}")
    return f'"{value}"'


def _nft_symbol(value: object) -> str:
    text = str(int(value)) if isinstance(value, int) else str(value)
    if not _SYMBOL_RE.fullmatch(text):
        raise ValueError(f"not an nft symbol, number or address: {text!r}")
    return text


def _json_elements(values: Sequence[int | Cidr]) -> str:
    """A set's elements (all of one kind: ports, IPv4 or IPv6 ranges) as one JSON list, written
    directly: sets can hold tens of thousands, and every part is an int or an address written
    from ints, which need no escaping."""
    if not values or not isinstance(values[0], Cidr):
        parts = [str(int(value)) for value in values]
    elif values[0].version == 4:  # the bulk case: each step one C-level pass over the values
        formats = map(_JSON_V4.__getitem__, map(itemgetter(1), values))
        parts = map(mod, formats, dotted_many(list(map(itemgetter(0), values))))
    else:
        parts = [f'"{value.address}"' if value.is_host else _JSON_PREFIX % (value.address, value.prefixlen) for value in values]
    return f"[{', '.join(parts)}]"


_JSON_PREFIX = '{"prefix": {"addr": "%s", "len": %d}}'
# An IPv4 element's JSON by prefix length, to be given its address: a /32 is the bare address.
_JSON_V4 = [_JSON_PREFIX.replace("%d", str(length)) for length in range(32)] + ['"%s"']


def _nft_elements(values: Iterable[int | Cidr], per_line: int = 8) -> str:
    """A set's elements as nft writes them, a few per line."""
    texts = [value.address if isinstance(value, Cidr) and value.is_host else str(value) for value in values]
    rows = (", ".join(texts[i : i + per_line]) for i in range(0, len(texts), per_line))
    return ",\n\t\t\t     ".join(rows)


def _ipt_word(value: str) -> str:
    # iptables-restore splits on whitespace and reads '"' and '\\' itself; a lone '!' is negation.
    if not value or value == "!" or any(c in '"\\' or not c.isprintable() or c.isspace() for c in value):
        raise ValueError(f"cannot be one word for iptables-restore: {value!r}")
    return value


def template_dir() -> Path:
    """templates/ beside the package when installed, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "templates"
    return installed if installed.is_dir() else here.parent / "templates"


def cache_dirs() -> list[Path]:
    """Where compiled templates are kept, first found first: templates/__pycache__ beside the
    templates (warmed when the image is built), then the user's cache, for a plain `pip install`
    whose package directory is read-only: $NFTREDIR_CACHE_DIR, else $XDG_CACHE_HOME/nftredir,
    else ~/.cache/nftredir."""
    user = os.environ.get("NFTREDIR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nftredir")
    return [template_dir() / "__pycache__", Path(user)]


def _bytecode_cache(directories: list[Path]):  # -> jinja2.BytecodeCache
    """Compiled templates, kept as Python keeps compiled modules.

    Compiling the templates costs more than the rest of a render; an init container renders
    once per pod start, so it loads them compiled. A template is read from the first directory
    that has it and, once compiled, written to the first that can be written. Like Python, it
    writes nothing under PYTHONDONTWRITEBYTECODE, and a directory it cannot write is skipped.
    """
    import jinja2

    class Cache(jinja2.BytecodeCache):
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            for directory in directories:
                try:
                    with open(directory / f"__jinja2_{bucket.key}.cache", "rb") as file:
                        bucket.load_bytecode(file)
                except (OSError, ValueError, EOFError):
                    bucket.reset()
                if bucket.code is not None:
                    return

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            if sys.dont_write_bytecode:
                return
            for directory in directories:
                target = directory / f"__jinja2_{bucket.key}.cache"
                partial = target.with_name(f".{target.name}.{os.getpid()}")
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                    with open(partial, "wb") as file:
                        bucket.write_bytecode(file)
                    os.replace(partial, target)  # never a half-written file for another reader
                    return
                except OSError:
                    with contextlib.suppress(OSError):
                        partial.unlink()

    return Cache()


def make_environment(templates: Path, caches: list[Path]):  # -> jinja2.Environment
    """The templates with nftredir's filters, compiled templates cached in `caches`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        bytecode_cache=_bytecode_cache(caches),
        autoescape=False,  # escaping is per format, by the filters below
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        nft_ident=_nft_ident,
        nft_str=_nft_str,
        nft_symbol=_nft_symbol,
        nft_elements=_nft_elements,
        json=json.dumps,
        json_elements=_json_elements,
        ipt_word=_ipt_word,
    )
    return env


@cache
def _environment():  # -> jinja2.Environment; jinja2 is imported only when rendering
    return make_environment(template_dir(), cache_dirs())


def _ifname_pattern(name: str) -> str:
    """iptables reads a trailing '+' as "any name with this prefix"; nft spells that '*'.

    A lone '+' matches every interface; nft refuses the all-wildcard "*", so it becomes ""
    (the templates then write the rule without an interface match, which means the same)."""
    return name[:-1] + "*" if name.endswith("+") and len(name) > 1 else "" if name == "+" else name


def _sidecar_values(config: Config) -> dict[str, Any]:
    """The values every format's template sees the same way: the pod IPs, the sidecar's UID and ports."""
    podip = config.local_proxy_mode == "podip"
    return {
        "pod_ip": config.pod_ip if podip else None,
        "pod_ip6": config.pod_ip6 if podip and config.ip_family == "dual" else None,
        "proxy_uid": config.proxy_uid,
        "proxy_admin_port": config.proxy_admin_port,
        "proxy_outbound_port": config.proxy_outbound_port,
        "proxy_inbound_port": config.proxy_inbound_port,
        "prometheus_port": config.prometheus_port,
        "probe_ports": config.probe_ports,
        "healthcheck_port": config.healthcheck_port,
    }


def _family_ranges(cidrs: Sequence[Cidr], version: int, dual: bool) -> list[Cidr]:
    """One IP version's ranges, merged for its interval set. In ipv4 mode every range is IPv4
    (nftredir.config refuses the rest) and there is no IPv6 set."""
    if not dual:
        return cidr.merge(cidrs) if version == 4 else []
    return cidr.merge(cidr.by_version(cidrs, version))


def template_context(config: Config) -> dict[str, Any]:
    """The values the templates see: validated, normalised, and in FSM's rule order."""
    dual = config.ip_family == "dual"
    exclusions, exclusions6 = (_family_ranges(config.outbound_ip_range_exclusions, v, dual) for v in (4, 6))
    inclusions, inclusions6 = (_family_ranges(config.outbound_ip_range_inclusions, v, dual) for v in (4, 6))
    outbound_ports = tuple(sorted(config.outbound_port_exclusions))
    inbound_ports = tuple(sorted(config.inbound_port_exclusions))
    sets = [
        {"name": name, "type": kind, "elements": elements}
        for name, kind, elements in (
            ("outbound_ip_range_exclusions", "ipv4_addr", exclusions),
            ("outbound_ip6_range_exclusions", "ipv6_addr", exclusions6),
            ("outbound_ip_range_inclusions", "ipv4_addr", inclusions),
            ("outbound_ip6_range_inclusions", "ipv6_addr", inclusions6),
            ("outbound_port_exclusions", "inet_service", outbound_ports),
            ("inbound_port_exclusions", "inet_service", inbound_ports),
        )
        if elements
    ]
    interfaces = [_ifname_pattern(name) for name in config.network_interface_exclusions]
    return {
        "table": config.table,
        "base": BASE_CHAIN,
        "owner_mark": MARK,
        "dual": dual,
        "sets": sets,
        "outbound_ip_range_exclusions": exclusions,
        "outbound_ip6_range_exclusions": exclusions6,
        "outbound_ip_range_inclusions": inclusions,
        "outbound_ip6_range_inclusions": inclusions6,
        "outbound_port_exclusions": outbound_ports,
        "inbound_port_exclusions": inbound_ports,
        # FSM inserts each inbound interface rule at the top (-I), reversing the list.
        "inbound_interface_exclusions": interfaces[::-1],
        "outbound_interface_exclusions": interfaces,
        **_sidecar_values(config),
    }


def fsm_iptables_context(config: Config, version: int = 4) -> dict[str, Any]:
    """What fsm-iptables.j2 sees for one family (4: FSM's script; 6: its ip6tables
    counterpart): the Config's lists as given (FSM's merged order, duplicates dropped). Refuses,
    as a ConfigError, a port list FSM's own script could not load."""
    for name in ("outbound-port-exclusion-list", "inbound-port-exclusion-list"):
        field = OPTIONS[name].field
        ports = getattr(config, field)
        if len(ports) > MULTIPORT_MAX:
            raise ConfigError(
                config.sources.get(field, f"--{name}"), ",".join(map(str, ports)),
                f"{len(ports)} ports, but iptables multiport takes at most {MULTIPORT_MAX}: "
                "FSM's script would fail to load (nft and json have no such limit)",
            )
    if "!" in config.network_interface_exclusions:
        raise ConfigError(config.sources.get(OPTIONS["network-interface-exclusion-list"].field, "--network-interface-exclusion-list"),
                          "!", "iptables reads a lone '!' as negation: FSM's script cannot name this interface")
    constants = _sidecar_values(config)
    return {
        "loopback": f"{LOOPBACK[version]}/{32 if version == 4 else 128}",
        "outbound_ip_range_exclusions": cidr.by_version(config.outbound_ip_range_exclusions, version),
        "outbound_ip_range_inclusions": cidr.by_version(config.outbound_ip_range_inclusions, version),
        # A family with no included range is not redirected once any inclusion is given.
        "any_inclusions": bool(config.outbound_ip_range_inclusions),
        "outbound_port_exclusions": config.outbound_port_exclusions,
        "inbound_port_exclusions": config.inbound_port_exclusions,
        "network_interface_exclusions": config.network_interface_exclusions,  # '+' stays '+'
        **constants,
        "pod_ip": constants["pod_ip"] if version == 4 else constants["pod_ip6"],
    }


def _fsm_script(config: Config, version: int) -> str:
    return _environment().get_template("fsm-iptables.j2").render(**fsm_iptables_context(config, version))


def render(config: Config, format: str = "nft") -> str:
    """The ruleset as `nft -f` text ("nft"), as the libnftables JSON batch ("json"), or FSM's
    own `iptables-restore --noflush` input for the same configuration ("iptables"; in dual mode
    followed by its IPv6 counterpart for `ip6tables-restore`, which "ip6tables" prints alone)."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}")
    if format == "ip6tables":
        if config.ip_family != "dual":
            raise ConfigError(config.sources.get("ip_family", "--ip-family"), config.ip_family,
                              "FSM programs no IPv6 rules: --format ip6tables needs --ip-family dual")
        return _fsm_script(config, 6)
    if format == "iptables":
        if config.ip_family != "dual":
            return _fsm_script(config, 4)
        return f"{IPTABLES_HEADER}\n{_fsm_script(config, 4)}{IP6TABLES_HEADER}\n{_fsm_script(config, 6)}"
    text = _environment().get_template("ruleset.j2").render(format=format, **template_context(config))
    if format == "json":  # the template's layout leaves blank lines that mean nothing in JSON
        text = "\n".join(line for line in text.splitlines() if line.strip())
    return text.rstrip("\n") + "\n"


def render_batch(config: Config) -> dict[str, Any]:
    """The JSON batch as the Python object libnftables' json_cmd takes."""
    return json.loads(render(config, "json"))


def owned_chains(table: str) -> set[str]:
    """The chains nftredir makes in `table` (the same for every configuration)."""
    batch = render_batch(Config(table=table))
    return {c["add"]["chain"]["name"] for c in batch["nftables"] if "chain" in c.get("add", {})}


def remove_batch(table: str) -> dict[str, Any]:
    """Deletes `inet <table>`; adding it first makes the delete succeed when it is absent."""
    ref = {"table": {"family": "inet", "name": table}}
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, {"add": ref}, {"delete": ref}]}
