"""The benchmark's pure helpers (bench/workload.py): what it feeds the commands is what it
claims to be. No timing is asserted anywhere: the benchmark is its own command."""

from __future__ import annotations

import ipaddress
import json

import pytest

from bench.report import Row
from bench.workload import (
    EXCLUDED_DST,
    PROBE_CIDR,
    REDIRECTED_DST,
    exclusion_cidrs,
    interleaved,
    median,
    mesh_config,
    ratio,
)


def test_exclusion_cidrs_are_distinct_and_neither_overlap_nor_touch() -> None:
    nets = sorted(ipaddress.IPv4Network(c) for c in exclusion_cidrs(50_000))
    assert len(set(nets)) == 50_000
    for a, b in zip(nets, nets[1:]):
        assert int(a.broadcast_address) + 1 < int(b.network_address)  # a gap: no merge possible
    assert len(list(ipaddress.collapse_addresses(nets))) == 50_000


def test_exclusion_cidrs_end_with_the_probed_range_and_are_deterministic() -> None:
    cidrs = exclusion_cidrs(1_000)
    assert cidrs[-1] == str(PROBE_CIDR)
    assert cidrs == exclusion_cidrs(1_000)
    assert cidrs[:-1] != sorted(cidrs[:-1])  # shuffled, not handed over pre-sorted
    assert exclusion_cidrs(1) == [str(PROBE_CIDR)]
    assert exclusion_cidrs(0) == []


def test_only_the_excluded_destination_is_excluded() -> None:
    nets = [ipaddress.IPv4Network(c) for c in exclusion_cidrs(50_000)]
    excluded, redirected = ipaddress.IPv4Address(EXCLUDED_DST), ipaddress.IPv4Address(REDIRECTED_DST)
    assert [n for n in nets if excluded in n] == [PROBE_CIDR]
    assert not any(redirected in n for n in nets)
    assert not any(ipaddress.IPv4Network("10.99.0.0/16").overlaps(n) for n in nets)


def test_exclusion_cidrs_refuses_sizes_it_cannot_make() -> None:
    with pytest.raises(ValueError):
        exclusion_cidrs(-1)
    with pytest.raises(ValueError):
        exclusion_cidrs(10**7)


def test_mesh_config_carries_the_list_in_order() -> None:
    cidrs = exclusion_cidrs(5)
    doc = json.loads(mesh_config(cidrs))
    assert doc["kind"] == "MeshConfig"
    assert doc["spec"]["traffic"]["outboundIPRangeExclusionList"] == cidrs


def test_median_and_ratio() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        median([])
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None


def test_interleaved_runs_every_kind_once_per_rep_alternating_order() -> None:
    assert interleaved(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]


def test_a_target_is_met_in_its_direction() -> None:
    assert Row("apply", "10", 90.0, 100.0, "ms", "<= 1.0").met == "yes"
    assert Row("apply", "10", 110.0, 100.0, "ms", "<= 1.0").met == "**no**"
    assert Row("conn", "10", 600.0, 100.0, "conn/s", ">= 5").met == "yes"
    assert Row("conn", "10", 400.0, 100.0, "conn/s", ">= 5").met == "**no**"
    assert Row("conn", "10", 400.0, None, "conn/s", ">= 5").met == ""


def test_ipv6_exclusion_cidrs_have_the_same_shape_and_leave_the_targets_alone() -> None:
    from bench.workload import EXCLUDED_DST6, PROBE_CIDR6, REDIRECTED_DST6

    nets = [ipaddress.IPv6Network(c) for c in exclusion_cidrs(10_000, version=6)]
    assert nets[-1] == PROBE_CIDR6 and len(set(nets)) == 10_000
    assert len(list(ipaddress.collapse_addresses(nets))) == 10_000  # nothing merges
    excluded, redirected = ipaddress.IPv6Address(EXCLUDED_DST6), ipaddress.IPv6Address(REDIRECTED_DST6)
    assert [n for n in nets if excluded in n] == [PROBE_CIDR6]
    assert not any(redirected in n for n in nets)
    assert exclusion_cidrs(1_000) == exclusion_cidrs(1_000, version=4)  # IPv4 unchanged


def test_the_podman_phase_runs_fsm_s_exact_command(tmp_path) -> None:
    """bench/podman.py's command is the one the tests run as FSM's (tests/fsm_command.py)."""
    from bench.podman import fsm_command as bench_command
    from nftredir.config import Config
    from nftredir.render import render
    from tests.fsm_command import fsm_command

    rules = tmp_path / "fsm.rules"
    rules.write_text(render(Config(), "iptables"))
    assert bench_command(rules) == fsm_command(Config())
