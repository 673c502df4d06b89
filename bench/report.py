"""The results table (markdown), the details of every measurement, and the machine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.workload import median, ratio


@dataclass(frozen=True)
class Row:
    metric: str
    n: str
    ours: float | None
    theirs: float | None
    unit: str  # "ms", "MB", "conn/s"
    target: str = ""  # "<= 1.0", ">= 5", or "" for no target

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.theirs)

    @property
    def met(self) -> str:
        r = self.ratio
        if not self.target or r is None:
            return ""
        op, value = self.target.split()
        ok = r <= float(value) if op == "<=" else r >= float(value)
        return "yes" if ok else "**no**"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "conn/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| metric | N | nftredir | FSM / floor | ratio | target | met? |",
        "| --- | ---: | ---: | ---: | ---: | :---: | :---: |",
    ]
    for r in rows:
        rt = "—" if r.ratio is None else f"{r.ratio:.2f}×"
        target = r.target.replace("<=", "≤").replace(">=", "≥") + "×" if r.target else ""
        lines.append(f"| {r.metric} | {r.n} | {_num(r.ours, r.unit)} | {_num(r.theirs, r.unit)} | {rt} | {target} | {r.met} |")
    return "\n".join(lines)


def details(samples: dict[tuple[str, str, str], list[float]], units: dict[str, str]) -> str:
    """Every measurement's count, median, min and max: how noisy the run was."""
    lines = ["| measurement | N | command | runs | median | min | max |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for (what, n, kind), values in samples.items():
        unit = units[what]
        lines.append(f"| {what} | {n} | {kind} | {len(values)} | {_num(median(values), unit)} | "
                     f"{_num(min(values), unit)} | {_num(max(values), unit)} |")
    return "\n".join(lines)


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nft": _first_line(["nft", "--version"]),
        "iptables": _first_line(["iptables", "--version"]),
        "python": _first_line(["/usr/bin/python3", "--version"]),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "git": _first_line(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "describe", "--always", "--dirty"]),
    }


def plot(samples: dict[tuple[str, str, str], list[float]], sizes: Sequence[int], path: Path) -> Path | None:
    """apply's time and peak RSS against N, one line per command, as a PNG at `path`; None
    (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, (metric, unit) in zip(axes, (("apply", "ms"), ("peak RSS", "MB"))):
        for kind in ("nftredir", "iptables-restore", "floor", "stack floor", "diff", "nft list"):
            points = [(n, median(samples[(metric, str(n), kind)])) for n in sizes if samples.get((metric, str(n), kind))]
            if points:
                axis.plot([max(n, 1) for n, _ in points], [v for _, v in points], marker="o", label=kind)
        axis.set_xscale("log")
        axis.set_yscale("log")  # from a few ms to seconds: on a linear axis the small N are one line
        axis.set_xlabel("excluded CIDRs (N; 0 drawn at 1)")
        axis.set_ylabel(f"{metric} ({unit})")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("nftredir apply against FSM's iptables-restore and the Python floor (medians)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
