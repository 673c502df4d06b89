"""Apply latency and peak RSS: each command as a whole process, in a fresh namespace per run.

Every run gets a namespace created for it (empty ruleset, as in a new pod) and deleted after,
so each apply starts from the same state. The `spawn` helper enters the namespace with setns
and times fork -> exec -> exit of the command alone (no `ip netns exec`), and its wait4
rusage gives the command's own peak RSS. The kinds compared are run alternately, A B then
B A, rep after rep. Kernel clean-up of a deleted namespace runs asynchronously, so the next
run waits a moment, longer for larger rulesets.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.native import BenchError
from bench.workload import interleaved
from lab import netlab


@dataclass(frozen=True)
class Sample:
    wall_s: float
    maxrss_kb: int


@dataclass(frozen=True)
class Command:
    """A command to time: argv, its stdin file (or None), and a check of the ruleset it left."""

    argv: Sequence[str]
    stdin: Path | None = None
    check: Callable[[netlab.Netns], None] | None = None
    prepare: Callable[[netlab.Netns], None] | None = None  # untimed, in the run's namespace first
    exit_code: int = 0  # what the command must exit with (`diff` exits 1 on a difference)


def timed(spawn: Path, ns: netlab.Netns, cmd: Command, log: Path) -> Sample:
    proc = subprocess.run(
        [str(spawn), f"/run/netns/{ns.name}", str(cmd.stdin or "-"), str(log), *cmd.argv],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise BenchError(f"spawn failed: {proc.stderr.strip()}")
    wall_ns, maxrss_kb, status = (int(x) for x in proc.stdout.split())
    if status != cmd.exit_code << 8:  # a wait status: the exit code is its high byte
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(map(str, cmd.argv))} failed (wait status {status}):\n{tail}")
    return Sample(wall_ns / 1e9, maxrss_kb)


def settle(n: int) -> None:
    time.sleep(0.05 + n * 4e-6)


def run_once(spawn: Path, cmd: Command, log: Path, check: bool) -> Sample:
    with netlab.netns(netlab.unique_name("apply", prefix=netlab.BENCH_PREFIX)) as ns:
        if cmd.prepare is not None:
            cmd.prepare(ns)
        sample = timed(spawn, ns, cmd, log)
        if check and cmd.check is not None:
            cmd.check(ns)
    return sample


def measure(
    spawn: Path, commands: dict[str, Command], reps: int, log: Path, n: int = 0, warmup: bool = False
) -> dict[str, list[Sample]]:
    """Each command `reps` times, interleaved; the first run of each is checked."""
    if warmup:  # page cache, .pyc files: not what a second pod on the node pays
        for cmd in commands.values():
            run_once(spawn, cmd, log, check=False)
            settle(n)
    samples: dict[str, list[Sample]] = {kind: [] for kind in commands}
    for rep, kind in interleaved(list(commands), reps):
        samples[kind].append(run_once(spawn, commands[kind], log, check=rep == 0))
        settle(n)
    return samples


# ----------------------------------------------------------------- what each command left


def check_nftredir(n: int) -> Callable[[netlab.Netns], None]:
    def check(ns: netlab.Netns) -> None:
        if n == 0:
            ns.run(["nft", "list", "table", "inet", "nftredir"])
            return
        out = ns.run(["nft", "-j", "list", "set", "inet", "nftredir", "outbound_ip_range_exclusions"]).stdout
        sets = [item["set"] for item in json.loads(out)["nftables"] if "set" in item]
        got = len(sets[0].get("elem", [])) if sets else 0
        if got != n:
            raise BenchError(f"nftredir apply left {got} excluded ranges in its set, expected {n}")

    return check


def check_iptables(n: int) -> Callable[[netlab.Netns], None]:
    def check(ns: netlab.Netns) -> None:
        out = ns.run(["iptables-save", "-t", "nat"]).stdout
        got = sum(1 for line in out.splitlines() if line.startswith("-A FSM_PROXY_OUTBOUND -d 100."))
        if got != n or "-A OUTPUT -p tcp -j FSM_PROXY_OUTBOUND" not in out:
            raise BenchError(f"iptables-restore left {got} exclusion rules, expected {n}")

    return check


def applied(nftredir: Path, mesh: Path, change: Sequence[str] | None = None) -> Callable[[netlab.Netns], None]:
    """Prepare a namespace for `diff`: nftredir's ruleset applied, then `change` run as nft."""
    def prepare(ns: netlab.Netns) -> None:
        ns.run([str(nftredir), "apply", "--mesh-config", str(mesh)], timeout=600)
        if change:
            ns.run(["nft", *change])

    return prepare
