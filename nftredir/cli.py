"""The `nftredir` command: parses options, calls the library, maps failures to exit codes.

Kept thin on purpose: every command is a few lines over nftredir.config, nftredir.render and
nftredir.kernel, which import jinja2 and libnftables only when a command needs them.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from enum import Enum
from collections.abc import Sequence
from typing import Annotated, Any, Callable, Optional

import typer

from nftredir.config import OPTIONS, Config, Item, build_config
from nftredir.runner import kernel as _kernel, run, table_source as _table_source
from nftredir.sources.environment import variable


class RenderFormat(str, Enum):
    nft = "nft"
    json = "json"
    iptables = "iptables"
    ip6tables = "ip6tables"


class ReportFormat(str, Enum):
    text = "text"
    json = "json"


class ConfigFormat(str, Enum):
    yaml = "yaml"
    json = "json"


EXIT_CODES = """Exit codes: 0 success; 2 invalid input or usage (nothing was sent to the kernel);
3 the system refused (no root/CAP_NET_ADMIN, libnftables missing, the kernel rejected the batch,
output could not be written); 4 an internal error (a bug); 141 standard output was closed by its
reader (a pipe)."""

app = typer.Typer(
    help="Redirect a pod's TCP traffic through its sidecar proxy with nftables, with the semantics "
    "of Flomesh Service Mesh's iptables rules, in one table (inet nftredir) that nftredir owns.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help even where rich is installed: its panels cut long option names
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The files a command reads configuration from, besides flags and the environment.
_FILE_OPTIONS = {
    "config_file": (
        "--config",
        "nftredir's own configuration, YAML or JSON: option names as keys. [env: NFTREDIR_CONFIG]",
    ),
    "mesh_config": (
        "--mesh-config",
        "FSM's MeshConfig as `kubectl get meshconfig fsm-mesh-config -n fsm-system -o yaml` (or -o json) "
        "prints it: the global lists. [env: NFTREDIR_MESH_CONFIG]",
    ),
    "pod_annotations": (
        "--pod-annotations",
        "The pod's annotations: a downward-API annotations file, or a pod manifest in YAML or JSON: "
        "the pod's lists, merged with MeshConfig's as FSM does. [env: NFTREDIR_POD_ANNOTATIONS]",
    ),
}
_SOURCES_HELP = (
    "Each option is also read from NFTREDIR_<OPTION> (e.g. NFTREDIR_TABLE) and from the files; "
    "flags > environment > --config > MeshConfig and annotations > defaults, an option given at a "
    "higher level replacing it (lists included) from the lower ones."
)


def _help(name: str) -> str:
    """An option's help, from its one entry in nftredir.config.OPTIONS."""
    option = OPTIONS[name]
    env = variable(name) + (f" or {option.also_env}" if option.also_env else "")
    default = option.default_text()
    notes = [f"env: {env}", *([f"default: {default}"] if default else [])]
    listed = " Comma-separated; may be repeated." if option.is_list else ""
    return f"{option.help}{listed} [{'; '.join(notes)}]"


@functools.cache  # every command takes every option: build each once (a Parameter is immutable)
def _config_parameter(name: str) -> inspect.Parameter:
    kind = Optional[list[str]] if OPTIONS[name].is_list else Optional[str]
    option = typer.Option(f"--{name}", metavar=OPTIONS[name].metavar, help=_help(name))
    return inspect.Parameter(
        name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
    )


@functools.cache
def _file_parameter(name: str) -> inspect.Parameter:
    flag, help_text = _FILE_OPTIONS[name]
    option = typer.Option(flag, metavar="FILE", help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], option])


def with_config(*, raw: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every configuration option and the configuration files, and call it with
    the validated Config built from flags, environment and files (see nftredir.sources).

    With raw=True the command also receives `raw`, the combined raw items, each naming its
    source (for `nftredir config`).
    """
    return functools.partial(_with_config, wants_raw=raw)


def _with_config(command: Callable[..., Any], wants_raw: bool) -> Callable[..., Any]:
    signature = inspect.signature(command, eval_str=True)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in signature.parameters.values()
        if p.name not in ("config", "raw")
    ]
    config_names = {name.replace("-", "_") for name in OPTIONS}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from nftredir.sources import Files, gather
        from nftredir.sources.flags import flags_layer

        files = Files(*(kwargs.pop(name) for name in _FILE_OPTIONS))
        flags = flags_layer({k: v for k, v in kwargs.items() if k in config_names})
        rest = {k: v for k, v in kwargs.items() if k not in config_names}
        if wants_raw:
            raw = gather(flags, os.environ, files)
            return command(config=build_config(raw), raw=raw, **rest)
        # Nothing here keeps the raw items: with a large MeshConfig they are garbage once validated.
        return command(config=build_config(gather(flags, os.environ, files)), **rest)

    parameters = [*own, *(_file_parameter(name) for name in _FILE_OPTIONS), *(_config_parameter(name) for name in OPTIONS)]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__doc__ = f"{inspect.cleandoc(command.__doc__ or '')}\n\n{_SOURCES_HELP}"
    return wrapper


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log the batch sent to libnftables on stderr.")]
Timeout = Annotated[
    Optional[float],
    typer.Option("--timeout", metavar="S", min=0.05, max=60.0,
                 help="validate: seconds each test connection may take. [default: 0.5]"),
]


@app.command()
@with_config()
def render(
    config: Config,
    format: Annotated[RenderFormat, typer.Option("--format", "-f", help="nft: `nft -f` input; json: the libnftables batch apply sends; iptables: the `iptables-restore --noflush` input FSM's init container runs for the same options (refused, exit 2, for a port list longer than multiport's 15), with --ip-family dual followed by its IPv6 counterpart for `ip6tables-restore` after a '# ip6tables-restore' line; ip6tables: that counterpart alone.")] = RenderFormat.nft,
) -> None:
    """Print the ruleset without touching the kernel (no root needed).

    Example: nftredir render --outbound-port-exclusion-list 6379,7070 | nft -c -f -
    """
    from nftredir.render import render as render_ruleset

    sys.stdout.write(render_ruleset(config, format.value))


@app.command("config")
@with_config(raw=True)
def show_config(
    config: Config,
    raw: dict[str, Sequence[Item]],
    format: Annotated[ConfigFormat, typer.Option("--format", "-f", help="yaml or json.")] = ConfigFormat.yaml,
) -> None:
    """Print the effective configuration and where each value came from (flag, variable,
    file position, MeshConfig field, annotation, or default). Touches nothing.

    Example: nftredir config --mesh-config mesh.yaml --pod-annotations /etc/podinfo/annotations
    """
    from nftredir.sources.report import dump, effective

    sys.stdout.write(dump(effective(config, raw), format.value))


@app.command()
@with_config()
def apply(
    config: Config,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Have the kernel check the batch; commit nothing.")] = False,
    show_diff: Annotated[
        bool, typer.Option("--diff", help="First print what this apply changes: `nftredir diff`'s text, - live, + desired.")
    ] = False,
    verbose: Verbose = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Then run `nftredir validate` (text) and exit 1 if the redirect does not hold; not with --dry-run.")
    ] = False,
    timeout: Timeout = None,
) -> None:
    """Replace table inet nftredir with the ruleset, in one kernel transaction.

    Idempotent: applying again leaves the same ruleset. If the kernel refuses anything, the
    previous ruleset stays exactly as it was.

    Example: nftredir apply --outbound-ip-range-exclusion-list 169.254.169.254/32
    """
    from nftredir.ownership import refuse_unless_ours
    from nftredir.render import render

    kernel = _kernel(verbose)
    batch, table, source = render(config, "json"), config.table, _table_source(config)
    checked = config if validate and not dry_run else None
    del config  # the batch text is all the kernel needs: a 50,000-CIDR Config need not outlive it
    refuse_unless_ours(kernel, table, source, "replace")
    if show_diff:
        import json

        from nftredir.diff import drift

        changes = drift(kernel.list_table(table), json.loads(batch), table)
        sys.stdout.write(changes.text() or f"no changes: table inet {table} already matches\n")
    kernel.send(batch, dry_run=dry_run)
    if dry_run:
        print(f"dry run: the kernel accepted the ruleset for table inet {table}; nothing was committed")
    if checked is not None:
        del batch
        _validate(checked, kernel, "text", timeout)


Format = Annotated[ReportFormat, typer.Option("--format", "-f", help="text: for a person; json: for machines (shape below).")]


_DIFF_EPILOG = """\b
JSON: {"table": {"family", "name"}, "installed": bool, "identical": bool,
  "differences": [{"object": "table"|"set"|"chain"|"rule"|...,
    "change": "missing"|"extra"|"changed", "name": set/chain name (a rule's chain),
    "live": {...}|null, "desired": {...}|null, ...}]}
  table sides (changed): {"family", "name", "flags", "comment"};
  rule sides: {"index", "rule", "comment"} (+ "handle" live); set sides: {"type", "flags",
  "elements"}, changed sets add "fields", "elements_missing", "elements_extra"; chain sides:
  {"type", "hook", "prio", "policy", "rules"}, changed chains add "fields".
  Full description: README, "nftredir diff and status".

\b
Exit codes (as diff(1)): 0 identical; 1 different (including no table); 2 invalid input or
usage; 3 the system refused (no root/CAP_NET_ADMIN, libnftables missing)."""


@app.command("diff", epilog=_DIFF_EPILOG)
@with_config()
def diff_command(config: Config, format: Format = ReportFormat.text, verbose: Verbose = False) -> None:
    """Compare the live table with the ruleset these options would apply; change nothing.

    Ignores what does not change meaning (handles, counter values, element order, the kernel's
    normalisation of prefixes and protocols). Text is a unified diff in nft syntax, - live and
    + desired, and empty when they match.

    Example: nftredir diff --outbound-port-exclusion-list 6379 || nftredir apply --diff --outbound-port-exclusion-list 6379
    """
    import json

    from nftredir.diff import drift
    from nftredir.render import render_batch

    result = drift(_kernel(verbose, write=False).list_table(config.table), render_batch(config), config.table)
    sys.stdout.write(json.dumps(result.report(), indent=2) + "\n" if format is ReportFormat.json else result.text())
    if not result.identical:
        raise typer.Exit(1)


_STATUS_EPILOG = """\b
JSON: {"table": {"family", "name"}, "installed": bool, "flags": [...], "matches": bool,
  "differences": [as in nftredir diff],
  "other_nat_chains": [{"family", "table", "chain", "type", "hook", "prio"}],
  "sets": [{"name", "type", "flags", "elements"}],
  "chains": [{"name", "type", "hook", "prio", "policy",
    "rules": [{"handle", "rule", "comment", "packets", "bytes"}]}]}
  Full description: README, "nftredir diff and status".

\b
Other nat chains on the prerouting and output hooks (iptables-nft's ip nat, other tools, a
second nftredir table) act on the same traffic: status lists them all.

\b
Exit codes: 0 the status was shown (whether or not the table matches: use nftredir diff to
test that); 2 invalid input or usage; 3 the system refused."""


@app.command(epilog=_STATUS_EPILOG)
@with_config()
def status(config: Config, format: Format = ReportFormat.text, verbose: Verbose = False) -> None:
    """Show whether table inet nftredir is installed and matches these options, and every rule
    with its comment and packet/byte counters.

    Example: nftredir status --outbound-port-exclusion-list 6379
    """
    import json

    from nftredir.inventory import foreign_nat_chains
    from nftredir.render import render_batch
    from nftredir.status import format_text, status_report

    kernel = _kernel(verbose, write=False)
    others = foreign_nat_chains(kernel.list_chains(), config.table)
    report = status_report(kernel.list_table(config.table), render_batch(config), config.table, others)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if format is ReportFormat.json else format_text(report))


_VALIDATE_EPILOG = """\b
Checks: table, outbound-redirect, proxy-bypass, excluded-ip-range, excluded-port,
excluded-interface, inbound-reentry, podip-dnat (those the configuration and routes allow).
JSON: {"table": {"family", "name"}, "timeout": S, "ok": bool,
  "checks": [{"name", "status": "pass"|"fail"|"skip", "summary", "expected", "got"}]}
  Full description: README, "nftredir validate".

\b
Exit codes: 0 every check holds (skipped ones say why); 1 a check failed; 2 invalid input or
usage; 3 the system refused (no CAP_NET_ADMIN, libnftables missing)."""


def _validate(config: Config, kernel, format: str, timeout: float | None) -> None:
    """Run the checks, print them, exit 1 if one failed (shared by validate and apply --validate)."""
    import json

    from nftredir import validate

    timeout = validate.DEFAULT_TIMEOUT if timeout is None else timeout
    results = validate.validate(config, kernel.list_table(config.table) is not None, timeout)
    if format == "json":
        sys.stdout.write(json.dumps(validate.report(config, results, timeout), indent=2) + "\n")
    else:
        sys.stdout.write(validate.format_text(results))
    if any(r.status == "fail" for r in results):
        raise typer.Exit(1)


@app.command("validate", epilog=_VALIDATE_EPILOG)
@with_config()
def validate_command(
    config: Config, format: Format = ReportFormat.text, timeout: Timeout = None, verbose: Verbose = False
) -> None:
    """Prove the redirect with real connections: run in the pod's namespace before the sidecar.

    Binds throwaway listeners on 127.0.0.1 at the outbound and inbound listener ports, then
    connects as an app UID and as the proxy UID and reads where each connection lands
    (SO_ORIGINAL_DST). A port already in use (the sidecar runs) skips the checks that need it;
    so does a missing CAP_SETUID/CAP_SETGID the checks that need another UID than its own.
    Redirected connections never leave the pod; see the README for what the others send.

    Example: nftredir validate --outbound-port-exclusion-list 6379 --format json
    """
    _validate(config, _kernel(verbose, write=False), format, timeout)


_DOCTOR_EPILOG = """\b
Checks: privilege, libnftables, json, kernel-batch, kernel-feature: (inet nat chains, meta
skuid, interval sets, redirect, dnat, comments), drift, other-nftredir, mesh-iptables,
other-nat-chains, legacy-xtables, nft-version, table-writer.
JSON: {"ok": bool, "counts": {"ok", "warning", "problem", "skipped"},
  "checks": [{"name", "status": "ok"|"warning"|"problem"|"skipped", "summary", "advice", "details": [...]}]}
  Full description: README, "nftredir doctor".

\b
Exit codes: 0 no problems (warnings do not fail); 1 at least one problem; 2 invalid input or
usage; 3 the system refused in a way doctor cannot report on."""


@app.command(epilog=_DOCTOR_EPILOG)
@with_config()
def doctor(config: Config, format: Format = ReportFormat.text) -> None:
    """Check what the redirect depends on: privilege, libnftables and its JSON support, the
    kernel's support for each feature the ruleset uses (dry runs), other redirection in the
    namespace (mesh iptables rules, other nat chains, a second nftredir table, legacy
    xtables), nft version skew, and drift from these options. Changes nothing.

    Example: nftredir doctor --mesh-config mesh.yaml --pod-annotations /etc/podinfo/annotations
    """
    import json

    from nftredir import doctor as checks
    from nftredir.render import render_batch

    findings = checks.doctor(config, render_batch(config))
    if format == "json":
        sys.stdout.write(json.dumps(checks.report(findings), indent=2) + "\n")
    else:
        sys.stdout.write(checks.format_text(findings))
    if any(f.status == checks.PROBLEM for f in findings):
        raise typer.Exit(1)


_RESTORE_EPILOG = """\b
Reads FSM's init-container script (pkg/injector/iptables.go: `*nat`, the four FSM_PROXY_*
chains, or OSM's OSM_PROXY_* / PROXY_* names, `-A`/`-I` rules, `COMMIT`), derives the options it
states, and applies them as `nftredir apply` would: table inet nftredir, one transaction,
idempotent. A script that is not exactly FSM's script for some configuration is refused: exit
2, the line and why, nothing sent. NFTREDIR_TABLE (and other options a script cannot state)
still apply; setting an option the script states is refused; POD_IP is ignored (the shell
already wrote it into the script). Full description: deploy/fsm.md."""


@app.command("iptables-restore", epilog=_RESTORE_EPILOG)
def iptables_restore(
    file: Annotated[Optional[str], typer.Argument(metavar="[FILE]", help="The script; stdin when absent or '-'.")] = None,
    noflush: Annotated[
        bool, typer.Option("--noflush", "-n", help="Accepted for FSM's command line; iptables' tables are never touched either way.")
    ] = False,
    test: Annotated[
        bool, typer.Option("--test", "-t", help="Parse and validate, have the kernel dry-run the batch; commit nothing.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Apply a mesh's `iptables-restore` redirection script as nftredir's native ruleset.

    Drop-in for FSM's init container, whose command is
    /bin/sh -c "iptables-restore --noflush <<EOF ... EOF". FILE is the script; stdin when
    it is absent or '-'.

    Example: nftredir render --format iptables --outbound-port-exclusion-list 6379 | nftredir iptables-restore --test
    """
    from nftredir.restore import restore

    restore(file, test, verbose)


@app.command()
def remove(
    table: Annotated[
        Optional[str],
        typer.Option("--table", metavar="NAME", help="The table to delete. [env: NFTREDIR_TABLE; default: nftredir]"),
    ] = None,
    config_file: Annotated[
        Optional[str],
        typer.Option("--config", metavar="FILE", help="nftredir's own configuration file; only its table key is read. [env: NFTREDIR_CONFIG]"),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Delete table inet nftredir. Succeeds when it is already absent; other tables are untouched,
    and a table of that name that nftredir did not make is refused (exit 2).

    The table name comes from the same places as for apply (--table, NFTREDIR_TABLE, the table
    key of --config or NFTREDIR_CONFIG), so what apply installed, remove deletes. Nothing else
    is read: a broken MeshConfig or annotations file cannot stop the cleanup.
    """
    from nftredir.ownership import refuse_unless_ours
    from nftredir.render import remove_batch
    from nftredir.sources import table_layer

    config = build_config(table_layer(table, os.environ, config_file))
    kernel = _kernel(verbose)
    refuse_unless_ours(kernel, config.table, _table_source(config), "delete")
    kernel.send(remove_batch(config.table))  # adds the table first, so an absent one is fine


class CniAction(str, Enum):
    install = "install"
    uninstall = "uninstall"


@app.command("cni")
def cni_command(
    action: Annotated[Optional[CniAction], typer.Argument(help="install or uninstall; none: run as the plugin (CNI_COMMAND, stdin).")] = None,
    conf_dir: Annotated[str, typer.Option("--conf-dir", metavar="DIR", help="The node's CNI configuration directory.")] = "/etc/cni/net.d",
    conflist: Annotated[Optional[str], typer.Option("--conflist", metavar="NAME", help="The conflist in DIR; default: the first network configuration by name, the one the runtime uses.")] = None,
    plugin_config: Annotated[Optional[str], typer.Option("--plugin-config", metavar="FILE", help="install: the plugin's keys, YAML or JSON (nftredir's options, kubeconfig, injection-marker, on-api-unreachable, log-file).")] = None,
) -> None:
    """Run as a chained CNI plugin, or chain it into a node's conflist (install) and out (uninstall).

    Without ACTION this is the plugin the runtime executes (as `nftredir-cni`): CNI_COMMAND ADD
    applies nftredir's table in CNI_NETNS, DEL removes it, CHECK diffs it. See deploy/cni.md.

    Example: nftredir cni install --conf-dir /host/etc/cni/net.d --plugin-config /etc/nftredir/cni.yaml
    """
    if action is None:
        from nftredir.cni import main as plugin

        return plugin()
    from nftredir import cni_install

    if action is CniAction.install:
        from nftredir.sources.documents import display_path, expect, load_document

        keys = {}
        if plugin_config:
            document = load_document(plugin_config, numbers_as_text=True)  # as --config reads numbers
            keys = expect(document, (), document.data or {}, dict)
        path = cni_install.install(conf_dir, keys, conflist, display_path(plugin_config or "--plugin-config"))
        print(f"installed nftredir-cni as the last plugin of {path}")
    else:
        print(f"removed nftredir-cni from {cni_install.uninstall(conf_dir, conflist)}")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"nftredir {version('nftredir')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _only_the_invoked_command(argv: list[str]) -> None:
    """Keep only the command this run invokes, so typer builds one command's click objects,
    not every command's: an init container pays for each at every pod start. Without a known
    command name (`nftredir --help`, a typo) every command stays, for the listing or the error."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    chosen = [info for info in app.registered_commands if (info.name or info.callback.__name__) == name]
    if chosen:
        app.registered_commands = chosen


def main() -> None:
    """Entry point: every failure becomes one line on stderr and a documented exit code."""
    run(lambda: (_only_the_invoked_command(sys.argv[1:]), app()))


if __name__ == "__main__":
    main()
