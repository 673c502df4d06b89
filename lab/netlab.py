"""Network-namespace lab for kernel tests that compare redirect rulesets by real connections.

A test builds a two-namespace topology with `pod_world()`, loads a ruleset (FSM's iptables
script or nftredir's nftables rules) into the pod namespace, and sends probes with
`probe_many()`. Every listener answers each connection with one JSON line saying which
listener took it, on which local address, from which peer, and the original destination
that conntrack NAT recorded. So the probe learns the verdict from the bytes it receives.

Topology (all addresses exist only inside the namespaces; nothing touches the host):

    pod                                   world
    lo      127.0.0.1, ::1
    eth0    10.99.0.2/24  <-- veth -->   pod0  10.99.0.1/24
            fd99::2/64                         fd99::1/64
    eth1    10.98.0.2/24  <-- veth -->   pod1  10.98.0.1/24
            fd98::2/64                         fd98::1/64
    default via 10.99.0.1 and fd99::1 (eth0);
    192.0.2.0/24 via 10.98.0.1 and 2001:db8:200::/48 via fd98::1 (eth1)

Both families everywhere: every listener listens on IPv4 and on IPv6 (IPV6_V6ONLY, so an
address in a verdict says which family answered; IPv6 ones are written `[addr]:port`). DAD
is off, so no address is ever tentative and the kernel's choice of REDIRECT target (the
interface's first address: the ULA, listed before the link-local one) never depends on timing.

The world answers TCP and UDP on every address and port: its own nftables table
redirects all incoming TCP to one listener (REDIRECT, original destination via
SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST) and diverts all incoming UDP to one listener with
TPROXY (REDIRECT would hide the original UDP destination, see `_serve_udp`).

This file is also the server and probe child: `python3 netlab.py serve|probe|flush-conntrack`
runs inside a namespace via `ip netns exec`. It imports only the standard library for that reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import json
import os
import secrets
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

# Proxy constants of the reference (fsm-rules.md).
SIDECAR_UID = 1500
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_PORT = 15003
PROMETHEUS_PORT = 15010
HEALTH_PORTS = (15901, 15902, 15903)
HEALTHCHECK_PORT = 15904

# Topology addresses.
POD_ETH0 = "10.99.0.2"
WORLD_ETH0 = "10.99.0.1"
POD_ETH1 = "10.98.0.2"
WORLD_ETH1 = "10.98.0.1"
ETH1_ONLY_NET = "192.0.2.0/24"  # routed via eth1 in the pod
WORLD_DST = "203.0.113.10"  # an arbitrary "internet" address, reached via the default route
ETH1_DST = "192.0.2.10"  # an address of the eth1-only range
WORLD_PORT = 19999  # the single world listener port (TCP and UDP) everything is sent to

# IPv6: ULA on the links, documentation addresses beyond them.
POD6_ETH0 = "fd99::2"
WORLD6_ETH0 = "fd99::1"
POD6_ETH1 = "fd98::2"
WORLD6_ETH1 = "fd98::1"
ETH1_ONLY_NET6 = "2001:db8:200::/48"  # routed via eth1 in the pod
WORLD6_DST = "2001:db8:100::10"  # reached via the default route
ETH1_DST6 = "2001:db8:200::10"

DEFAULT_APP_PORTS = (8080, 9090)

# Kernel constants Python's socket module lacks.
SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>, at SOL_IPV6: a sockaddr_in6
IP_RECVORIGDSTADDR = 20  # <linux/in.h>, == IP_ORIGDSTADDR cmsg type
IP_TRANSPARENT = 19
IP_PKTINFO = 8
IPV6_RECVORIGDSTADDR = 74  # <linux/in6.h>, == IPV6_ORIGDSTADDR cmsg type
IPV6_TRANSPARENT = 75
SOL_IPV6 = 41

# Verdicts that are not a listener's answer.
FAILURES = ("refused", "timeout", "unreachable", "reset", "closed", "denied", "error")

PYTHON = sys.executable  # the child needs only the standard library


# --------------------------------------------------------------------------- namespaces


@dataclasses.dataclass(frozen=True)
class Netns:
    """A network namespace created by `netns()`."""

    name: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,  # a hang guard, far above what any command here takes
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and capture its output (text)."""
        proc = subprocess.run(
            self.argv(argv), input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {' '.join(argv)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a long-running command in the namespace (text pipes)."""
        return subprocess.Popen(self.argv(argv), text=True, **kwargs)

    def sysctl(self, settings: Mapping[str, object]) -> None:
        """Set sysctls inside the namespace, e.g. {"net.ipv4.ip_forward": 1}."""
        self.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])

    def nft(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(["nft", *argv], check=check, input=input)

    def nftredir(self, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI in this namespace, as a user would run it; never raises on a non-zero exit."""
        return run_nftredir(*argv, env=env, netns=self)

    def list_table(self, table: str = "nftredir") -> str:
        return self.nft("-s", "list", "table", "inet", table).stdout

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        ).stdout
        return [int(p) for p in out.split()]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_nftredir(
    *argv: str, env: Mapping[str, str] | None = None, netns: Netns | None = None, prelude: str = "",
    user: int | None = None, clean_env: bool = False, input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The one way the tests run the CLI: a fresh interpreter, as a user would; never raises
    on a non-zero exit. `prelude` runs first (e.g. to hide a module); `user` drops to that
    uid/gid; `clean_env` drops the caller's NFTREDIR_* and POD_IP.

    Whatever the command and whatever a test expects of it, it runs in `netns` or, without one,
    in a throwaway network namespace of its own (`unshare --net`): a regression that lets a bad
    value through must never install a ruleset in the machine's own namespace.
    """
    code = f"import sys\n{prelude}\nsys.argv = ['nftredir', *{list(argv)!r}]\nfrom nftredir.cli import main\nmain()\n"
    command = [PYTHON, "-c", code]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    if netns is not None:
        command = netns.argv(command)
    elif os.geteuid() == 0:
        command = ["unshare", "--net", *command]
    base = {k: v for k, v in os.environ.items() if not (clean_env and (k.startswith("NFTREDIR_") or k == "POD_IP"))}
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env={**base, **(env or {})}, timeout=300, input=input
    )


# Namespaces are named with this prefix, so concurrent runs can tell theirs apart.
NETNS_PREFIX = os.environ.get("NFTREDIR_TEST_NETNS_PREFIX", "nr")
BENCH_PREFIX = os.environ.get("NFTREDIR_TEST_NETNS_PREFIX", "nrb")  # the benchmark's (bench/)


def unique_name(role: str, prefix: str | None = None) -> str:
    """A name no parallel run uses: prefix, our pid, random hex, role."""
    return f"{prefix or NETNS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-{role}"


@contextlib.contextmanager
def netns(name: str | None = None) -> Iterator[Netns]:
    """Create a namespace with `lo` up; on exit kill whatever runs in it and delete it."""
    ns = Netns(name or unique_name("ns"))
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "-n", ns.name, "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        yield ns
    finally:
        _kill_all(ns)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=10)


def _kill_all(ns: Netns) -> None:
    # A process left in the namespace would keep it (and its veths) alive after `ip netns del`.
    for _ in range(50):  # bounded: 50 * 0.05 s
        pids = ns.pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


# --------------------------------------------------------------------------- listeners


@dataclasses.dataclass(frozen=True)
class Listener:
    """One listening socket of a server; `name` is what it reports as "listener"."""

    name: str
    port: int
    proto: str = "tcp"
    transparent: bool = False  # UDP only: TPROXY target, replies from the original address


@dataclasses.dataclass
class Server:
    """A running `serve` child; `stop()` is also done by the context manager."""

    ns: Netns
    listeners: tuple[Listener, ...]
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


@contextlib.contextmanager
def serve(ns: Netns, listeners: Iterable[Listener], lifetime: float = 600.0) -> Iterator[Server]:
    """Run listeners (one child process) in `ns` until the context exits.

    The child exits by itself after `lifetime` seconds or when its stdin closes (our end of
    the pipe dies with us), so it cannot outlive a crashed test run for long.
    """
    listeners = tuple(listeners)
    spec = json.dumps([dataclasses.asdict(lst) for lst in listeners])
    proc = ns.popen(
        [PYTHON, "-I", os.path.abspath(__file__), "serve", spec, str(lifetime)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = Server(ns, listeners, proc)
    try:
        _wait_ready(proc, timeout=10.0)
        yield server
        # A server that crashed mid-test shows up only as timeouts: say why.
        if proc.poll() not in (None, 0):
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server in {ns.name} died ({proc.returncode}): {err}")
    finally:
        server.stop()


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"server did not start: {line!r} {err}")


# --------------------------------------------------------------------------- topology


@dataclasses.dataclass(frozen=True)
class PodWorld:
    """The two namespaces of `pod_world()` and the pod's listener ports."""

    pod: Netns
    world: Netns
    app_ports: tuple[int, ...]

    def reset(self) -> None:
        """Back to no ruleset in the pod, and no connection tracked on either side, so the
        world can be reused for another ruleset: a conntrack entry left over from the last one
        (a UDP flow is tracked for 30 s and more) would keep that ruleset's NAT for a probe
        that happens to reuse its ports."""
        self.pod.run(["nft", "flush", "ruleset"])
        for ns in (self.pod, self.world):
            ns.run([PYTHON, "-I", os.path.abspath(__file__), "flush-conntrack"])


def pod_listeners(app_ports: Iterable[int]) -> list[Listener]:
    """Pod listeners: the proxy ports (15000..15904) and app ports, TCP; UDP on 15001,
    15003 and app ports so that a ruleset redirecting UDP is caught."""
    app = tuple(app_ports)
    proxy = (ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT, PROMETHEUS_PORT, *HEALTH_PORTS)
    tcp = (*proxy, HEALTHCHECK_PORT, *app)
    udp = (OUTBOUND_PORT, INBOUND_PORT, *app)
    return [Listener(f"pod:{p}", p) for p in dict.fromkeys(tcp)] + [
        Listener(f"pod:{p}/udp", p, "udp") for p in dict.fromkeys(udp)
    ]


WORLD_LISTENERS = (
    Listener("world", WORLD_PORT),
    Listener("world/udp", WORLD_PORT, "udp", transparent=True),
)

# All incoming TCP -> WORLD_PORT (NAT, so SO_ORIGINAL_DST works). All incoming UDP that
# opens a flow -> TPROXY to WORLD_PORT; `ct direction original` keeps replies to the
# world's own inbound UDP probes away from the listener. The fwmark sends TPROXY'd
# packets to a local route (table 100), as TPROXY requires. Both families (inet).
_WORLD_NFT = f"""
table inet world {{
    chain prerouting_nat {{
        type nat hook prerouting priority dstnat; policy accept;
        meta l4proto tcp redirect to :{WORLD_PORT}
    }}
    chain prerouting_tproxy {{
        type filter hook prerouting priority mangle; policy accept;
        meta l4proto udp ct direction original meta mark set 1 tproxy to :{WORLD_PORT} accept
    }}
}}
"""


@contextlib.contextmanager
def pod_world(
    app_ports: Iterable[int] = DEFAULT_APP_PORTS, listeners: Iterable[Listener] | None = None
) -> Iterator[PodWorld]:
    """Build pod <-> world (see module docstring) with listeners running on both sides: in the
    pod `listeners`, by default `pod_listeners(app_ports)` (a real sidecar takes the proxy ports
    itself, lab/e2e.py).

    The pod gets no ruleset: the test loads one. Neither ip_forward nor route_localnet is
    set in the pod: REDIRECT in OUTPUT rewrites to 127.0.0.1 on `lo` (always allowed) and
    REDIRECT in PREROUTING rewrites to the incoming interface's own address, so nothing
    is forwarded and no 127/8 address crosses a non-loopback interface.
    """
    app = tuple(app_ports)
    with contextlib.ExitStack() as stack:
        pod = stack.enter_context(netns(unique_name("pod")))
        world = stack.enter_context(netns(unique_name("world")))
        # rp_filter=0 everywhere: the pod may source one interface's address out of the
        # other (src_ip probes), which strict reverse-path filtering would drop. No DAD:
        # see the module docstring.
        for ns in (pod, world):
            ns.sysctl({"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                       "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0})
        # Create the veths inside the pod, peer straight into the world: no interface
        # ever exists in the host namespace, so names cannot clash with the host's.
        for pod_if, world_if, pod_ip, world_ip, pod_ip6, world_ip6 in (
            ("eth0", "pod0", POD_ETH0, WORLD_ETH0, POD6_ETH0, WORLD6_ETH0),
            ("eth1", "pod1", POD_ETH1, WORLD_ETH1, POD6_ETH1, WORLD6_ETH1),
        ):
            pod.run(["ip", "link", "add", "name", pod_if, "type", "veth",
                     "peer", "name", world_if, "netns", world.name])
            pod.run(["ip", "addr", "add", f"{pod_ip}/24", "dev", pod_if])
            world.run(["ip", "addr", "add", f"{world_ip}/24", "dev", world_if])
            pod.run(["ip", "-6", "addr", "add", f"{pod_ip6}/64", "dev", pod_if, "nodad"])
            world.run(["ip", "-6", "addr", "add", f"{world_ip6}/64", "dev", world_if, "nodad"])
            pod.run(["ip", "link", "set", pod_if, "up"])
            world.run(["ip", "link", "set", world_if, "up"])
            pod.sysctl({f"net.ipv4.conf.{pod_if}.rp_filter": 0})
            world.sysctl({f"net.ipv4.conf.{world_if}.rp_filter": 0})
        pod.run(["ip", "route", "add", "default", "via", WORLD_ETH0, "dev", "eth0"])
        pod.run(["ip", "route", "add", ETH1_ONLY_NET, "via", WORLD_ETH1, "dev", "eth1"])
        pod.run(["ip", "-6", "route", "add", "default", "via", WORLD6_ETH0, "dev", "eth0"])
        pod.run(["ip", "-6", "route", "add", ETH1_ONLY_NET6, "via", WORLD6_ETH1, "dev", "eth1"])
        # The world needs no route back: it only ever answers 10.99.0.2 / 10.98.0.2 (and
        # fd99::2 / fd98::2), which are on its connected subnets (REDIRECT/TPROXY make every destination local).
        world.run(["ip", "rule", "add", "fwmark", "1", "lookup", "100"])
        world.run(["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"])
        world.run(["ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100"])
        world.run(["ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100"])
        world.run(["nft", "-f", "-"], input=_WORLD_NFT)
        stack.enter_context(serve(world, WORLD_LISTENERS))
        stack.enter_context(serve(pod, pod_listeners(app) if listeners is None else listeners))
        yield PodWorld(pod, world, app)


# --------------------------------------------------------------------------- probes


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a probe got: the answering listener and its view, or a failure name
    (one of FAILURES, "error" with detail in `local`). `orig_dst` is the destination
    before NAT, or None when the connection was not NATed (or, for UDP, not TPROXY'd)."""

    listener: str
    local: str | None = None
    peer: str | None = None
    orig_dst: str | None = None

    @property
    def answered(self) -> bool:
        return self.listener not in FAILURES

    def masked(self) -> Verdict:
        """The same verdict with the peer's port as '*': ephemeral ports differ per run."""
        if self.peer is None:
            return self
        return dataclasses.replace(self, peer=self.peer.rsplit(":", 1)[0] + ":*")

    def __str__(self) -> str:
        parts = [self.listener]
        if self.local:
            parts.append(f"local={self.local}")
        if self.orig_dst:
            parts.append(f"orig={self.orig_dst}")
        if self.peer:
            parts.append(f"peer={self.peer}")
        return " ".join(parts)


class Probe(NamedTuple):
    """One connection attempt: to dst:port over proto, optionally bound to src."""

    dst: str
    port: int
    proto: str = "tcp"
    src: str | None = None

    def __str__(self) -> str:
        src = f" from {self.src}" if self.src else ""
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        return f"{self.proto} {dst}:{self.port}{src}"


# How long a probe waits for an answer before calling it a timeout. Every answer in a healthy
# lab comes in milliseconds, and no configuration expects a timeout, so this is a hang guard
# with room for a CPU 20x slower (qemu under TCG): a 2 s wait lost an IPv6 answer there.
PROBE_TIMEOUT = 10.0

_WORKERS = 32  # parallel probes per child; the timeout cost of dropped probes is shared


def _probe_groups(
    ns: Netns, groups: Sequence[tuple[int, int, list[Probe]]], timeout: float
) -> list[list[Verdict]]:
    """Run (uid, gid, probes) groups from `ns` with one child, which forks one process per
    group (a Python start-up costs more than a group's probes); verdicts per group, in order."""
    if not any(batch for _, _, batch in groups):
        return [[] for _ in groups]
    rounds = max(-(-len(batch) // _WORKERS) for _, _, batch in groups)
    proc = ns.run(
        [PYTHON, "-I", os.path.abspath(__file__), "probe", str(timeout)],
        input=json.dumps([[uid, gid, [list(p) for p in batch]] for uid, gid, batch in groups]),
        timeout=rounds * (timeout + 1) + 15,
    )
    return [[Verdict(**v) for v in verdicts] for verdicts in json.loads(proc.stdout)]


def probe_many(
    ns: Netns,
    probes: Iterable[Probe | tuple[Any, ...]],
    uid: int = 0,
    timeout: float = PROBE_TIMEOUT,
    gid: int | None = None,
) -> list[Verdict]:
    """Run probes from `ns` as `uid` and `gid` (default: the uid; no supplementary groups),
    verdicts in probe order. A probe to an address with ':' is IPv6."""
    return _probe_groups(ns, [(uid, uid if gid is None else gid, [Probe(*p) for p in probes])], timeout)[0]


def probe(
    ns: Netns,
    dst_ip: str,
    dst_port: int,
    uid: int = 0,
    proto: str = "tcp",
    src_ip: str | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Verdict:
    """One probe (see probe_many; batch when you have several)."""
    return probe_many(ns, [Probe(dst_ip, dst_port, proto, src_ip)], uid, timeout)[0]


def probe_cases(
    cases: Iterable[tuple[Any, ...]],
    timeout: float = PROBE_TIMEOUT,
) -> list[Verdict]:
    """Run (namespace, uid, probe[, gid]) cases, one child per namespace, the namespaces side
    by side; verdicts in order. The gid defaults to the uid."""
    cases = [(c[0], c[1], Probe(*c[2]), c[3] if len(c) > 3 else c[1]) for c in cases]
    groups: dict[Netns, dict[tuple[int, int], list[int]]] = {}
    for i, (ns, uid, _, gid) in enumerate(cases):
        groups.setdefault(ns, {}).setdefault((uid, gid), []).append(i)
    verdicts: list[Verdict | None] = [None] * len(cases)

    def run(ns: Netns) -> None:
        keys = list(groups[ns])
        batches = [(uid, gid, [cases[i][2] for i in groups[ns][uid, gid]]) for uid, gid in keys]
        for key, got in zip(keys, _probe_groups(ns, batches, timeout), strict=True):
            for i, v in zip(groups[ns][key], got, strict=True):
                verdicts[i] = v

    with concurrent.futures.ThreadPoolExecutor(len(groups) or 1) as pool:
        list(pool.map(run, groups))
    return [v for v in verdicts if v is not None]


def format_mismatches(rows: Iterable[tuple[Any, Verdict, Verdict]]) -> str:
    """An aligned table of (probe description, expected, actual) rows."""
    table = [("probe", "expected", "actual")] + [(str(p), str(e), str(a)) for p, e, a in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- child side
# Everything below runs inside a namespace, in the `serve` or `probe` child.


def hostport(host: str, port: int) -> str:
    """host:port, [host]:port for IPv6: how every verdict (and Envoy's access log) writes an address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addr(sa: tuple[Any, ...]) -> str:
    return hostport(sa[0], sa[1])


def _sockaddr(raw: bytes) -> str:
    """struct sockaddr_in or sockaddr_in6 as text: family (host order), port (network order),
    then the address (after the flow info for IPv6)."""
    if struct.unpack_from("=H", raw)[0] == socket.AF_INET6:
        port, packed = struct.unpack_from("!2xH4x16s", raw)
        return f"[{socket.inet_ntop(socket.AF_INET6, packed)}]:{port}"
    port, packed = struct.unpack_from("!2xH4s", raw)
    return f"{socket.inet_ntoa(packed)}:{port}"


def _orig_dst(conn: socket.socket) -> str | None:
    try:
        if conn.family == socket.AF_INET6:
            return _sockaddr(conn.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28))
        return _sockaddr(conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
    except OSError:  # ENOENT: no NAT conntrack entry for this connection
        return None


def _answer_tcp(name: str, lsock: socket.socket) -> None:
    conn, peer = lsock.accept()
    with conn:
        conn.settimeout(1.0)
        local = _addr(conn.getsockname())
        orig = _orig_dst(conn)
        # SO_ORIGINAL_DST answers for any tracked connection (orig == local when not NATed)
        # and ENOENT only when nothing in the namespace enables conntrack. Report null for
        # both so a verdict does not depend on whether some ruleset turned conntrack on.
        reply = {"listener": name, "local": local, "peer": _addr(peer),
                 "orig_dst": None if orig == local else orig}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")


def _serve_udp(name: str, sock: socket.socket, transparent: bool) -> None:
    # IP(V6)_RECVORIGDSTADDR reports the destination as the packet carries it when it reaches
    # the socket: after REDIRECT/DNAT that is the NATed address (conntrack's original
    # destination is not visible for UDP; SO_ORIGINAL_DST is TCP/SCTP only), after TPROXY
    # it is the real original destination. So only a transparent listener reports orig_dst.
    v6 = sock.family == socket.AF_INET6
    level, kind = (SOL_IPV6, IPV6_RECVORIGDSTADDR) if v6 else (socket.SOL_IP, IP_RECVORIGDSTADDR)
    _data, ancdata, _flags, peer = sock.recvmsg(2048, 256)
    dst = next((_sockaddr(d) for lvl, typ, d in ancdata if lvl == level and typ == kind), None)
    reply = json.dumps({"listener": name, "local": dst, "peer": _addr(peer),
                        "orig_dst": dst if transparent else None}).encode() + b"\n"
    if dst is None:
        sock.sendto(reply, peer)
        return
    host, port = dst.rsplit(":", 1)
    host = host.strip("[]")
    if not transparent:
        # Answer from the address the datagram reached (the socket is bound to the wildcard, so
        # the kernel would otherwise pick the route's source, e.g. 10.99.0.2 instead of
        # 127.0.0.1 after a REDIRECT), so the reply matches the conntrack entry and gets
        # un-NATed back to what the prober's connected socket expects.
        if v6:
            pktinfo = struct.pack("=16sI", socket.inet_pton(socket.AF_INET6, host), 0)
            sock.sendmsg([reply], [(SOL_IPV6, socket.IPV6_PKTINFO, pktinfo)], 0, peer)
        else:
            pktinfo = struct.pack("=i4s4s", 0, socket.inet_aton(host), bytes(4))
            sock.sendmsg([reply], [(socket.SOL_IP, IP_PKTINFO, pktinfo)], 0, peer)
        return
    # TPROXY does no NAT, so answer from the original destination with a transparent
    # socket bound to it, or the prober's connected socket would ignore the reply.
    with socket.socket(sock.family, socket.SOCK_DGRAM) as out:
        out.setsockopt(*((SOL_IPV6, IPV6_TRANSPARENT) if v6 else (socket.SOL_IP, IP_TRANSPARENT)), 1)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            out.bind((host, int(port)))
            out.sendto(reply, peer)


def _listening_socket(lst: Listener, family: socket.AddressFamily) -> socket.socket:
    v6 = family == socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM if lst.proto == "tcp" else socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6:
        sock.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1)
    if lst.proto == "udp":
        sock.setsockopt(*((SOL_IPV6, IPV6_RECVORIGDSTADDR) if v6 else (socket.SOL_IP, IP_RECVORIGDSTADDR)), 1)
        if lst.transparent:
            sock.setsockopt(*((SOL_IPV6, IPV6_TRANSPARENT) if v6 else (socket.SOL_IP, IP_TRANSPARENT)), 1)
    sock.bind(("::" if v6 else "0.0.0.0", lst.port))
    if lst.proto == "tcp":
        sock.listen(512)
    return sock


def _serve_main(spec_json: str, lifetime: float) -> None:
    deadline = time.monotonic() + lifetime
    sel = selectors.DefaultSelector()
    for item in json.loads(spec_json):
        lst = Listener(**item)
        for family in (socket.AF_INET, socket.AF_INET6):
            sel.register(_listening_socket(lst, family), selectors.EVENT_READ, lst)
    sel.register(sys.stdin, selectors.EVENT_READ, None)  # EOF: the parent is gone
    print("ready", flush=True)
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(min(left, 5.0)):
            lst, sock = key.data, cast(socket.socket, key.fileobj)
            if lst is None:
                if not sys.stdin.readline():
                    return
                continue
            try:
                if lst.proto == "tcp":
                    _answer_tcp(lst.name, sock)
                else:
                    _serve_udp(lst.name, sock, lst.transparent)
            except OSError as exc:  # one bad client must not stop the server
                print(f"{lst.name}: {exc}", file=sys.stderr, flush=True)


_ERRNO_VERDICTS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTUNREACH: "unreachable",
    errno.ECONNRESET: "reset",
    errno.EPERM: "denied",  # UDP dropped in OUTPUT (a dropped TCP SYN is a "timeout")
    errno.EACCES: "denied",
}


def _probe_one(p: Probe, timeout: float) -> dict[str, Any]:
    kind = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in p.dst else socket.AF_INET
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(timeout)
            if p.src:
                s.bind((p.src, 0))
            s.connect((p.dst, p.port))
            if p.proto == "udp":
                s.send(b"probe\n")
                data = s.recv(4096)
            else:
                data = b""
                while not data.endswith(b"\n") and len(data) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        if not data:
            return {"listener": "closed"}
        reply: dict[str, Any] = json.loads(data)
        return reply
    except TimeoutError:
        return {"listener": "timeout"}
    except OSError as exc:
        verdict = _ERRNO_VERDICTS.get(exc.errno or 0)
        return {"listener": verdict} if verdict else {"listener": "error", "local": str(exc)}
    except ValueError as exc:  # not JSON: something else answered
        return {"listener": "error", "local": f"bad reply: {exc}"}


def _flush_conntrack_main() -> None:
    # What `conntrack -F` sends: IPCTNL_MSG_CT_DELETE without a tuple flushes the table.
    netlink_netfilter, ct_delete = 12, (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
    request_ack, nlmsg_error = 1 | 4, 2
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter) as nl:
        nl.settimeout(10)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            nl.send(struct.pack("=IHHIIBBH", 20, ct_delete, request_ack, seq, 0, family, 0, 0))
            reply = nl.recv(4096)
            kind, error = struct.unpack_from("=H", reply, 4)[0], struct.unpack_from("=i", reply, 16)[0]
            if kind != nlmsg_error or error not in (0, -errno.ENOENT):
                sys.exit(f"flushing conntrack failed: {os.strerror(-error) if kind == nlmsg_error else kind}")


def _probe_group(uid: int, gid: int, probes: list[Probe], timeout: float) -> list[dict[str, Any]]:
    if uid != 0 or gid != 0:
        # Drop root fully: the owner match looks at the socket's fsuid (and skgid at its fsgid).
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if not probes:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(_WORKERS, len(probes))) as pool:
        return list(pool.map(lambda p: _probe_one(p, timeout), probes))


def _probe_main(timeout: float) -> None:
    """Each group in a forked process of its own (no threads exist yet when forking), its
    verdicts back through a pipe."""
    children = []
    for uid, gid, probes in json.load(sys.stdin):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 1
            try:
                with os.fdopen(write, "w") as out:
                    json.dump(_probe_group(uid, gid, [Probe(*p) for p in probes], timeout), out)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        children.append((pid, read, uid, gid))
    results = []
    for pid, read, uid, gid in children:
        with os.fdopen(read) as pipe:
            text = pipe.read()
        if os.waitpid(pid, 0)[1] != 0:
            sys.exit(f"probing as uid {uid} gid {gid} failed")
        results.append(json.loads(text))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve_main(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "probe":
        _probe_main(float(sys.argv[2]))
    elif sys.argv[1] == "flush-conntrack":
        _flush_conntrack_main()
    else:
        sys.exit(f"usage: {sys.argv[0]} serve SPEC LIFETIME | probe TIMEOUT | flush-conntrack")
