"""`python -m bench`: nftredir against FSM's iptables-restore and the Python floor, side by side.

Run as root from the repository's top directory. Everything runs in network namespaces this
script creates and always deletes; nothing touches the host's rules. See README.md,
"Performance", and bench/RESULTS.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import apply as apply_phase  # noqa: E402
from bench import connrate, install, podman, report  # noqa: E402
from bench.native import BenchError, build_helpers  # noqa: E402
from bench.workload import exclusion_cidrs, interleaved, median, mesh_config  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = (0, 100, 1_000, 10_000, 50_000, 200_000)
# Connection rates stop at 50,000: through FSM's rules a connection at 200,000 ranges walks
# 200,000 rules, and the curve of apply alone says what the larger N cost.
CONNRATE_MAX = 50_000
QUICK_SIZES = (0, 10_000)
TARGET_SIZES = (10_000, 50_000)
IPV6_SIZES = (0, 1, 10_000)
STACK = ("typer", "jinja2")  # the project's stack: what "stack floor" imports before the floor's work  # dual stack: a 10,000-range IPv6 list against none (issue 13)
PHASES = ("apply", "connrate", "podman")
UNITS = {"apply": "ms", "podman run": "ms", "peak RSS": "MB", "conn/s redirected": "conn/s", "conn/s excluded": "conn/s"}

Samples = dict[tuple[str, str, str], list[float]]


def _log(msg: str, _t0: list[float] = []) -> None:  # noqa: B006 - the start time, kept across calls
    if not _t0:
        _t0.append(time.monotonic())
    print(f"[{time.monotonic() - _t0[0]:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"N in {QUICK_SIZES}, 3 reps, 0.1 s loops: well under a minute")
    p.add_argument("--nftredir", type=Path, help="measure this nftredir executable instead of a fresh non-editable install of the working tree")
    p.add_argument("--sizes", help=f"comma-separated N of excluded CIDRs (default {','.join(map(str, SIZES))})")
    p.add_argument("--reps", type=int, help="repetitions of every measurement (default 9; quick 3)")
    p.add_argument("--seconds", type=float, help="length of one connect/close loop, at most 2 (default 0.25; quick 0.1)")
    p.add_argument("--only", help="run only these phases, comma-separated: apply, connrate, podman")
    p.add_argument("--image", default=os.environ.get("NFTREDIR_IMAGE", "localhost/nftredir:test"),
                   help="podman phase: nftredir's image, built by scripts/test-image (default: $NFTREDIR_IMAGE or %(default)s)")
    p.add_argument("--output", type=Path, help="where to write the results (default bench/RESULTS.md; --quick: not written)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nftredir-bench"), help="inputs, helpers and the venv (default %(default)s)")
    args = p.parse_args(argv)
    args.sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    args.reps = args.reps or (3 if args.quick else 9)
    args.phases = set(args.only.split(",")) if args.only else set(PHASES)
    if not args.phases <= set(PHASES):
        p.error(f"--only: phases are {', '.join(PHASES)}")
    args.seconds = min(args.seconds or (0.1 if args.quick else 0.25), 2.0)
    if args.output is None and not args.quick:
        args.output = HERE / "RESULTS.md"
    if args.reps < 1 or any(n < 0 for n in args.sizes):
        p.error("--reps must be >= 1 and sizes >= 0")
    return args


def _preflight() -> str:
    if os.geteuid() != 0:
        raise BenchError("run as root: it creates network namespaces and loads rules into them")
    for tool in ("ip", "nft", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed")
    version = subprocess.run(["iptables-restore", "--version"], capture_output=True, text=True, timeout=30).stdout
    if "nf_tables" not in version:
        raise BenchError(f"iptables-restore is not the nf_tables backend: {version.strip()!r}")
    return str(Path(shutil.which("iptables-restore") or "iptables-restore"))


def _inputs(workdir: Path, nftredir: Path, sizes: set[int]) -> dict[str, Path]:
    """mesh-N.json (MeshConfig); fsm-N.rules and batch-N.json (`render --format iptables` and
    `--format json` of it); batch-default.json (`render --format json`, no options)."""
    files: dict[str, Path] = {}
    for n in sorted(sizes):
        mesh = workdir / f"mesh-{n}.json"
        mesh.write_text(mesh_config(exclusion_cidrs(n)))
        rules = workdir / f"fsm-{n}.rules"
        with rules.open("w") as out:
            subprocess.run([str(nftredir), "render", "--format", "iptables", "--mesh-config", str(mesh)],
                           stdout=out, check=True, timeout=600)
        batch = workdir / f"batch-{n}.json"
        with batch.open("w") as out:
            subprocess.run([str(nftredir), "render", "--format", "json", "--mesh-config", str(mesh)],
                           stdout=out, check=True, timeout=600)
        files[f"mesh-{n}"], files[f"fsm-{n}"], files[f"batch-{n}"] = mesh, rules, batch
        if n in IPV6_SIZES:
            files[f"mesh6-{n}"] = workdir / f"mesh6-{n}.json"
            files[f"mesh6-{n}"].write_text(mesh_config(exclusion_cidrs(n, version=6)))
    batch = workdir / "batch-default.json"
    with batch.open("w") as out:
        subprocess.run([str(nftredir), "render", "--format", "json"], stdout=out, check=True, timeout=60)
    files["batch"] = batch
    files["fsm-default"] = workdir / "fsm-default.rules"  # FSM's script for no options
    with files["fsm-default"].open("w") as out:
        subprocess.run([str(nftredir), "render", "--format", "iptables"], stdout=out, check=True, timeout=60)
    return files


def _apply(args, spawn: Path, nftredir: Path, ipt: Path, files: dict[str, Path], samples: Samples) -> None:
    log = args.workdir / "command.log"
    # The floor with the stack's imports, run by the venv's interpreter, where typer and jinja2 are.
    python = nftredir.parent / "python"

    def record(nlabel: str, result: dict[str, list[apply_phase.Sample]]) -> None:
        for kind, runs in result.items():
            samples[("apply", nlabel, kind)] = [s.wall_s * 1000 for s in runs]
            samples[("peak RSS", nlabel, kind)] = [s.maxrss_kb / 1024 for s in runs]

    def floors(batch: Path, n: int) -> dict[str, apply_phase.Command]:
        check = apply_phase.check_nftredir(n)
        return {
            "floor": apply_phase.Command(["/usr/bin/python3", str(HERE / "floor.py"), str(batch)], check=check),
            "stack floor": apply_phase.Command([str(python), str(HERE / "floor.py"), str(batch), *STACK], check=check),
        }

    for i, n in enumerate(args.sizes):
        _log(f"apply: N={n}, {args.reps} reps each: nftredir apply and diff, iptables-restore, nft's listing and the floors interleaved")
        mesh = files[f"mesh-{n}"]
        diff = [str(nftredir), "diff", "--mesh-config", str(mesh)]
        # One element gone from the set (or, with no set, one rule added): `diff` must find it.
        change = (["delete", "element", "inet", "nftredir", "outbound_ip_range_exclusions", f"{{ {exclusion_cidrs(n)[0]} }}"]
                  if n else ["add", "rule", "inet", "nftredir", "PROXY_OUTPUT", "tcp", "dport", "9", "return"])
        record(str(n), apply_phase.measure(spawn, {
            "nftredir": apply_phase.Command([str(nftredir), "apply", "--mesh-config", str(mesh)],
                                            check=apply_phase.check_nftredir(n)),
            "diff": apply_phase.Command(diff, prepare=apply_phase.applied(nftredir, mesh)),
            "diff, one changed": apply_phase.Command(diff, prepare=apply_phase.applied(nftredir, mesh, change), exit_code=1),
            # What any reader of the table pays first: libnftables listing it, in nft's own binary.
            "nft list": apply_phase.Command([shutil.which("nft") or "nft", "-j", "list", "table", "inet", "nftredir"],
                                            prepare=apply_phase.applied(nftredir, mesh)),
            "iptables-restore": apply_phase.Command([str(ipt), "--noflush"], files[f"fsm-{n}"], apply_phase.check_iptables(n)),
            **floors(files[f"batch-{n}"], n),
        }, args.reps, log, n, warmup=i == 0))
    fast = nftredir.parent / "nftredir-iptables-restore"  # what the image's iptables-restore execs
    restore = [str(fast)] if fast.exists() else [str(nftredir), "iptables-restore"]
    _log(f"apply: default configuration, {args.reps} reps each: nftredir apply, iptables-restore and render and the floors interleaved")
    record("default", apply_phase.measure(spawn, {
        "nftredir": apply_phase.Command([str(nftredir), "apply"], check=apply_phase.check_nftredir(0)),
        # FSM's command in nftredir's image: its iptables-restore execs nftredir-iptables-restore.
        "iptables-restore (nftredir)": apply_phase.Command([*restore, "--noflush"], files["fsm-default"],
                                                           apply_phase.check_nftredir(0)),
        "render": apply_phase.Command([str(nftredir), "render", "--format", "json"]),
        "import only": apply_phase.Command([str(python), "-c", f"import {', '.join(STACK)}"]),
        **floors(files["batch"], 0),
    }, args.reps, log, 0, warmup=True))


def _connrate(args, conn: Path, nftredir: Path, files: dict[str, Path], levels: list[int], samples: Samples) -> None:
    pods = [("none", 0)] + [(variant, n) for n in levels for variant in ("fsm", "nftredir")]
    pods += [("none6", 0)] + [("nftredir6", n) for n in levels if n in IPV6_SIZES]
    # With no ranges there is nothing to exclude: N=0 measures the redirected destination only.
    runs = [(pod, dest) for pod in pods for dest in connrate.DESTINATIONS
            if not (dest == "excluded" and pod[0] not in ("none", "none6") and pod[1] == 0)]
    lifetime = 600 + args.reps * len(runs) * (args.seconds + 2)
    _log(f"conn/s: {len(pods)} pods, loading FSM's rules and nftredir's at N = {', '.join(map(str, levels))} (untimed)")
    with connrate.lab(conn, pods, lifetime) as lab:
        for variant, n in pods:
            mesh = files[f"mesh6-{n}" if variant == "nftredir6" else f"mesh-{n}"]
            connrate.load(lab.pods[(variant, n)], variant, files[f"fsm-{n}"], nftredir, mesh)
        for pod, dest in runs:  # warm-up, and a check that every path lands where it should
            lab.rate(pod, dest, 0.05)
        _log(f"conn/s: {args.reps} reps x {len(runs)} (ruleset, N, destination) x {args.seconds} s, all interleaved")
        for rep, run in interleaved(runs, args.reps):
            (variant, n), dest = run
            samples.setdefault((f"conn/s {dest}", str(n) if not variant.startswith("none") else "—", variant), []).append(
                lab.rate((variant, n), dest, args.seconds))


def _podman(args, files: dict[str, Path], samples: Samples) -> None:
    sizes = [n for n in args.sizes if n in podman.SIZES]
    if not sizes:
        return
    try:
        env = podman.environment()
        images = podman.prepare_images(env, args.image, args.workdir, _log)
    except BenchError as exc:
        if args.only:  # asked for by name: not having it is an error
            raise
        _log(f"podman: skipped: {exc}")
        return
    result = podman.measure(env, images, {n: files[f"fsm-{n}"] for n in sizes}, {n: files[f"batch-{n}"] for n in sizes},
                            args.reps, args.workdir, _log)
    for (n, kind), walls in result.items():
        samples[("podman run", str(n), kind)] = [w * 1000 for w in walls]


def _rows(args, levels: list[int], samples: Samples) -> list[report.Row]:
    def med(what: str, n: object, kind: str) -> float | None:
        values = samples.get((what, str(n), kind))
        return median(values) if values else None

    rows: list[report.Row] = []
    if any(k[0] == "apply" for k in samples):
        for n in args.sizes:
            rows.append(report.Row("apply, ms: vs iptables-restore", f"{n:,}", med("apply", n, "nftredir"),
                                   med("apply", n, "iptables-restore"), "ms"))
        for n in args.sizes:
            rows.append(report.Row("apply, ms: vs Python floor (same batch)", f"{n:,}", med("apply", n, "nftredir"),
                                   med("apply", n, "floor"), "ms"))
        for n in args.sizes:
            rows.append(report.Row("apply, ms: vs stack floor (the floor after importing typer and jinja2)", f"{n:,}",
                                   med("apply", n, "nftredir"), med("apply", n, "stack floor"), "ms",
                                   "<= 1.05" if n == 50_000 else ""))
        for kind, label in (("floor", "Python floor"), ("stack floor", "stack floor")):
            for n in [n for n in args.sizes if n in TARGET_SIZES]:
                rows.append(report.Row(f"apply, ms: {label} (in nftredir's column) vs iptables-restore", f"{n:,}",
                                       med("apply", n, kind), med("apply", n, "iptables-restore"), "ms"))
        for kind, label in (("diff", "diff of an identical table"), ("diff, one changed", "diff with one element changed")):
            for n in args.sizes:
                rows.append(report.Row(f"{label}, ms: vs apply", f"{n:,}", med("apply", n, kind),
                                       med("apply", n, "nftredir"), "ms", "<= 1.3" if n == 50_000 else ""))
        for n in args.sizes:
            rows.append(report.Row("nft -j list table (libnftables' listing alone, in nftredir's column), ms: vs apply",
                                   f"{n:,}", med("apply", n, "nft list"), med("apply", n, "nftredir"), "ms"))
        rows.append(report.Row("apply default config, ms: vs Python floor", "0", med("apply", "default", "nftredir"),
                               med("apply", "default", "floor"), "ms"))
        rows.append(report.Row("render default config (json, no kernel), ms: vs Python floor", "0",
                               med("apply", "default", "render"), med("apply", "default", "floor"), "ms"))
        rows.append(report.Row("render default config (json, no kernel), ms: vs `import typer, jinja2` alone", "0",
                               med("apply", "default", "render"), med("apply", "default", "import only"), "ms", "<= 1.10"))
        for kind, label in (("stack floor", "stack floor"), ("import only", "`import typer, jinja2` alone")):
            rows.append(report.Row(f"{label} (in nftredir's column), ms: vs Python floor", "0",
                                   med("apply", "default", kind), med("apply", "default", "floor"), "ms"))
        rows.append(report.Row("apply default config, ms: vs stack floor", "0", med("apply", "default", "nftredir"),
                               med("apply", "default", "stack floor"), "ms", "<= 1.15"))
        rows.append(report.Row("nftredir-iptables-restore (the image's iptables-restore, FSM's default script on stdin), ms: vs stack floor", "0",
                               med("apply", "default", "iptables-restore (nftredir)"), med("apply", "default", "stack floor"),
                               "ms", "<= 1.15"))
        for n in args.sizes:
            rows.append(report.Row("peak RSS of apply, MB: vs iptables-restore", f"{n:,}", med("peak RSS", n, "nftredir"),
                                   med("peak RSS", n, "iptables-restore"), "MB"))
        for n in [n for n in args.sizes if n == 50_000]:
            rows.append(report.Row("peak RSS of apply, MB: vs Python floor", f"{n:,}", med("peak RSS", n, "nftredir"),
                                   med("peak RSS", n, "floor"), "MB", "<= 1.10"))
        for kind, label in (("floor", "Python floor"), ("stack floor", "stack floor")):
            rows.append(report.Row(f"peak RSS, MB: {label} (in nftredir's column) vs iptables-restore", "50,000",
                                   med("peak RSS", 50_000, kind), med("peak RSS", 50_000, "iptables-restore"), "MB"))
        rows.append(report.Row("peak RSS of apply default config, MB: vs Python floor", "0",
                               med("peak RSS", "default", "nftredir"), med("peak RSS", "default", "floor"), "MB"))
    for n in [n for n in args.sizes if ("podman run", str(n), "nftredir") in samples]:
        rows.append(report.Row("init container in podman (`podman run`, FSM's command, start included), ms: "
                               "vs Debian minbase + iptables", f"{n:,}", med("podman run", n, "nftredir"),
                               med("podman run", n, "iptables-restore"), "ms", "<= 1.2"))
        # Where the target stands against what the image's own stack costs in the same podman run.
        for kind, label in (("container start", "container start alone (`/bin/true` in nftredir's image)"),
                            ("Python floor", "Python floor in nftredir's image (floor.py, the same batch)"),
                            ("jinja2 floor", "jinja2 floor in nftredir's image (floor.py after `import jinja2`)")):
            rows.append(report.Row(f"{label} (in nftredir's column), ms: vs Debian minbase + iptables", f"{n:,}",
                                   med("podman run", n, kind), med("podman run", n, "iptables-restore"), "ms"))
        rows.append(report.Row("init container in podman, ms: vs the jinja2 floor in the same image", f"{n:,}",
                               med("podman run", n, "nftredir"), med("podman run", n, "jinja2 floor"), "ms"))
    for dest in connrate.DESTINATIONS:
        what = f"conn/s {dest}"
        if not any(k[0] == what for k in samples):
            continue
        ns = [n for n in levels if (what, str(n), "nftredir") in samples]
        for n in ns:
            rows.append(report.Row(f"conn/s, {dest} dst: vs FSM's rules", f"{n:,}", med(what, n, "nftredir"),
                                   med(what, n, "fsm"), "conn/s", ">= 5" if n == 10_000 else ""))
        base = ns[0]
        for n in ns[1:]:
            rows.append(report.Row(f"conn/s, {dest} dst: vs nftredir at N={base}", f"{n:,}", med(what, n, "nftredir"),
                                   med(what, base, "nftredir"), "conn/s", ">= 0.9" if n in TARGET_SIZES else ""))
        ceiling = med(what, "—", "none")
        for n in (ns[0], ns[-1]):
            rows.append(report.Row(f"conn/s, {dest} dst: vs no rules (ceiling)", f"{n:,}", med(what, n, "nftredir"),
                                   ceiling, "conn/s"))
        rows.append(report.Row(f"conn/s, {dest} dst: FSM's rules vs no rules", f"{ns[-1]:,}", med(what, ns[-1], "fsm"),
                               ceiling, "conn/s"))
        ns6 = [n for n in levels if (what, str(n), "nftredir6") in samples]
        for n in ns6[1:]:
            rows.append(report.Row(f"conn/s, {dest} dst, IPv6 (--ip-family dual): vs nftredir IPv6 at N={ns6[0]}",
                                   f"{n:,}", med(what, n, "nftredir6"), med(what, ns6[0], "nftredir6"), "conn/s",
                                   ">= 0.9" if n == 10_000 else ""))
        if ns6:
            rows.append(report.Row(f"conn/s, {dest} dst, IPv6: vs no rules (ceiling)", f"{ns6[-1]:,}",
                                   med(what, ns6[-1], "nftredir6"), med(what, "—", "none6"), "conn/s"))
    return rows


def _markdown(args, info: dict[str, str], who: dict[str, str], table: str, details: str, plot: Path | None) -> str:
    mode = "--quick" if args.quick else "normal"
    machine = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    measured = "\n".join(f"| {k} | `{v}` |" for k, v in who.items())
    return f"""# nftredir benchmark results

Written by `python -m bench` ({mode} run: N = {', '.join(f'{n:,}' for n in args.sizes)}; {args.reps} runs of
everything, interleaved; connection loops of {args.seconds} s). Rerun: `sudo .venv/bin/python -m bench`
from the repository's top directory (README.md, "Performance").

## Results

Medians. `ratio` is nftredir / the other column: lower is better for ms and MB, higher for conn/s.
"FSM / floor" is FSM's `iptables-restore --noflush` script for the same configuration
(`nftredir render --format iptables`), the minimal Python floor (`bench/floor.py`: import
`nftables`, `json_cmd` the same batch), FSM's rules in the same topology, or nftredir's own
baseline, as the metric says. The `target` column holds issue 22's targets (ratios against the
stack's own floors, and the init container in podman) and issue 6's for the datapath.

{table}

{f"![apply time and peak RSS against N]({plot.name})" if plot else "(No plot: matplotlib was not installed for this run.)"}

## Machine

| what | value |
| --- | --- |
{machine}
| load average at end | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |

## nftredir measured

| what | value |
| --- | --- |
{measured}

## How it was measured

- **Configuration**: N distinct /30 ranges in 100.64.0.0/10, 4 addresses apart (no two overlap or
  touch, so nothing merges), in a fixed shuffled order, the probed range 100.127.255.252/30 last.
  nftredir reads them from a MeshConfig JSON file (`--mesh-config`); FSM's script is
  `nftredir render --format iptables` of the same file (N + 22 lines).
- **apply**: whole-process wall time of `nftredir apply --mesh-config FILE` and of
  `iptables-restore --noflush < SCRIPT` (nf_tables backend), each in a namespace created for
  that run (empty ruleset) and deleted after. A small C helper (`bench/spawn.c`) enters the
  namespace with setns and times fork, exec, exit and wait4 of the command alone, so
  `ip netns exec` is not in the figure. One untimed warm-up run of each first.
  The first run of each N is checked (N ranges in nftredir's set; N rules in FSM's chain).
- **peak RSS**: ru_maxrss from wait4 of that same run, the command's own (the helper is ~1 MB;
  a Python launcher would have put its own RSS under every figure: the kernel carries the
  pre-exec peak across exec).
- **Python floor**: `/usr/bin/python3 bench/floor.py BATCH`, BATCH being `nftredir render
  --format json` for the same configuration (exactly what apply sends): import `nftables`,
  `json_cmd`, exit. Measured at every N too, beside the two others, so the table shows how
  much of nftredir's time is libnftables and the kernel, and how much is nftredir's Python.
- **stack floor**: the same floor run by the venv's interpreter after `import typer, jinja2`
  (`floor.py BATCH typer jinja2`): what any tool built on nftredir's stack pays before its
  own work. "`import typer, jinja2` alone" is that interpreter doing only the imports.
- **default config vs floor**: `nftredir apply` with no options, and `nftredir render --format
  json` (no kernel), against the floor's batch for no options; `nftredir-iptables-restore
  --noflush` with FSM's script for no options on stdin (what FSM's init container runs in
  nftredir's image, without the shell), against the same floors.
- **init container in podman** (N = 0 and 10,000): the whole `podman run --rm --network
  ns:/run/netns/X --cap-drop ALL --cap-add NET_ADMIN --user 0 --entrypoint /bin/sh IMAGE -c
  "iptables-restore --noflush <<EOF ... EOF"`, FSM's command, timed from the host, a fresh
  namespace per run (container creation, start, the shell, the restore and removal included),
  for nftredir's image (built by scripts/test-image) and for a reference image running the
  real iptables-restore. FSM's image is Alpine with iptables; Alpine cannot be pulled here, so
  the reference is its nearest Debian equivalent: the same minbase bookworm base plus Debian's
  iptables (nf_tables backend). At 10,000 FSM's command (~0.5 MB) is longer than one argv
  string may be (MAX_ARG_STRLEN, 128 KiB: execve refuses it, in podman as in a kubelet), so
  there both images get the same command text as a read-only mounted file that `/bin/sh -c`
  sources. podman uses scripts/test-image's private containers.conf (runc, cgroupfs).
  Beside them, in nftredir's image and the same way (a fresh namespace, NET_ADMIN, start and
  removal included): `/bin/true` (what the container costs with nothing in it), and the image's
  Python running bench/floor.py with the same batch as nftredir's `render --format json`, alone
  (Python floor) and after `import jinja2` (jinja2 floor; the image's iptables-restore does not
  import typer): how far below the reference any run on nftredir's stack can be.
- **diff and nft's listing**: `nftredir diff` of a table `nftredir apply` made in that run's
  namespace (untimed), identical or with one element deleted by nft; beside it `nft -j list
  table inet nftredir` of the same table: libnftables' listing alone, which every reader of
  the table pays before it compares anything.
- **conn/s**: one pod with no rules, and one with FSM's rules and one with nftredir's for each
  N, all loaded before the first measurement, share one world namespace, so every run of
  every ruleset and N is interleaved with all the others (order reversed every rep). A C
  client (`bench/conn.c`) as UID 1000 in the pod opens and closes TCP connections (closing
  with RST, so no TIME_WAIT) for {args.seconds} s, bounded also by count. The redirected
  destination is 203.0.113.10 (REDIRECT to the pod's 15001); the excluded one is
  100.127.255.253, in the last range of FSM's list (out to the world). Every run is checked
  by the servers' accept counters: every connection where it should land, none elsewhere.
  "No rules" connects straight to where the redirect would go (127.0.0.1:15001, or the
  world), without nat hooks or conntrack: the ceiling. The excluded baseline is N=1 (only the
  probed range): with no ranges there is nothing to exclude.
- **conn/s over IPv6** (`--ip-family dual`): pods with nftredir's dual-stack table and N IPv6
  /126 ranges (2001:db8:8000::/33, 8 addresses apart, the probed range
  2001:db8:ffff:ffff:ffff:ffff:ffff:fff0/126 last), probed over IPv6 the same way: redirected
  to 2001:db8:100::10 (REDIRECT to [::1]:15001), excluded to an address of the last range
  (out to the world), against the same table with no IPv6 ranges and an IPv6 ceiling.
  FSM has no IPv6 rules to compare with.

## Every measurement

{details}
"""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        ipt = Path(_preflight())
        args.workdir.mkdir(parents=True, exist_ok=True)
        info = report.machine()
        helpers = build_helpers(args.workdir)
        nftredir = args.nftredir.resolve() if args.nftredir else install.build_venv(args.workdir, _log)
        who = install.describe(nftredir)
        _log(f"measuring {nftredir} ({who['install']})")
        levels = sorted({n for n in args.sizes if n <= CONNRATE_MAX} | {1}) if "connrate" in args.phases else []
        files = _inputs(args.workdir, nftredir, set(args.sizes) | set(levels))
        samples: Samples = {}
        if "apply" in args.phases:
            _apply(args, helpers["spawn"], nftredir, ipt, files, samples)
        if "connrate" in args.phases:
            _connrate(args, helpers["conn"], nftredir, files, levels, samples)
        if "podman" in args.phases:
            _podman(args, files, samples)
    except subprocess.CalledProcessError as exc:
        print(f"bench: error: {' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; namespaces deleted", file=sys.stderr)
        return 130
    table = report.table(_rows(args, levels, samples))
    print(table)
    if args.output:
        plot = report.plot(samples, args.sizes, args.output.with_name("apply.png"))
        args.output.write_text(_markdown(args, info, who, table, report.details(samples, UNITS), plot))
        _log(f"wrote {args.output}" + (f" and {plot}" if plot else " (no plot: matplotlib is not installed)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
