"""Real TCP connections from chosen UIDs, and throwaway listeners that see where they land.

The caller binds the listeners (`bind_listener`), then `run` forks one child per probe. Each
child drops to the probe's UID before it creates its socket (the owner match reads the UID
the socket was created with), starts a non-blocking connect and waits at most `timeout` for
it. Meanwhile the parent accepts on every listener and reads `SO_ORIGINAL_DST` from each
accepted connection: conntrack's record of where the connection was sent before NAT. A
connection is matched to its probe by its source port, which the child binds before it
connects so that no two probes share one.

The redirect happens in the nat output hook, before the SYN is sent: a redirected probe
never leaves the namespace. A probe that is not redirected does send its SYN along its
route; `nftredir.validate` chooses such destinations with that in mind.

Nothing outlives `run`: every child is killed and reaped before it returns, and every
accepted connection is closed. Only the standard library, and no threads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>; Python's socket module lacks it

_OUTCOMES = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed out",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "reset",
    errno.EPERM: "denied by a firewall rule",
    errno.EACCES: "denied by a firewall rule",
}


@dataclass(frozen=True)
class Probe:
    """A connection attempt: from `uid` to dst:port."""

    name: str
    uid: int
    dst: str
    port: int


@dataclass(frozen=True)
class Landing:
    """A connection one of our listeners accepted: its local and peer address and, when the
    connection was NATed, the original destination."""

    listener: str
    local: str
    peer: str
    orig_dst: str | None


@dataclass(frozen=True)
class Outcome:
    """What became of a probe: what its connect saw, and where (if anywhere) it landed."""

    probe: Probe
    connect: str  # "connected", "timed out" (the SYN went unanswered), "refused", ...
    landing: Landing | None


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port). OSError when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers only
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _address(sa: tuple[str, int]) -> str:
    return f"{sa[0]}:{sa[1]}"


def original_destination(conn: socket.socket) -> str | None:
    """Where the peer sent this connection before NAT, or None when it was not NATed."""
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:  # ENOENT: no conntrack entry at all
        return None
    port, packed = struct.unpack_from("!2xH4s", raw)  # struct sockaddr_in
    orig = f"{socket.inet_ntoa(packed)}:{port}"
    return None if orig == _address(conn.getsockname()) else orig


def _describe_error(code: int) -> str:
    return _OUTCOMES.get(code, f"failed: {os.strerror(code)}")


def _child(probe: Probe, timeout: float, report: int, done: int) -> None:
    """In the forked child: become the probe's UID, connect, report, wait for the parent."""

    def say(**message: object) -> None:
        os.write(report, (json.dumps(message) + "\n").encode())

    if probe.uid != os.geteuid():
        try:
            os.setgroups([])
            os.setresgid(probe.uid, probe.uid, probe.uid)
            os.setresuid(probe.uid, probe.uid, probe.uid)
        except OSError as exc:
            say(connect=f"could not become UID {probe.uid}: {exc.strerror}")
            return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))  # a source port of its own, to be told apart by
        say(port=sock.getsockname()[1])
        sock.setblocking(False)
        code = sock.connect_ex((probe.dst, probe.port))
        if code == errno.EINPROGRESS:
            _, writable, _ = select.select([], [sock], [], timeout)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else errno.ETIMEDOUT
        say(connect="connected" if code == 0 else _describe_error(code))
        # Keep the connection open until the parent has looked at its listeners: closing a
        # half-accepted connection early would hide where it landed.
        select.select([done], [], [], timeout + 5)


def _spawn(probe: Probe, timeout: float) -> tuple[int, int, int]:
    """Fork a child for the probe: (pid, fd the child reports on, fd whose closing releases it)."""
    report_r, report_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the caller's code
        status = 0
        try:
            os.close(report_r)
            os.close(done_w)
            _child(probe, timeout, report_w, done_r)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(report_w)
    os.close(done_r)
    return pid, report_r, done_w


def _accept_all(listener: socket.socket, name: str, landings: dict[int, Landing]) -> None:
    """Accept every pending connection; landings by the peer's port."""
    while True:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            landings[peer[1]] = Landing(name, _address(conn.getsockname()), _address(peer), original_destination(conn))


def run(probes: list[Probe], listeners: dict[str, socket.socket], timeout: float) -> list[Outcome]:
    """Run the probes at once and return their outcomes in order.

    Each connect is bounded by `timeout`; the whole run by about `timeout` plus a grace of
    max(0.2 s, timeout / 2) for the children to report, whatever the connections do.
    """
    grace = max(0.2, timeout / 2)
    landings: dict[int, Landing] = {}
    children: list[tuple[int, int, int]] = []
    ports: dict[int, int] = {}  # child index -> its source port
    connects: dict[int, str] = {}  # child index -> its connect's outcome
    buffers: dict[int, bytes] = {}
    try:
        for probe in probes:
            children.append(_spawn(probe, timeout))
        deadline = time.monotonic() + timeout + grace
        by_fd = {report: index for index, (_, report, _) in enumerate(children)}
        by_listener = {sock.fileno(): (name, sock) for name, sock in listeners.items()}
        open_reports = set(by_fd)
        while (left := deadline - time.monotonic()) > 0:
            waiting = [i for i in range(len(children)) if connects.get(i) == "connected" and ports.get(i) not in landings]
            if not open_reports and not waiting:
                break  # every child has reported and every connected one has been seen: nothing more can come
            readable, _, _ = select.select([*open_reports, *by_listener], [], [], left)
            for fd in readable:
                if fd in by_listener:
                    _accept_all(by_listener[fd][1], by_listener[fd][0], landings)
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    open_reports.discard(fd)
                    continue
                index = by_fd[fd]
                buffers[index] = buffers.get(index, b"") + chunk
                *lines, buffers[index] = buffers[index].split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    if "port" in message:
                        ports[index] = message["port"]
                    if "connect" in message:
                        connects[index] = message["connect"]
                        if message["connect"] != "connected":
                            open_reports.discard(fd)
        for name, sock in listeners.items():
            _accept_all(sock, name, landings)
    finally:
        for pid, report, done in children:
            with contextlib.suppress(OSError):
                os.close(done)
            with contextlib.suppress(OSError):
                os.close(report)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return [
        Outcome(
            probe,
            connects.get(index, f"did not finish within {timeout + grace:g} s"),
            landings.get(ports[index]) if index in ports else None,
        )
        for index, probe in enumerate(probes)
    ]
