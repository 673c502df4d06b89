"""lab/e2e.py's pure parts: the access log read, each case judged, the case table and Envoy's
listeners. The run itself, against a real Envoy, is scripts/test-e2e."""

from __future__ import annotations

import json

from lab import e2e
from lab import netlab as nl

W80 = f"{nl.WORLD_DST}:80"
VIA_OUTBOUND = e2e.Case("app -> world:80", "pod", e2e.APP_UID, nl.WORLD_DST, 80,
                        (e2e.Hop("outbound", W80, W80),), "world", orig=W80)
DIRECT = e2e.Case("sidecar -> world:80", "pod", nl.SIDECAR_UID, nl.WORLD_DST, 80, (), "world", orig=W80)


def entry(listener: str = "outbound", original_dst: str = W80, downstream: str = "10.99.0.2:40000",
          upstream: str | None = W80, upstream_local: str | None = "10.99.0.2:50000") -> e2e.Entry:
    return e2e.Entry(listener, original_dst, downstream, upstream, upstream_local, "original_dst", None)


def answer(peer: str, listener: str = "world", orig: str | None = W80) -> str:
    return json.dumps({"listener": listener, "local": "10.99.0.1:19999", "peer": peer, "orig_dst": orig}) + "\n"


def result(peer: str, *entries: e2e.Entry, local: str = "10.99.0.2:40000") -> e2e.Result:
    return e2e.Result(local, answer(peer), None, entries)


def test_log_lines_become_entries_and_dashes_none() -> None:
    line = {"listener": "outbound", "original_dst": W80, "downstream": "10.99.0.2:1", "upstream": "-",
            "upstream_local": None, "cluster": "original_dst", "flags": "UF"}
    (got,) = e2e.parse_log(json.dumps(line) + "\n\n")
    assert got == e2e.Entry("outbound", W80, "10.99.0.2:1", None, None, "original_dst", "UF")


def test_each_sentinel_closes_the_window_of_entries_before_it() -> None:
    a, b, sentinel = entry(), entry("inbound"), entry("sentinel")
    assert e2e.windows([sentinel, a, b, sentinel, sentinel, a]) == [[], [a, b], []]


def test_a_connection_through_the_outbound_listener_holds() -> None:
    assert e2e.judge(VIA_OUTBOUND, result("10.99.0.2:50000", entry())) == []


def test_a_second_entry_for_the_same_connection_is_a_loop() -> None:
    looped = entry(downstream="10.99.0.2:50000", upstream_local="10.99.0.2:50001")
    problems = e2e.judge(VIA_OUTBOUND, result("10.99.0.2:50001", entry(), looped))
    assert problems == ["Envoy logged 2 outbound, expected 1 outbound", "the world side saw peer 10.99.0.2:50001, expected 10.99.0.2:50000"]


def test_the_wrong_original_destination_is_named() -> None:
    wrong = entry(original_dst="10.99.0.2:15001", upstream="10.99.0.2:15001")
    assert e2e.judge(VIA_OUTBOUND, result("10.99.0.2:50000", wrong)) == [
        f"outbound: original destination 10.99.0.2:15001, upstream 10.99.0.2:15001 (expected {W80}, {W80})"]


def test_an_entry_from_another_connection_does_not_count_as_the_hop() -> None:
    assert "no outbound entry from 10.99.0.2:40000" in e2e.judge(
        VIA_OUTBOUND, result("10.99.0.2:50000", entry(downstream="10.99.0.2:40001")))


def test_a_direct_connection_must_leave_no_entry_and_reach_the_server_from_the_client() -> None:
    assert e2e.judge(DIRECT, result("10.99.0.2:40000")) == []
    assert e2e.judge(DIRECT, result("10.99.0.2:50000", entry())) == [
        "Envoy logged 1 outbound, expected nothing", "the world side saw peer 10.99.0.2:50000, expected 10.99.0.2:40000"]


def test_no_answer_fails_whatever_the_log() -> None:
    assert e2e.judge(DIRECT, e2e.Result(None, None, "TimeoutError: timed out", ())) == ["no answer (TimeoutError: timed out)"]


def test_admin_answer_is_read_chunked_or_not() -> None:
    head = "HTTP/1.1 200 OK\r\nserver: envoy\r\n\r\n"
    assert e2e.admin_live(head + "5\r\nLIVE\n\r\n0\r\n\r\n") and e2e.admin_live(head + "LIVE\n")
    assert not e2e.admin_live("HTTP/1.1 426 Upgrade Required\r\n\r\nUpgrade Required")


def test_ways_compare_with_ephemeral_ports_masked() -> None:
    one = result("10.99.0.2:50000", entry())
    other = result("10.99.0.2:50007", entry(downstream="10.99.0.2:40009", upstream_local="10.99.0.2:50007"))
    assert one.masked() == other.masked()
    assert one.masked() != result("10.99.0.2:40000").masked()


def test_case_names_are_unique_and_hops_name_envoys_listeners() -> None:
    for scenario in e2e.SCENARIOS:
        names = [case.name for case in scenario.cases]
        assert len(names) == len(set(names)), scenario.name
        assert {hop.listener for case in scenario.cases for hop in case.hops} <= {"outbound", "inbound"}


def test_envoy_has_fsms_listeners_with_the_original_destination_filter() -> None:
    config = e2e.envoy_config("/log")
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": nl.ADMIN_PORT}
    ports = {(lst["address"]["socket_address"]["address"], lst["address"]["socket_address"]["port_value"]):
             [f["name"] for f in lst.get("listener_filters", [])] for lst in config["static_resources"]["listeners"]}
    for host in ("0.0.0.0", "::"):
        for port in (nl.OUTBOUND_PORT, nl.INBOUND_PORT):
            assert ports[host, port] == ["envoy.filters.listener.original_dst"]
    (original_dst,) = [c for c in config["static_resources"]["clusters"] if c["type"] == "ORIGINAL_DST"]
    assert original_dst["lb_policy"] == "CLUSTER_PROVIDED"


def test_the_pod_is_shaped_like_fsms_injectors() -> None:
    from pathlib import Path

    from lab import e2e_kube

    spec = e2e_kube.manifest("p", "img", Path("/venv/envoy/_bin/envoy"), Path("/w"), "iptables-restore --noflush <<EOF\nEOF\n")["spec"]
    (init,) = spec["initContainers"]
    assert init["command"] == ["/bin/sh"] and init["args"][0] == "-c"
    assert init["securityContext"] == {"runAsUser": 0, "runAsNonRoot": False,
                                       "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}
    users = {c["name"]: (c["securityContext"]["runAsUser"], c["securityContext"]["capabilities"]) for c in spec["containers"]}
    assert users == {"sidecar": (nl.SIDECAR_UID, {"drop": ["ALL"]}), "app": (e2e.APP_UID, {"drop": ["ALL"]})}
    assert spec["hostNetwork"] is True  # the lab's pod namespace, podman started in it by nsenter


def test_a_sidecar_process_with_another_uid_or_any_capability_is_refused() -> None:
    import os

    import pytest

    with pytest.raises(RuntimeError, match="runs as uid"):
        e2e.check_unprivileged(os.getpid())  # the test runner: not UID 1500 (or not without capabilities)
