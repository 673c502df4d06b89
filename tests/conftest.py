"""Shared fixtures: throwaway network namespaces and running nftredir inside them."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
FSM_REFERENCE = Path(__file__).resolve().parent / "data" / "fsm"


def fsm_reference(name: str) -> str:
    """One of FSM's scripts written by hand from the reference (tests/data/fsm/): the
    expectations the generator, the goldens and the traffic tests are held to."""
    return (FSM_REFERENCE / name).read_text()
_counter = itertools.count()

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


def netns_name(prefix: str | None = None) -> str:
    """Unique per process and call, so parallel runs and leftovers never clash. The prefix is
    NFTREDIR_TEST_NETNS_PREFIX's (as in tests/netlab.py), else "nrt"."""
    return f"{prefix or os.environ.get('NFTREDIR_TEST_NETNS_PREFIX', 'nrt')}-{os.getpid()}-{next(_counter)}"


class Netns:
    """A network namespace made for one test: only `lo`, up."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=check, input=input, timeout=60
        )

    def nft(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("nft", *argv, check=check, input=input)

    def nftredir(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI in this namespace, as a user would; never raises on a non-zero exit."""
        return run_nftredir(*argv, env=env, netns=self)

    def list_table(self, table: str = "nftredir") -> str:
        return self.nft("-s", "list", "table", "inet", table).stdout


def run_nftredir(
    *argv: str, env: dict[str, str] | None = None, netns: Netns | None = None, prelude: str = "",
    user: int | None = None, clean_env: bool = False, input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The one way tests run the CLI: a fresh interpreter, as a user would; never raises on a
    non-zero exit. `prelude` runs first (e.g. to hide a module); `user` drops to that uid/gid;
    `clean_env` drops the caller's NFTREDIR_* and POD_IP.

    Whatever the command and whatever a test expects of it, it runs in `netns` or, without one,
    in a throwaway network namespace of its own (`unshare --net`): a regression that lets a bad
    value through must never install a ruleset in the machine's own namespace.
    """
    code = f"import sys\n{prelude}\nsys.argv = ['nftredir', *{list(argv)!r}]\nfrom nftredir.cli import main\nmain()\n"
    command = [sys.executable, "-c", code]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    if netns is not None:
        command = ["ip", "netns", "exec", netns.name, *command]
    elif os.geteuid() == 0:
        command = ["unshare", "--net", *command]
    base = {k: v for k, v in os.environ.items() if not (clean_env and (k.startswith("NFTREDIR_") or k == "POD_IP"))}
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env={**base, **(env or {})}, timeout=300, input=input
    )


def delete_netns(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], capture_output=True)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh network namespace, deleted after the test whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    name = netns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield Netns(name)
    finally:
        delete_netns(name)


# The machine's own namespace must end the session as it began: a test that escaped its
# namespace would otherwise cut the machine's traffic unnoticed.
def _host_ruleset() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_HOST_RULESET] = _host_ruleset()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before, after = session.config.stash.get(_HOST_RULESET, None), _host_ruleset()
    if before is not None and after != before:
        print(f"\nFAILED: the host network namespace's nftables ruleset changed during the tests:\n{after}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_HOST_RULESET = pytest.StashKey[Optional[str]]()
