"""The `nftredir` command: parses options, calls the library, maps failures to exit codes.

Kept thin on purpose: every command is a few lines over nftredir.config, nftredir.render and
nftredir.kernel, which import jinja2 and libnftables only when a command needs them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from typing import Annotated, Any, Callable, Optional

# Plain help: rich's panels cut long option names at 80 columns, and rich is slow to import.
os.environ.setdefault("TYPER_USE_RICH", "0")

import typer  # noqa: E402

from nftredir.config import OPTIONS, Config, Item, build_config, split_items
from nftredir.errors import EXIT_INVALID, NftredirError

EXIT_CODES = """Exit codes: 0 success; 2 invalid input or usage (nothing was sent to the kernel);
3 the system refused (no root/CAP_NET_ADMIN, libnftables missing, or the kernel rejected the batch)."""

app = typer.Typer(
    help="Redirect a pod's TCP traffic through its sidecar proxy with nftables, with the semantics "
    "of Flomesh Service Mesh's iptables rules, in one table (inet nftredir) that nftredir owns.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Help for each configuration option, by option name (see nftredir.config.OPTIONS).
_LIST = "Comma-separated; may be repeated."
_HELP = {
    "outbound-ip-range-exclusion-list": ("CIDR,...", f"Outbound IPv4 ranges never sent to the sidecar. {_LIST}"),
    "outbound-ip-range-inclusion-list": (
        "CIDR,...",
        f"If set, only these outbound IPv4 ranges go to the sidecar; exclusions still win. {_LIST}",
    ),
    "outbound-port-exclusion-list": ("PORT,...", f"Outbound TCP ports never sent to the sidecar. {_LIST}"),
    "inbound-port-exclusion-list": ("PORT,...", f"Inbound TCP ports never sent to the sidecar. {_LIST}"),
    "network-interface-exclusion-list": (
        "IFACE,...",
        f"Interfaces whose traffic bypasses the sidecar both ways; a trailing '+' matches a prefix, as in iptables. {_LIST}",
    ),
    "local-proxy-mode": ("MODE", "localhost (default) or podip: in podip mode the sidecar's calls to 127.0.0.1 are sent to the pod IP."),
    "pod-ip": ("IPV4", "The pod's IPv4 address, needed in podip mode. [env: POD_IP]"),
    "table": ("NAME", "The nftables table nftredir owns (family inet). [default: nftredir]"),
    "proxy-uid": ("UID", "UID the sidecar runs as; its traffic is never redirected. [default: 1500]"),
    "proxy-admin-port": ("PORT", "Sidecar admin port. [default: 15000]"),
    "proxy-outbound-port": ("PORT", "Sidecar outbound listener, where outbound TCP is redirected. [default: 15001]"),
    "proxy-inbound-port": ("PORT", "Sidecar inbound listener, where inbound TCP is redirected. [default: 15003]"),
    "prometheus-port": ("PORT", "Sidecar Prometheus listener, not redirected inbound. [default: 15010]"),
    "probe-ports": ("PORT,...", "Sidecar probe listeners, not redirected inbound. [default: 15901,15902,15903]"),
    "healthcheck-port": ("PORT", "fsm-healthcheck port, which bypasses the sidecar inbound. [default: 15904]"),
}
_ENVVARS = {"pod-ip": "POD_IP"}


def _config_parameter(name: str) -> inspect.Parameter:
    metavar, help_text = _HELP[name]
    kind = Optional[list[str]] if OPTIONS[name].is_list else Optional[str]
    option = typer.Option(
        f"--{name}", metavar=metavar, help=help_text, envvar=_ENVVARS.get(name), show_envvar=False,
    )
    return inspect.Parameter(
        name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
    )


def _raw_items(ctx: typer.Context, values: dict[str, Any]) -> dict[str, list[Item]]:
    """Each given option's values as Items, named by where they came from (flag or variable)."""
    raw: dict[str, list[Item]] = {}
    for name in OPTIONS:
        value = values.get(name.replace("-", "_"))
        if value is None:
            continue
        parameter_source = ctx.get_parameter_source(name.replace("-", "_"))
        from_env = parameter_source is not None and parameter_source.name == "ENVIRONMENT"
        source = _ENVVARS[name] if from_env else f"--{name}"
        texts = value if isinstance(value, list) else [value]
        raw[name] = [item for text in texts for item in split_items(text, source)] if OPTIONS[name].is_list else [
            Item(text, source) for text in texts
        ]
    return raw


def with_config(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every configuration option and call it with the validated Config."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "config"
    ]
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    config_names = {name.replace("-", "_") for name in OPTIONS}

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, **kwargs: Any) -> Any:
        config = build_config(_raw_items(ctx, {k: v for k, v in kwargs.items() if k in config_names}))
        return command(config=config, **{k: v for k, v in kwargs.items() if k not in config_names})

    parameters = [context, *own, *(_config_parameter(name) for name in OPTIONS)]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return wrapper


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log the batch sent to libnftables on stderr.")]


def _kernel(verbose: bool):  # -> nftredir.kernel.Kernel
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="nftredir: %(message)s", stream=sys.stderr)
    from nftredir.kernel import Kernel

    return Kernel()


@app.command()
@with_config
def render(
    config: Config,
    format: Annotated[str, typer.Option("--format", "-f", help="nft: `nft -f` input; json: the libnftables batch apply sends.")] = "nft",
) -> None:
    """Print the ruleset without touching the kernel (no root needed).

    Example: nftredir render --outbound-port-exclusion-list 6379,7070 | nft -c -f -
    """
    from nftredir.render import FORMATS, render as render_ruleset

    if format not in FORMATS:
        raise typer.BadParameter(f"{format!r} is not one of {', '.join(FORMATS)}", param_hint="'--format'")
    sys.stdout.write(render_ruleset(config, format))


@app.command()
@with_config
def apply(
    config: Config,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Have the kernel check the batch; commit nothing.")] = False,
    verbose: Verbose = False,
) -> None:
    """Replace table inet nftredir with the ruleset, in one kernel transaction.

    Idempotent: applying again leaves the same ruleset. If the kernel refuses anything, the
    previous ruleset stays exactly as it was.

    Example: nftredir apply --outbound-ip-range-exclusion-list 169.254.169.254/32
    """
    from nftredir.render import render_batch

    batch = render_batch(config)
    _kernel(verbose).send(batch, dry_run=dry_run)
    if dry_run:
        print(f"dry run: the kernel accepted the ruleset for table inet {config.table}; nothing was committed")


@app.command()
def remove(
    table: Annotated[str, typer.Option("--table", metavar="NAME", help="The table to delete. [default: nftredir]")] = "nftredir",
    verbose: Verbose = False,
) -> None:
    """Delete table inet nftredir. Succeeds when it is already absent; other tables are untouched."""
    from nftredir.kernel import remove_batch

    config = build_config({"table": [Item(table, "--table")]})
    _kernel(verbose).send(remove_batch(config.table))


def main() -> None:
    """Entry point: expected failures become one line on stderr and a documented exit code."""
    try:
        app()
    except NftredirError as exc:
        print(f"nftredir: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
