"""`nftredir validate`: prove the redirect with real connections, before the sidecar runs.

`plan` turns a Config and the namespace's routes into checks (plain data); `validate` binds
throwaway listeners on the sidecar's ports on 127.0.0.1, runs every check's connection at once
(nftredir.probes) and judges each. The checks:

- outbound-redirect: an app UID's connection to a destination the configuration redirects
  lands on the outbound listener, with that destination as SO_ORIGINAL_DST;
- proxy-bypass: the proxy UID's own connection to the same destination is not redirected;
- excluded-ip-range / excluded-port / excluded-interface: an app connection the configuration
  excludes is not redirected (each only when configured and routable);
- inbound-reentry: the proxy UID calling a pod address over lo lands on the inbound listener
  (FSM's re-entry rule, which also proves the inbound redirect target);
- podip-dnat: in podip mode, the proxy UID calling 127.0.0.1 lands on the pod IP.

Whether nftredir's own table is installed is reported too, but only the connections decide:
with FSM's iptables rules instead, validate proves (or disproves) those, the same way.

What leaves the pod: a redirected connection never does (REDIRECT rewrites it in the nat output
hook, before the SYN is sent, and it completes over lo). A connection that must *not* be
redirected cannot be proven so without letting its SYN go along its route, so destinations are
chosen to be harmless: the documentation ranges of RFC 5737 (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24) whenever the configuration and the routes allow, which no real network routes,
and ports nothing serves (9, discard) for every probe that is not to be redirected, so that even
an excluded address that is real (169.254.169.254) sees only a SYN to a closed port.
"Not redirected" means the connection did not reach our listener within the timeout; the
probe's socket is then closed while still connecting, which sends nothing more (no RST from
SYN-SENT), so at most one SYN (plus a retransmission with a timeout over a second) leaves.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from nftredir import cidr
from nftredir.cidr import Cidr, dotted
from nftredir.config import Config
from nftredir.netinfo import Route
from nftredir.probes import Landing, Outcome, Probe

DEFAULT_TIMEOUT = 0.5
# RFC 5737's documentation networks first: a SYN to them reaches nothing real.
_HARMLESS = (0xC0000201, 0xC6336401, 0xCB007101)  # 192.0.2.1, 198.51.100.1, 203.0.113.1
_PORTS = (80, 8080, 8000, 8443, 9080, 10080)  # app-like ports for redirected probes, first not excluded
# Ports nothing serves (discard, echo, chargen, daytime) for probes whose SYN does leave: if one
# reaches a real address after all (say an excluded 169.254.169.254), no service is touched.
_QUIET_PORTS = (9, 7, 19, 13)
_LOOPBACK = Cidr(0x7F000000, 8)
_UNUSABLE = (Cidr(0, 8), _LOOPBACK, Cidr(0xE0000000, 3))  # "this network", loopback, multicast and class E
_REENTRY_FALLBACK = 0x7F000002  # 127.0.0.2: over lo and not 127.0.0.1, when the pod has no other address
APP_UIDS = (65534, 65533)  # nobody; the other when the proxy runs as nobody

OUTBOUND, INBOUND, POD = "outbound", "inbound", "pod"


@dataclass(frozen=True)
class Check:
    """One check: its probe, and where that probe must (or must not, expect=None) land."""

    name: str
    what: str  # what the check proves, for a person
    probe: Probe | None = None  # None: skipped, `skip` says why
    expect: str | None = None  # the listener it must land on; None: it must land on none
    skip: str | None = None


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # "pass", "fail" or "skip"
    summary: str
    expected: str | None = None
    got: str | None = None


def _in(address: int, ranges: tuple[Cidr, ...]) -> bool:
    return any(r.network <= address <= r.last for r in ranges)


def _route(address: int, routes: list[Route]) -> Route | None:
    """The longest-prefix route for the address (the main table's choice, metrics aside)."""
    matches = [r for r in routes if r.dst.network <= address <= r.dst.last]
    return max(matches, key=lambda r: r.dst.prefixlen, default=None)


def _iface_excluded(iface: str, patterns: tuple[str, ...]) -> bool:
    return any(iface.startswith(p[:-1]) if p.endswith("+") else iface == p for p in patterns)


def _candidates(ranges: list[Cidr], routes: list[Route], excluded: tuple[Cidr, ...]) -> list[int]:
    """Addresses worth trying, harmless ones first: in or at the edges of the given ranges."""
    first = [r.network + (r.prefixlen < 32) for r in ranges]
    past_exclusions = [r.last + 1 for r in excluded if r.last < 0xFFFFFFFF]
    last = [r.last - (r.prefixlen < 31) for r in ranges]  # not the broadcast-looking last address
    return list(dict.fromkeys([*_HARMLESS, *first, *past_exclusions, *last, *(r.dst.network + 1 for r in routes)]))


class _Namespace:
    """What the checks need to know about the pod's routes and addresses."""

    def __init__(self, config: Config, routes: list[Route], local: set[int]) -> None:
        self.config, self.routes, self.local = config, routes, local
        # The probes are IPv4: an IPv6 range (dual mode) is an int range too, and must not count.
        self.excluded = cidr.by_version(config.outbound_ip_range_exclusions, 4)
        self.included = cidr.by_version(config.outbound_ip_range_inclusions, 4)
        self.inclusive = bool(config.outbound_ip_range_inclusions)  # any family's inclusion limits IPv4

    def allowed(self, address: int) -> bool:
        """Whether the range lists let `address` go to the sidecar (routes and interfaces aside)."""
        return not _in(address, self.excluded) and (not self.inclusive or _in(address, self.included))

    def leaves(self, address: int) -> Route | None:
        """The route a connection to `address` leaves by, or None when it stays in the pod."""
        if address in self.local or _in(address, _UNUSABLE):
            return None
        route = _route(address, self.routes)
        return route if route and route.iface != "lo" else None

    def redirected(self, address: int) -> bool:
        """Whether the configuration sends an app's connection to `address` to the sidecar."""
        route = self.leaves(address)
        return (
            route is not None
            and not _iface_excluded(route.iface, self.config.network_interface_exclusions)
            and self.allowed(address)
        )

    def pick(self, ranges: list[Cidr], accept: Callable[[int], bool]) -> int | None:
        return next((a for a in _candidates(ranges, self.routes, self.excluded) if accept(a)), None)


def _port(config: Config, choices: tuple[int, ...]) -> int:
    return next(p for p in (*choices, *_PORTS) if p not in config.outbound_port_exclusions)


def plan(config: Config, routes: list[Route], local: set[int], only_uid: int | None = None) -> list[Check]:
    """The checks for this configuration in a namespace with these routes and local addresses.

    `only_uid`: the one UID connections can come from, when this process cannot switch UIDs
    (no CAP_SETUID/CAP_SETGID); it then stands in as the app (unless it is the proxy's UID),
    and the checks that need another UID are skipped, saying why.
    """
    ns = _Namespace(config, routes, local)
    app = next(uid for uid in APP_UIDS if uid != config.proxy_uid)
    if only_uid is not None and only_uid != config.proxy_uid:
        app = only_uid
    proxy = config.proxy_uid
    checks: list[Check] = []
    where = "an included range" if config.outbound_ip_range_inclusions else "a routed, not excluded address"
    target = ns.pick(list(ns.included) or [r.dst for r in routes], ns.redirected)
    port, quiet = _port(config, _PORTS), _port(config, _QUIET_PORTS)
    no_route = f"no destination to probe: the pod has no route to {where} (outbound traffic could not leave anyway)"

    def check(name: str, what: str, uid: int, address: int | None, port: int, expect: str | None, skip: str) -> None:
        if address is None:
            checks.append(Check(name, what, skip=skip))
        else:
            checks.append(Check(name, what, Probe(name, uid, dotted(address), port), expect))

    check("outbound-redirect", f"an app's outbound connection (UID {app}) lands on the outbound listener",
          app, target, port, OUTBOUND, no_route)
    check("proxy-bypass", f"the proxy's own connection (UID {proxy}) is not redirected",
          proxy, target, quiet, None, no_route)

    if ns.excluded:
        excluded = ns.pick(list(ns.excluded), lambda a: _in(a, ns.excluded) and ns.leaves(a) is not None)
        check("excluded-ip-range", "an app's connection to an excluded IP range is not redirected", app, excluded, quiet,
              None, "no excluded address the pod has a route to")
    if config.outbound_port_exclusions:
        check("excluded-port", "an app's connection to an excluded port is not redirected", app, target,
              config.outbound_port_exclusions[0], None, no_route)
    if config.network_interface_exclusions:
        via = [r for r in routes if _iface_excluded(r.iface, config.network_interface_exclusions)]

        def only_the_interface_excludes(address: int) -> bool:
            return ns.leaves(address) in via and ns.allowed(address)

        check("excluded-interface", "an app's connection out of an excluded interface is not redirected", app,
              ns.pick([r.dst for r in via], only_the_interface_excludes), quiet, None,
              "no route through an excluded interface")

    own = sorted(a for a in local if not _in(a, (_LOOPBACK,)))
    pod_address = int(config.pod_ip) if config.pod_ip and int(config.pod_ip) in local else (own[0] if own else _REENTRY_FALLBACK)
    check("inbound-reentry", f"the proxy (UID {proxy}) calling the pod's address over lo lands on the inbound listener",
          proxy, pod_address, 8080, INBOUND, "")
    if config.local_proxy_mode == "podip":
        pod_ip = int(config.pod_ip) if config.pod_ip else None
        checks.append(
            Check("podip-dnat", f"the proxy (UID {proxy}) calling 127.0.0.1 is sent to the pod IP",
                  Probe("podip-dnat", proxy, "127.0.0.1", 0), POD)
            if pod_ip in local
            else Check("podip-dnat", "the proxy calling 127.0.0.1 is sent to the pod IP",
                       skip=f"the pod IP {config.pod_ip} is not an address of this namespace")
        )
    if only_uid is None:
        return checks
    return [
        Check(c.name, c.what, skip=f"connecting as UID {c.probe.uid} needs CAP_SETUID and CAP_SETGID, which this "
              "process lacks (FSM's securityContext adds NET_ADMIN only): add both to check this")
        if c.probe and c.probe.uid != only_uid else c
        for c in checks
    ]


CAP_SETGID, CAP_SETUID = 6, 7


def switchable(status: str = "/proc/self/status") -> bool:
    """Whether this process may act as other UIDs (CAP_SETUID and CAP_SETGID, effective)."""
    try:
        with open(status) as lines:
            for line in lines:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps >> CAP_SETUID & 1 and caps >> CAP_SETGID & 1)
    except OSError:  # no /proc: root has them unless they were dropped
        pass
    return os.geteuid() == 0


def _landing_text(landing: Landing) -> str:
    orig = f", original destination {landing.orig_dst}" if landing.orig_dst else ", not NATed"
    return f"landed on the {landing.listener} listener {landing.local}{orig}"


def judge(check: Check, outcome: Outcome, listeners: dict[str, str], timeout: float) -> Result:
    """Pass or fail one check from its probe's outcome (listeners: name -> address)."""
    probe = outcome.probe
    attempt = f"UID {probe.uid} -> {probe.dst}:{probe.port}"
    landing = outcome.landing
    if check.expect is None:
        expected = f"not redirected (reaches none of {', '.join(listeners.values())})"
        if landing is None:
            return Result(check.name, "pass", f"{attempt}: not redirected (connect: {outcome.connect})", expected,
                          f"no listener reached within {timeout:g} s; connect: {outcome.connect}")
        return Result(check.name, "fail", f"{attempt}: redirected", expected, _landing_text(landing))
    orig = f"{probe.dst}:{probe.port}"
    expected = f"lands on the {check.expect} listener {listeners[check.expect]}, original destination {orig}"
    if landing is not None and landing.listener == check.expect and landing.orig_dst == orig:
        return Result(check.name, "pass", f"{attempt}: {_landing_text(landing)}", expected, _landing_text(landing))
    if landing is not None:
        got = _landing_text(landing)
    elif outcome.connect == "connected":
        got = f"connected, but not to our listener within {timeout:g} s: not redirected"
    elif outcome.connect == "timed out":
        got = f"no answer within {timeout:g} s: the connection hung, not redirected to the listener (its SYN went out unanswered, or a rule dropped it)"
    elif outcome.connect == "refused":
        got = "connection refused: sent to a port nobody listens on (redirected to the wrong port?)"
    else:
        got = f"connect: {outcome.connect}"
    return Result(check.name, "fail", f"{attempt}: {got}", expected, got)


def validate(config: Config, table_installed: bool, timeout: float = DEFAULT_TIMEOUT) -> list[Result]:
    """Run every check in this namespace; the results in plan order."""
    from nftredir import netinfo, probes

    from nftredir.errors import SystemRefused

    only_uid = None if switchable() else os.geteuid()
    try:
        checks = plan(config, netinfo.routes(), netinfo.local_addresses(), only_uid)
    except OSError as exc:
        raise SystemRefused(f"could not read the namespace's routes and addresses from /proc/net: {exc}") from None
    results: list[Result] = [
        Result("table", "pass", f"table inet {config.table} is installed")
        if table_installed
        # Not a failure by itself: the connections below prove whether anything redirects.
        else Result("table", "skip", f"table inet {config.table} is not installed: the checks below test whatever "
                    "else redirects (nftredir doctor shows what); nftredir apply installs it")
    ]
    sockets: dict[str, socket.socket] = {}
    busy: dict[str, str] = {}
    wanted = {OUTBOUND: ("127.0.0.1", config.proxy_outbound_port), INBOUND: ("127.0.0.1", config.proxy_inbound_port)}
    if any(c.expect == POD for c in checks if c.probe):
        wanted[POD] = (str(config.pod_ip), 0)
    try:
        for name, (host, port) in wanted.items():
            try:
                sockets[name] = probes.bind_listener(host, port)
            except OSError as exc:
                busy[name] = f"cannot listen on {host}:{port} ({exc.strerror}): the sidecar or something else is using it"
        addresses = {name: f"{s.getsockname()[0]}:{s.getsockname()[1]}" for name, s in sockets.items()}
        runnable: list[Check] = []
        for check in checks:
            needs = check.expect or OUTBOUND  # "not redirected" is told by the outbound listener staying silent
            if check.probe and needs in busy:
                check = Check(check.name, check.what, skip=busy[needs])
            elif check.probe and check.expect == POD:
                port = sockets[POD].getsockname()[1]
                check = Check(check.name, check.what, Probe(check.name, check.probe.uid, "127.0.0.1", port), POD)
            runnable.append(check)
        active = [c for c in runnable if c.probe]
        try:
            outcomes = dict(zip((c.name for c in active), probes.run([c.probe for c in active], sockets, timeout)))
        except OSError as exc:  # fork or pipe refused: the system, not the ruleset
            raise SystemRefused(f"could not start the test connections: {exc}") from None
    finally:
        for s in sockets.values():
            s.close()
    for check in runnable:
        if check.probe is None:
            results.append(Result(check.name, "skip", check.skip or "not applicable"))
        else:
            results.append(judge(check, outcomes[check.name], addresses, timeout))
    return results


def report(config: Config, results: list[Result], timeout: float) -> dict[str, Any]:
    return {
        "table": {"family": "inet", "name": config.table},
        "timeout": timeout,
        "ok": all(r.status != "fail" for r in results),
        "checks": [asdict(r) for r in results],
    }


def format_text(results: list[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.status.upper():4} {r.name}: {r.summary}")
        if r.status == "fail":
            lines.append(f"     expected: {r.expected}")
            lines.append(f"     got:      {r.got}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    verdict = "the redirect holds" if not counts["fail"] else "the redirect does NOT hold"
    lines.append(f"validate: {verdict} ({counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped)")
    return "\n".join(lines) + "\n"
