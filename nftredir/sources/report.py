"""The effective configuration with the origin of every value, for `nftredir config`."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from nftredir.cidr import Cidr
from nftredir.config import OPTIONS, Config, Item

DEFAULT = "default"


def _plain(value: Any) -> Any:
    if isinstance(value, (Cidr, ipaddress.IPv4Address)):
        return str(value)
    return value


def effective(config: Config, raw: Mapping[str, Sequence[Item]]) -> dict[str, Any]:
    """{option: {"value", "source"}} for a scalar; {option: [{"value", "source"}, ...]} for a list.

    A list value's source is the first item that gave it (later duplicates are dropped, as in
    build_config). `raw` is what build_config validated into `config`, so parsing cannot fail.
    """
    report: dict[str, Any] = {}
    for name, option in OPTIONS.items():
        value = getattr(config, option.field)
        items = raw.get(name)
        if option.is_list:
            if items is None:
                report[name] = [{"value": _plain(v), "source": DEFAULT} for v in value]
                continue
            origin: dict[Any, str] = {}
            for item in items:
                origin.setdefault(option.parse(item), str(item.source))
            report[name] = [{"value": _plain(v), "source": origin[v]} for v in value]
        else:
            used = items and (name != "pod-ip" or config.pod_ip is not None)
            if name == "pod-ip" and config.pod_ip6 is not None:  # dual podip: both addresses, as given
                value = f"{config.pod_ip},{config.pod_ip6}"
            report[name] = {"value": _plain(value), "source": str(items[-1].source) if used else DEFAULT}
    return report


def options_markdown() -> str:
    """The README's table of options, made from nftredir.config.OPTIONS (tests/test_readme.py
    checks that the README holds exactly this)."""
    from nftredir.sources.environment import variable

    rows = ["| option | meaning | default | environment | in FSM's objects |", "| --- | --- | --- | --- | --- |"]
    for name, option in OPTIONS.items():
        listed = " Comma-separated; repeatable." if option.is_list else ""
        env = f"`{variable(name)}`" + (f", `{option.also_env}`" if option.also_env else "")
        fsm = []
        if option.mesh:
            fsm.append(f"MeshConfig `spec.{option.mesh.section}.{option.mesh.field}`")
        if option.annotation:
            fsm.append(f"annotation `{option.annotation}`" + (f" ({option.merge})" if option.merge else ""))
        default = option.default_text()
        meaning = option.help.replace("|", "\\|")
        rows.append(f"| `--{name} {option.metavar}` | {meaning}{listed} | {f'`{default}`' if default else 'none'} | "
                    f"{env} | {', '.join(fsm) or '—'} |")
    return "\n".join(rows) + "\n"


def dump(report: dict[str, Any], format: str) -> str:
    """The report as YAML (the default) or JSON text."""
    if format == "json":
        import json

        return json.dumps(report, indent=2) + "\n"
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(report, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=False)
