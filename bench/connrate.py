"""New-connection rate from the pod, through each ruleset, in one topology for the whole phase.

    pod "none"         eth0 10.99.0.2 --veth-- p0 10.99.0.1 \
    pod "fsm", N=0     eth0 10.99.1.2 --veth-- p1 10.99.1.1  \ world, lo: EXCLUDED_DST/32,
    pod "nftredir", N=0  ...                                  / accepting on :19999
    ... one "fsm" and one "nftredir" pod per N                /

All pods exist and hold their rules at once, so every measurement of every ruleset and N is
interleaved with all the others: a machine that gets busier halfway favours no one. Each pod runs the `conn` helper's server on 15001 (the sidecar's outbound listener); the
world runs it on 19999. The "fsm" pod holds FSM's iptables rules, the "nftredir" pod
nftredir's table, the "none" pod no rules at all (not even conntrack): the ceiling, connecting
straight to where the redirect would have sent it (127.0.0.1:15001, or the world).

Every link also has IPv6 (fd00:99:K::2 -- fd00:99:K::1, the world holding EXCLUDED_DST6 on lo),
for the dual-stack pods: "nftredir6" holds nftredir's table from `--ip-family dual` with N IPv6
ranges and is probed over IPv6 (REDIRECTED_DST6, EXCLUDED_DST6); "none6" is the IPv6 ceiling.

A client (UID 1000, an app) opens and closes connections in a bounded loop (fixed seconds and
a maximum count). Every run is checked by the servers' accept counters: a redirected run must
land on the pod's 15001, an excluded one in the world, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.native import BenchError
from bench.workload import EXCLUDED_DST, EXCLUDED_DST6, REDIRECTED_DST, REDIRECTED_DST6
from lab import netlab

VARIANTS = ("none", "fsm", "nftredir", "none6", "nftredir6")  # ...6: probed over IPv6
DESTINATIONS = ("redirected", "excluded")
APP_UID = 1000
OUTBOUND_PORT = 15001
WORLD_PORT = 19999
MAX_COUNT = 1_000_000


class Server:
    """A `conn serve` child; `accepted()` asks it how many connections it took."""

    def __init__(self, conn: Path, ns: netlab.Netns, port: int, lifetime: float) -> None:
        self.proc = ns.popen([str(conn), "serve", str(lifetime), str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if self._line(10.0) != "ready":
            self.stop()
            raise BenchError(f"server in {ns.name} did not start")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.proc.stdout.readline().strip()

    def accepted(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        line = self._line(5.0)
        if not line.isdigit():
            raise BenchError(f"server did not answer its count: {line!r}")
        return int(line)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


PodKey = tuple[str, int]  # (variant, N); the "none" pod is ("none", 0)


@dataclass
class Lab:
    conn: Path
    world: netlab.Netns
    pods: dict[PodKey, netlab.Netns]
    servers: dict[PodKey | str, Server]  # by pod, and "world"

    def target(self, pod: PodKey, destination: str) -> tuple[str, int, PodKey | str]:
        """(address, port, which server must take it)."""
        v6 = pod[0].endswith("6")
        if destination == "excluded":
            return EXCLUDED_DST6 if v6 else EXCLUDED_DST, WORLD_PORT, "world"
        if pod[0] in ("none", "none6"):
            return "::1" if v6 else "127.0.0.1", OUTBOUND_PORT, pod
        return REDIRECTED_DST6 if v6 else REDIRECTED_DST, WORLD_PORT, pod

    def rate(self, pod: PodKey, destination: str, seconds: float) -> float:
        """Connections per second; raises if any failed or landed in the wrong place."""
        addr, port, expected = self.target(pod, destination)
        before = {name: server.accepted() for name, server in self.servers.items()}
        out = self.pods[pod].run(
            [str(self.conn), "connect", str(APP_UID), addr, str(port), str(seconds), str(MAX_COUNT)],
            timeout=seconds + 30,
        ).stdout
        result = json.loads(out)
        if result["failed"] or result["ok"] == 0:
            raise BenchError(f"{pod}/{destination}: connect to {addr}:{port} failed: {result}")
        deltas: dict[PodKey | str, int] = {}
        for _ in range(50):  # bounded: the servers drain their backlog within 0.5 s
            deltas = {name: server.accepted() - before[name] for name, server in self.servers.items()}
            if deltas[expected] >= result["ok"]:
                break
            time.sleep(0.01)
        wrong = {name: d for name, d in deltas.items() if d and name != expected}
        if deltas[expected] != result["ok"] or wrong:
            raise BenchError(f"{pod}/{destination}: {result['ok']} connections to {addr}:{port} should all "
                             f"reach {expected}; servers took {deltas}")
        return result["ok"] / result["seconds"]


@contextlib.contextmanager
def lab(conn: Path, pods: list[PodKey], lifetime: float) -> Iterator[Lab]:
    """The topology above with one pod per key, servers running; everything deleted on exit
    (Ctrl-C included)."""
    if len(pods) > 250:
        raise BenchError("too many pods")
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(netlab.netns(netlab.unique_name("world", prefix=netlab.BENCH_PREFIX)))
        world.run(["ip", "addr", "add", f"{EXCLUDED_DST}/32", "dev", "lo"])
        world.run(["ip", "-6", "addr", "add", f"{EXCLUDED_DST6}/128", "dev", "lo", "nodad"])
        made: dict[PodKey, netlab.Netns] = {}
        for k, key in enumerate(pods):
            pod = stack.enter_context(netlab.netns(netlab.unique_name(f"{key[0]}{key[1]}", prefix=netlab.BENCH_PREFIX)))
            pod.run(["ip", "link", "add", "name", "eth0", "type", "veth", "peer", "name", f"p{k}", "netns", world.name])
            pod.run(["ip", "addr", "add", f"10.99.{k}.2/24", "dev", "eth0"])
            world.run(["ip", "addr", "add", f"10.99.{k}.1/24", "dev", f"p{k}"])
            # nodad: usable at once (a tentative address would fail the first connections).
            pod.run(["ip", "-6", "addr", "add", f"fd00:99:{k:x}::2/64", "dev", "eth0", "nodad"])
            world.run(["ip", "-6", "addr", "add", f"fd00:99:{k:x}::1/64", "dev", f"p{k}", "nodad"])
            pod.run(["ip", "link", "set", "eth0", "up"])
            world.run(["ip", "link", "set", f"p{k}", "up"])
            pod.run(["ip", "route", "add", "default", "via", f"10.99.{k}.1", "dev", "eth0"])
            pod.run(["ip", "-6", "route", "add", "default", "via", f"fd00:99:{k:x}::1", "dev", "eth0"])
            # Every connection gets its own port; closes are RSTs, so nothing lingers in TIME_WAIT.
            pod.sysctl({"net.ipv4.ip_local_port_range": "1024 65535"})
            made[key] = pod
        servers: dict[PodKey | str, Server] = {}
        try:
            servers["world"] = Server(conn, world, WORLD_PORT, lifetime)
            for key, pod in made.items():
                servers[key] = Server(conn, pod, OUTBOUND_PORT, lifetime)
            yield Lab(conn, world, made, servers)
        finally:
            for server in servers.values():
                server.stop()


def load(ns: netlab.Netns, variant: str, fsm_rules: Path, nftredir: Path, mesh: Path) -> None:
    """FSM's script or nftredir's table into a pod (untimed); for "nftredir6" `mesh` holds
    IPv6 ranges, applied with --ip-family dual."""
    if variant == "fsm":
        ns.run(["iptables-restore", "--noflush"], input=fsm_rules.read_text(), timeout=300)
    elif variant == "nftredir":
        ns.run([str(nftredir), "apply", "--mesh-config", str(mesh)], timeout=300)
    elif variant == "nftredir6":
        ns.run([str(nftredir), "apply", "--ip-family", "dual", "--mesh-config", str(mesh)], timeout=300)
