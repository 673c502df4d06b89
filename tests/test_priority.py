"""What the base chains' priority (-100, iptables' nat priority) is for, proven with traffic:
beside another tool's nat chain on the same hook, the first chain that NATs a new connection
decides, so nftredir's chains run after a chain at -150 and before one at 0."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from lab import netlab as nl
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")

APP_UID, OTHER_PORT = 1000, 9090  # 9090: an app port of the lab, where the other chain redirects


def other_nat_chain(priority: int) -> str:
    return f"""
table ip other {{
    chain output {{
        type nat hook output priority {priority}; policy accept;
        tcp dport 80 redirect to :{OTHER_PORT}
    }}
}}
"""


@pytest.fixture
def lab() -> Iterator[nl.PodWorld]:
    with nl.pod_world(app_ports=(8080, OTHER_PORT)) as world:
        world.pod.run([sys.executable, "-m", "nftredir", "apply"], cwd=REPO)
        yield world


def listeners(lab: nl.PodWorld) -> tuple[str, str]:
    """Where the app's and the sidecar's connections to the world's port 80 land."""
    app, = nl.probe_many(lab.pod, [(nl.WORLD_DST, 80)], APP_UID, timeout=10.0)
    sidecar, = nl.probe_many(lab.pod, [(nl.WORLD_DST, 80)], nl.SIDECAR_UID, timeout=10.0)
    return app.listener, sidecar.listener


def test_a_later_nat_chain_sees_only_what_nftredir_left_alone(lab):
    lab.pod.run(["nft", "-f", "-"], input=other_nat_chain(0))
    assert listeners(lab) == (f"pod:{nl.OUTBOUND_PORT}", f"pod:{OTHER_PORT}")


def test_an_earlier_nat_chain_decides_before_nftredir(lab):
    lab.pod.run(["nft", "-f", "-"], input=other_nat_chain(-150))
    assert listeners(lab) == (f"pod:{OTHER_PORT}", f"pod:{OTHER_PORT}")
