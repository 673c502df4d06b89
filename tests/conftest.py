"""Shared fixtures: throwaway network namespaces (lab.netlab) and FSM's reference scripts; the
session checks that the machine's own ruleset is untouched at its end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from lab import netlab
from lab.netlab import Netns

REPO = Path(__file__).resolve().parent.parent
FSM_REFERENCE = Path(__file__).resolve().parent / "data" / "fsm"


def fsm_reference(name: str) -> str:
    """One of FSM's scripts written by hand from the reference (tests/data/fsm/): the
    expectations the generator, the goldens and the traffic tests are held to."""
    return (FSM_REFERENCE / name).read_text()

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh network namespace with only `lo`, deleted after the test whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with netlab.netns(netlab.unique_name("t")) as ns:
        yield ns


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
