"""End to end with a real sidecar: Envoy, FSM's listeners, traffic judged by its access log.

`python -m lab.e2e --envoy PATH [--kube-image IMAGE]` (scripts/test-e2e installs Envoy and
runs this; the pod of `--kube-image` is lab/e2e_kube.py's) builds
lab/netlab.py's pod and world, starts Envoy in the pod as UID 1500 with no capabilities, with
FSM's listeners (outbound 15001 and inbound 15003, each with the original_dst listener filter;
admin on 127.0.0.1:15000), and for each scenario below loads the redirect three ways:

- `apply`: `nftredir apply` with the scenario's flags;
- `shim`:  FSM's exact init-container command (`/bin/sh -c "iptables-restore --noflush <<EOF
           ... EOF"`, tests/fsm_command.py) with the image's iptables-restore (image/, which
           runs `nftredir iptables-restore`) first on PATH;
- `fsm`:   the same command through the real iptables-restore: the reference (in dual mode
           with its IPv6 counterpart through ip6tables-restore, as tests/test_differential.py).

Each case opens one connection (as the app, UID 1000; the sidecar's UID; or from the world) and
is judged from both ends: the Envoy access-log entries it made, hop by hop (which listener, the
original destination, the upstream, each hop's source being the previous hop's connection), and
what the answering server saw (who answered, its local address and original destination, and
its peer being the last hop's connection). A case holds when it holds in every way and the three
ways' entries and answers agree (ephemeral ports masked).

No assertion depends on time: after each case a connection to a sentinel listener of Envoy's
(direct_response) is logged, and the case's entries are those before it. Envoy runs one worker
thread (`--concurrency 1`), so entries are written in the order the connections closed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lab import netlab as nl
from lab.netlab import hostport

APP_UID = 1000
APP_PORT = 8080
OTHER_APP_PORT = 9090  # the inbound port the exclusion scenarios exclude
SENTINEL_PORT = 15999  # Envoy's marker listener, on 127.0.0.1 only
SERVICE_VIP, SERVICE_VIP6 = "10.96.0.10", "fd96::10"  # the pod's own service, mapped by Envoy to the pod IP
EXCLUDED_NET, EXCLUDED_DST = "198.51.100.0/24", "198.51.100.10"
EXCLUDED_PORT = 5432
CLIENT_TIMEOUT = 10.0  # a hang guard for one connection; every answer comes at once
LOG_WAIT = 60.0  # a hang guard for Envoy writing the sentinel's entry (every 20 ms it flushes)
READY_ATTEMPTS = 600  # admin /ready polled every 0.1 s: a bound, not an assertion

CLIENT = Path(__file__).with_name("e2e_client.py")


# --------------------------------------------------------------------------- Envoy


LOG_FIELDS = {  # what each access-log entry records
    "original_dst": "%DOWNSTREAM_LOCAL_ADDRESS%",  # after the original_dst listener filter
    "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "upstream": "%UPSTREAM_HOST%",
    "upstream_local": "%UPSTREAM_LOCAL_ADDRESS%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "flags": "%RESPONSE_FLAGS%",
}


def _access_log(path: str, listener: str) -> list[dict[str, Any]]:
    return [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": {"listener": listener, **LOG_FIELDS}},
        },
    }]


def _tcp_proxy(cluster: str, log: str, listener: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster,
            "cluster": cluster,
            "access_log": _access_log(log, listener),
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}]},
    }


_ORIGINAL_DST = [{
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"},
}]


def envoy_config(log: str) -> dict[str, Any]:
    """FSM's sidecar listeners, per family: outbound 15001 to the original destination (the
    pod's own service to the pod IP, as the mesh would route it), inbound 15003 to the app on
    localhost, by original destination port, as FSM's inbound does; the sentinel."""
    listeners, clusters = [], [
        {"name": "original_dst", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s"}]
    for family, wildcard, localhost, pod_ip, vip, prefix in (
        ("", "0.0.0.0", "127.0.0.1", nl.POD_ETH0, SERVICE_VIP, 32),
        ("6", "::", "::1", nl.POD6_ETH0, SERVICE_VIP6, 128),
    ):
        clusters.append(_static(f"self{family}", pod_ip, APP_PORT))
        listeners.append({
            "name": f"outbound{family}", "address": _address(wildcard, nl.OUTBOUND_PORT),
            "listener_filters": _ORIGINAL_DST,
            "filter_chains": [
                {"filter_chain_match": {"prefix_ranges": [{"address_prefix": vip, "prefix_len": prefix}]},
                 "filters": [_tcp_proxy(f"self{family}", log, "outbound")]},
                {"filters": [_tcp_proxy("original_dst", log, "outbound")]},
            ],
        })
        chains = []
        for port in (APP_PORT, OTHER_APP_PORT):
            clusters.append(_static(f"app{family}_{port}", localhost, port))
            chains.append({"filter_chain_match": {"destination_port": port},
                           "filters": [_tcp_proxy(f"app{family}_{port}", log, "inbound")]})
        listeners.append({
            "name": f"inbound{family}", "address": _address(wildcard, nl.INBOUND_PORT),
            "listener_filters": _ORIGINAL_DST, "filter_chains": chains,
        })
    listeners.append({
        "name": "sentinel", "address": _address("127.0.0.1", SENTINEL_PORT),
        "access_log": _access_log(log, "sentinel"),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.direct_response",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config",
                             "response": {"inline_string": "sentinel\n"}},
        }]}],
    })
    return {
        "admin": {"address": _address("127.0.0.1", nl.ADMIN_PORT)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# --------------------------------------------------------------------------- the access log


@dataclasses.dataclass(frozen=True)
class Entry:
    """One access-log line."""

    listener: str
    original_dst: str
    downstream: str
    upstream: str | None
    upstream_local: str | None
    cluster: str | None
    flags: str | None

    def masked(self) -> Entry:
        """Ephemeral ports as '*': they differ between runs."""
        return dataclasses.replace(self, downstream=mask(self.downstream), upstream_local=mask(self.upstream_local))


def mask(addr: str | None) -> str | None:
    return None if addr is None else addr.rsplit(":", 1)[0] + ":*"


def parse_log(text: str) -> list[Entry]:
    """Entries in the order written; Envoy writes '-' (or null) for a value it lacks."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            raw = json.loads(line)
            entries.append(Entry(**{f.name: None if raw.get(f.name) in ("-", "", None) else str(raw[f.name])
                                    for f in dataclasses.fields(Entry)}))
    return entries


def windows(entries: Sequence[Entry]) -> list[list[Entry]]:
    """The entries between consecutive sentinel entries: one list per sentinel, the entries
    logged before it (and after the previous one)."""
    out: list[list[Entry]] = [[]]
    for e in entries:
        if e.listener == "sentinel":
            out.append([])
        else:
            out[-1].append(e)
    return out[:-1]


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Hop:
    """One Envoy listener a connection passes: its log shows this original destination and
    upstream, and the connection came from the previous hop's upstream connection."""

    listener: str
    original_dst: str
    upstream: str


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    side: str  # where the client runs: "pod" or "world"
    uid: int
    dst: str
    port: int
    hops: tuple[Hop, ...]  # () for a connection that must not pass Envoy
    answer: str  # the listener that answers: lab/netlab.py's names, or "admin"
    seen: str | None = None  # the local address the answering server saw, when checked
    orig: str | None = None  # the original destination it saw (None: not NATed)

    @property
    def target(self) -> str:
        return hostport(self.dst, self.port)


@dataclasses.dataclass(frozen=True)
class Result:
    """What one case's connection got: its local address and the answer (or the error),
    and the entries Envoy logged for it."""

    local: str | None
    reply: str | None
    error: str | None
    entries: tuple[Entry, ...]

    def masked(self) -> tuple[Any, ...]:
        """What must be equal across the three ways."""
        answer: Any = self.error
        if self.reply is not None:
            answer = self.reply.split("\r\n", 1)[0]  # admin: the status line
            with contextlib.suppress(ValueError):
                seen = json.loads(self.reply)
                answer = (seen.get("listener"), seen.get("local"), seen.get("orig_dst"), mask(seen.get("peer")))
        return answer, tuple(e.masked() for e in self.entries)


def count(listeners: Counter[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(listeners.items())) or "nothing"


def judge(case: Case, result: Result) -> list[str]:
    """What is wrong with a case's result; nothing when it holds."""
    if result.error is not None or result.local is None or result.reply is None:
        return [f"no answer ({result.error})"]
    problems = []
    logged, hops = Counter(e.listener for e in result.entries), Counter(h.listener for h in case.hops)
    if logged != hops:
        problems.append(f"Envoy logged {count(logged)}, expected {count(hops)}")
    source = result.local
    for hop in case.hops:
        entry = next((e for e in result.entries if e.listener == hop.listener and e.downstream == source), None)
        if entry is None:
            problems.append(f"no {hop.listener} entry from {source}")
            break
        if (entry.original_dst, entry.upstream) != (hop.original_dst, hop.upstream):
            problems.append(f"{hop.listener}: original destination {entry.original_dst}, upstream {entry.upstream}"
                            f" (expected {hop.original_dst}, {hop.upstream})")
        source = entry.upstream_local or "?"
    if case.answer == "admin":
        if not admin_live(result.reply):
            problems.append(f"admin answered {result.reply[:60]!r}")
        return problems
    try:
        seen = json.loads(result.reply)
    except ValueError:
        return [*problems, f"not a lab server's answer: {result.reply[:60]!r}"]
    want = {"listener": case.answer, "peer": source, "orig_dst": case.orig}
    if case.seen is not None:
        want["local"] = case.seen
    problems += [f"the {case.answer} side saw {key} {seen.get(key)}, expected {value}"
                 for key, value in want.items() if seen.get(key) != value]
    return problems


def admin_live(reply: str) -> bool:
    """Envoy's admin answered /ready with 200 and LIVE (chunked or not)."""
    status, _, body = reply.partition("\r\n\r\n")
    return status.startswith("HTTP/1.1 200 ") and "LIVE" in body.split()


def _outbound(dst: str, port: int) -> Hop:
    return Hop("outbound", hostport(dst, port), hostport(dst, port))


def _inbound(dst: str, port: int, app_host: str) -> Hop:
    return Hop("inbound", hostport(dst, port), hostport(app_host, port))


def _via_outbound(name: str, dst: str, port: int, uid: int = APP_UID) -> Case:
    return Case(name, "pod", uid, dst, port, (_outbound(dst, port),), "world", orig=hostport(dst, port))


def _direct_out(name: str, dst: str, port: int, uid: int = APP_UID) -> Case:
    return Case(name, "pod", uid, dst, port, (), "world", orig=hostport(dst, port))


def _via_inbound(name: str, pod_ip: str, localhost: str, app_seen: str | None = None, app_orig: str | None = None) -> Case:
    return Case(name, "world", 0, pod_ip, APP_PORT, (_inbound(pod_ip, APP_PORT, localhost),), f"app:{APP_PORT}",
                seen=app_seen or hostport(localhost, APP_PORT), orig=app_orig)


def _direct_in(name: str, pod_ip: str, port: int, answer: str) -> Case:
    return Case(name, "world", 0, pod_ip, port, (), answer, seen=hostport(pod_ip, port))


def _self_call(name: str, vip: str, pod_ip: str, localhost: str, app_seen: str | None = None,
               app_orig: str | None = None) -> Case:
    hops = (Hop("outbound", hostport(vip, APP_PORT), hostport(pod_ip, APP_PORT)), _inbound(pod_ip, APP_PORT, localhost))
    return Case(name, "pod", APP_UID, vip, APP_PORT, hops, f"app:{APP_PORT}",
                seen=app_seen or hostport(localhost, APP_PORT), orig=app_orig)


def _family_cases(v6: bool) -> list[Case]:
    """The default configuration's cases in one family."""
    world, pod_ip, vip, localhost = ((nl.WORLD6_DST, nl.POD6_ETH0, SERVICE_VIP6, "::1") if v6
                                     else (nl.WORLD_DST, nl.POD_ETH0, SERVICE_VIP, "127.0.0.1"))
    w80 = hostport(world, 80)
    return [
        _via_outbound(f"app -> world {w80} passes outbound with its original destination, one entry (not looped)", world, 80),
        _direct_out(f"sidecar (UID {nl.SIDECAR_UID}) -> world {w80} goes straight out", world, 80, nl.SIDECAR_UID),
        _via_inbound(f"world -> pod {hostport(pod_ip, APP_PORT)} passes inbound to the app on {localhost}", pod_ip, localhost),
        *(_direct_in(f"world -> pod {hostport(pod_ip, port)} bypasses Envoy", pod_ip, port, f"pod:{port}")
          for port in (nl.PROMETHEUS_PORT, *nl.HEALTH_PORTS, nl.HEALTHCHECK_PORT)),
        Case(f"app -> its own pod IP {hostport(pod_ip, APP_PORT)} over lo reaches the app directly", "pod", APP_UID,
             pod_ip, APP_PORT, (), f"app:{APP_PORT}", seen=hostport(pod_ip, APP_PORT)),
        _self_call(f"app -> its service {hostport(vip, APP_PORT)}: outbound, then the sidecar's call to "
                   f"{hostport(pod_ip, APP_PORT)} over lo re-enters inbound", vip, pod_ip, localhost),
    ]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    options: dict[str, str]  # flag-style, as tests/scenarios.py
    cases: tuple[Case, ...]


W80 = hostport(nl.WORLD_DST, 80)
SCENARIOS = (
    Scenario("defaults", {}, (
        *_family_cases(v6=False),
        Case(f"app -> 127.0.0.1:{nl.ADMIN_PORT}: Envoy's admin answers, no listener entry", "pod", APP_UID,
             "127.0.0.1", nl.ADMIN_PORT, (), "admin"),
        _via_outbound(f"app -> world {nl.WORLD_DST}:{nl.ADMIN_PORT} passes outbound (FSM's 15000 ACCEPT never matches)",
                      nl.WORLD_DST, nl.ADMIN_PORT),
    )),
    Scenario("exclusions", {
        "outbound_ip_range_exclusion_list": EXCLUDED_NET,
        "outbound_port_exclusion_list": str(EXCLUDED_PORT),
        "network_interface_exclusion_list": "eth1",
        "inbound_port_exclusion_list": str(OTHER_APP_PORT),
    }, (
        _direct_out(f"app -> {EXCLUDED_DST}:80 (excluded range) goes straight out", EXCLUDED_DST, 80),
        _direct_out(f"app -> {nl.WORLD_DST}:{EXCLUDED_PORT} (excluded port) goes straight out", nl.WORLD_DST, EXCLUDED_PORT),
        _direct_out(f"app -> {nl.ETH1_DST}:80 (routed via eth1, excluded) goes straight out", nl.ETH1_DST, 80),
        _via_outbound(f"app -> world {W80} still passes outbound", nl.WORLD_DST, 80),
        _direct_in(f"world -> pod {nl.POD_ETH0}:{OTHER_APP_PORT} (excluded inbound port) reaches the app directly",
                   nl.POD_ETH0, OTHER_APP_PORT, f"app:{OTHER_APP_PORT}"),
        _direct_in(f"world -> pod {nl.POD_ETH1}:{APP_PORT} (in on eth1, excluded) reaches the app directly",
                   nl.POD_ETH1, APP_PORT, f"app:{APP_PORT}"),
        _via_inbound(f"world -> pod {nl.POD_ETH0}:{APP_PORT} still passes inbound", nl.POD_ETH0, "127.0.0.1"),
    )),
    Scenario("inclusions", {"outbound_ip_range_inclusion_list": "203.0.113.0/24"}, (
        _via_outbound(f"app -> world {W80} (included) passes outbound", nl.WORLD_DST, 80),
        _direct_out(f"app -> {EXCLUDED_DST}:80 (not included) goes straight out", EXCLUDED_DST, 80),
    )),
    Scenario("podip", {"local_proxy_mode": "podip", "pod_ip": nl.POD_ETH0}, (
        _via_inbound(f"world -> pod {nl.POD_ETH0}:{APP_PORT} passes inbound; its call to 127.0.0.1 is DNATed to the pod IP",
                     nl.POD_ETH0, "127.0.0.1", app_seen=f"{nl.POD_ETH0}:{APP_PORT}", app_orig=f"127.0.0.1:{APP_PORT}"),
        _via_outbound(f"app -> world {W80} passes outbound", nl.WORLD_DST, 80),
        _self_call(f"app -> its service {SERVICE_VIP}:{APP_PORT}: outbound, inbound, then DNATed to the pod IP",
                   SERVICE_VIP, nl.POD_ETH0, "127.0.0.1", app_seen=f"{nl.POD_ETH0}:{APP_PORT}",
                   app_orig=f"127.0.0.1:{APP_PORT}"),
    )),
    Scenario("dual", {
        "ip_family": "dual",
        "outbound_port_exclusion_list": str(EXCLUDED_PORT),
        "inbound_port_exclusion_list": str(OTHER_APP_PORT),
    }, (
        *_family_cases(v6=True),
        _direct_out(f"app -> world [{nl.WORLD6_DST}]:{EXCLUDED_PORT} (excluded port) goes straight out",
                    nl.WORLD6_DST, EXCLUDED_PORT),
        _direct_in(f"world -> pod [{nl.POD6_ETH0}]:{OTHER_APP_PORT} (excluded inbound port) reaches the app directly",
                   nl.POD6_ETH0, OTHER_APP_PORT, f"app:{OTHER_APP_PORT}"),
        _via_outbound(f"app -> world {W80} (IPv4 in dual mode) passes outbound", nl.WORLD_DST, 80),
    )),
)
WAYS = ("apply", "shim", "fsm")  # the last is the reference


# --------------------------------------------------------------------------- loading the rules


def _load(way: str, lab: nl.PodWorld, options: dict[str, str]) -> None:
    """Load a scenario's redirect into the pod, one of WAYS."""
    from tests.fsm_command import fsm_command
    from tests.scenarios import as_flags, config_of

    if way == "apply":
        result = lab.pod.nftredir("apply", *as_flags(options))
        if result.returncode != 0:
            raise RuntimeError(f"nftredir apply failed ({result.returncode}): {result.stderr}")
        return
    # FSM's injector writes the IPv4 script; dual mode is the environment's part (shim) or,
    # for the reference, its IPv6 counterpart under ip6tables-restore.
    ipv4 = {k: v for k, v in options.items() if k != "ip_family"}
    env = {"POD_IP": options.get("pod_ip", nl.POD_ETH0)}
    if way == "shim":
        env |= {"PATH": os.pathsep.join([str(Path(nl.REPO) / "image"), str(Path(sys.executable).parent),
                                         os.environ.get("PATH", "")]),
                "PYTHONPATH": nl.REPO}
        if options.get("ip_family"):
            env["NFTREDIR_IP_FAMILY"] = options["ip_family"]
    lab.pod.run(["env", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", fsm_command(config_of(**ipv4))])
    if way == "fsm" and options.get("ip_family") == "dual":
        from nftredir.render import render

        lab.pod.run(["ip6tables-restore", "--noflush"], input=render(config_of(**options), "ip6tables"))


# --------------------------------------------------------------------------- running


ENVOY_FLAGS = ("--concurrency", "1", "--disable-hot-restart", "--file-flush-interval-msec", "20", "--log-level", "warning")


class Sidecar:
    """A running Envoy with envoy_config()'s listeners, seen from the pod: its admin, its
    sentinel and its access log. `problem()` says why it is not running, or None."""

    def __init__(self, lab: nl.PodWorld, log: Path, problem: Callable[[], str | None]) -> None:
        self.lab, self.log, self.problem, self.sentinels = lab, log, problem, 0

    def wait_ready(self) -> None:
        for _ in range(READY_ATTEMPTS):
            self.check_alive()
            got = connect(self.lab.pod, 0, [{"dst": "127.0.0.1", "port": nl.ADMIN_PORT, "send": _READY}])[0]
            if admin_live(got.get("reply", "")):
                self.mark()
                return
            time.sleep(0.1)
        raise RuntimeError(f"Envoy's admin is not /ready after {READY_ATTEMPTS} attempts: {self.problem()}")

    def check_alive(self) -> None:
        if (problem := self.problem()) is not None:
            raise RuntimeError(problem)

    def mark(self) -> list[Entry]:
        """Connect to the sentinel, wait for its entry; the entries logged since the last one."""
        got = connect(self.lab.pod, 0, [{"dst": "127.0.0.1", "port": SENTINEL_PORT}])[0]
        if got.get("reply") != "sentinel\n":
            raise RuntimeError(f"Envoy's sentinel listener answered {got}")
        self.sentinels += 1
        deadline = time.monotonic() + LOG_WAIT
        while True:
            text = self.log.read_text() if self.log.exists() else ""
            found = windows(parse_log(text))
            if len(found) >= self.sentinels:
                return found[self.sentinels - 1]
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"Envoy did not log its sentinel within {LOG_WAIT} s")
            time.sleep(0.02)


def check_unprivileged(pid: int) -> None:
    """The sidecar's process is UID and GID 1500 throughout, with no capability at all: what
    the rules' skuid match and FSM's securityContext assume."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    ids = {status["Uid"].split()[i] for i in range(4)} | {status["Gid"].split()[i] for i in range(4)}
    caps = {key: int(status[key], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    if ids != {str(nl.SIDECAR_UID)} or any(caps.values()):
        raise RuntimeError(f"Envoy (pid {pid}) runs as uid {status['Uid']}, gid {status['Gid']}, capabilities {caps}")


def write_config(workdir: Path, log: str) -> Path:
    """Envoy's config in a directory UID 1500 owns (it writes its access log there)."""
    os.chown(workdir, nl.SIDECAR_UID, nl.SIDECAR_UID)
    config = workdir / "envoy.json"
    config.write_text(json.dumps(envoy_config(log)))
    return config


@contextlib.contextmanager
def sidecar(lab: nl.PodWorld, envoy: str, workdir: Path) -> Iterator[Sidecar]:
    """Envoy in the pod namespace as UID 1500 with no capabilities, /ready and its sentinel
    logged; stopped on exit (the namespace's end would kill it anyway, netlab._kill_all)."""
    config = write_config(workdir, str(workdir / "access.log"))
    stderr = workdir / "envoy.stderr"
    with stderr.open("w") as err:
        proc = lab.pod.popen(
            ["setpriv", f"--reuid={nl.SIDECAR_UID}", f"--regid={nl.SIDECAR_UID}", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all", envoy, "-c", str(config), *ENVOY_FLAGS],
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        running = Sidecar(lab, workdir / "access.log",
                          lambda: None if proc.poll() is None else f"Envoy exited ({proc.returncode}): {stderr.read_text()[-3000:]}")
        running.wait_ready()
        check_unprivileged(proc.pid)  # setpriv execs Envoy: the same process
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


_READY = "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def connect(ns: nl.Netns, uid: int, conns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Open connections in `ns` as `uid` (no capabilities, no groups) with e2e_client.py."""
    argv = [nl.PYTHON, "-I", str(CLIENT), str(CLIENT_TIMEOUT)]
    if uid:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", *argv]
    proc = ns.run(argv, input=json.dumps(conns), timeout=len(conns) * (CLIENT_TIMEOUT + 1) + 30)
    out: list[dict[str, str]] = json.loads(proc.stdout)
    return out


Client = Callable[["Case", dict[str, Any]], dict[str, str]]  # opens a case's connection


def lab_client(lab: nl.PodWorld) -> Client:
    """Each case's connection from its namespace, as its UID."""
    return lambda case, conn: connect(lab.pod if case.side == "pod" else lab.world, case.uid, [conn])[0]


def run_case(client: Client, sidecar: Sidecar, case: Case) -> Result:
    send = _READY if case.answer == "admin" else None
    got = client(case, {"dst": case.dst, "port": case.port, "send": send})
    entries = sidecar.mark()
    return Result(got.get("local"), got.get("reply"), got.get("error"), tuple(entries))


def describe(masked: tuple[Any, ...]) -> str:
    """A masked result in one line: the answer, then each entry as listener(original dst -> upstream)."""
    answer, entries = masked
    if isinstance(answer, tuple):
        answer = " ".join(f"{k}={v}" for k, v in zip(("by", "local", "orig", "peer"), answer, strict=True) if v)
    hops = ", ".join(f"{e.listener}({e.original_dst} -> {e.upstream})" for e in entries[:3]) or "no entry"
    if len(entries) > 3:
        hops += f" and {len(entries) - 3} more"
    return f"[{answer}; {hops}]"


def verdict(case: Case, results: dict[str, Result]) -> list[str]:
    """The case's problems in every way, and where a way's log or answer differs from FSM's."""
    problems = [f"{way}: {p}" for way, result in results.items() for p in judge(case, result)]
    reference = results[WAYS[-1]].masked()
    for way, result in results.items():
        if way != WAYS[-1] and result.masked() != reference:
            problems.append(f"{way} differs from {WAYS[-1]}: {describe(result.masked())} vs {describe(reference)}")
    return problems


def line(label: str, case: Case, problems: Sequence[str]) -> str:
    """A case's line: ok, or FAIL and each problem indented below it."""
    return f"{'FAIL' if problems else 'ok  '} {label}: {case.name}" + "".join(f"\n       {p}" for p in problems)


def run(envoy: str, scenarios: Sequence[Scenario], kube_image: str | None = None,
        out: Callable[[str], None] = print) -> tuple[int, int]:
    """Every case of every scenario in every way, then with `kube_image` the pod's cases
    (lab/e2e_kube.py); one line per case. (held, total)."""
    held = total = 0
    listeners = [nl.Listener(f"app:{p}", p) for p in (APP_PORT, OTHER_APP_PORT)] + [
        nl.Listener(f"pod:{p}", p) for p in (nl.PROMETHEUS_PORT, *nl.HEALTH_PORTS, nl.HEALTHCHECK_PORT)]
    with nl.pod_world(listeners=listeners) as lab, tempfile.TemporaryDirectory(prefix="nftredir-e2e-") as tmp:
        Path(tmp).chmod(0o755)
        out(f"e2e: Envoy {envoy_version(envoy)} in pod {lab.pod.name} as UID {nl.SIDECAR_UID}; ways: apply (nftredir "
            "apply), shim (FSM's command, image/iptables-restore), fsm (FSM's command, the real iptables-restore)")
        for scenario in scenarios:
            results: dict[str, list[Result]] = {}
            for way in WAYS:
                lab.reset()
                _load(way, lab, scenario.options)
                # A fresh Envoy per way: nothing a broken ruleset left open is logged for the next.
                workdir = Path(tmp) / f"{scenario.name}-{way}"
                workdir.mkdir()
                with sidecar(lab, envoy, workdir) as envoy_in_pod:
                    results[way] = [run_case(lab_client(lab), envoy_in_pod, case) for case in scenario.cases]
            for i, case in enumerate(scenario.cases):
                problems = verdict(case, {way: results[way][i] for way in WAYS})
                total += 1
                held += not problems
                out(line(scenario.name, case, problems))
        if kube_image:
            from lab import e2e_kube

            kube_held, kube_total = e2e_kube.run(lab, kube_image, Path(envoy), Path(tmp) / "kube", out)
            held, total = held + kube_held, total + kube_total
    return held, total


def envoy_version(envoy: str) -> str:
    text = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"version: \w+/([\w.]+)/", text)  # version: COMMIT/1.40.0/Clean/RELEASE/BoringSSL
    return found.group(1) if found else text.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--envoy", required=True, help="the envoy binary (scripts/test-e2e installs it)")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only these scenarios (default: all)")
    parser.add_argument("--kube-image", metavar="IMAGE",
                        help="also run the pod with podman kube play, the init container from IMAGE (lab/e2e_kube.py)")
    args = parser.parse_args(argv)
    if shutil.which(args.envoy) is None:
        print(f"e2e: --envoy {args.envoy}: not an executable", file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP unwind like Ctrl-C: the namespaces and Envoy go on every exit. SIGINT
    # too when started from a shell that ignores it (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    try:
        held, total = run(args.envoy, chosen, args.kube_image)
    except KeyboardInterrupt:
        print("e2e: interrupted; its namespaces and Envoy are gone", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError) as exc:  # the lab or Envoy could not run, not a verdict
        print(f"e2e: error: {exc}", file=sys.stderr)
        return 1
    print(f"e2e: {held}/{total} cases hold")
    return 0 if held == total else 1


if __name__ == "__main__":
    sys.exit(main())
