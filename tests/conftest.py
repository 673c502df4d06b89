"""Shared fixtures: throwaway network namespaces and running nftredir inside them."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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
        return subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-m", "nftredir", *argv],
            capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})},
        )

    def list_table(self, table: str = "nftredir") -> str:
        return self.nft("-s", "list", "table", "inet", table).stdout


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
