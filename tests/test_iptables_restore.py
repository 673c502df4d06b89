"""`nftredir iptables-restore`'s reading of a mesh's script, without the kernel.

Round trip: any configuration -> FSM's script (render --format iptables) -> parsed -> the
same Config and the same nft ruleset, with every mesh's chain names. Then the spellings
iptables-restore accepts, and every kind of script that must be refused, each at its line.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nftredir.cidr import dotted
from nftredir.config import MAX_UID, Item, build_config
from nftredir.errors import ConfigError
from nftredir.render import render
from nftredir.sources.iptables_restore import tokenise
from nftredir.sources.mesh_script import SCHEMES, read_mesh_script
from tests.fsm_command import fsm_script, rename_chains
from tests.scenarios import config_of
from tests.test_differential import EVERY_LIST, PODIP, SCENARIOS

ROUND_TRIP = settings(max_examples=150, deadline=None)

cidrs = st.one_of(
    st.builds(lambda a, n: f"{dotted(a)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.sampled_from(["127.0.0.1/32", "127.0.0.0/8", "0.0.0.0/0", "10.0.0.1/8"]),
)
ports = st.integers(1, 65535).map(str)
# Interface names nftredir accepts and FSM's script can carry: printable ASCII without
# '"', '\\', '*', '/', ':', no leading '@', '+' only last, not a lone '!'.
_IFNAME_CHARS = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"\\*/:+')
ifnames = st.one_of(
    st.sampled_from(["eth0", "eth1", "lo", "veth+", "-j", "#x", "a'b"]),
    st.builds(lambda body, plus: body + plus, st.text(_IFNAME_CHARS, min_size=1, max_size=14), st.sampled_from(["", "+"])),
).filter(lambda name: not name.startswith("@") and name not in ("!", ".", ".."))


def _lists(values: st.SearchStrategy[str], max_size: int = 15) -> st.SearchStrategy[list[str]]:
    return st.lists(values, max_size=max_size)


@st.composite
def configs(draw: st.DrawFn):
    raw: dict[str, list[Item]] = {}
    for option, values in (
        ("outbound-ip-range-exclusion-list", _lists(cidrs, 20)),
        ("outbound-ip-range-inclusion-list", _lists(cidrs, 20)),
        ("outbound-port-exclusion-list", _lists(ports)),
        ("inbound-port-exclusion-list", _lists(ports)),
        ("network-interface-exclusion-list", _lists(ifnames, 4)),
        ("probe-ports", _lists(ports, 4)),
    ):
        if draw(st.booleans()):
            raw[option] = [Item(text, "--" + option) for text in draw(values)]
    for option in ("proxy-admin-port", "proxy-outbound-port", "proxy-inbound-port", "prometheus-port", "healthcheck-port"):
        if draw(st.booleans()):
            raw[option] = [Item(draw(ports), "--" + option)]
    if draw(st.booleans()):
        raw["proxy-uid"] = [Item(str(draw(st.integers(0, MAX_UID))), "--proxy-uid")]
    if draw(st.booleans()):
        raw["local-proxy-mode"] = [Item("podip", "--local-proxy-mode")]
        unicast = st.integers(0x01000000, 0x7EFFFFFF) | st.integers(0x80000000, 0xDFFFFFFF)  # not 0/8, 127/8, 224/3
        raw["pod-ip"] = [Item(dotted(draw(unicast)), "--pod-ip")]
    return build_config(raw)


def read(text: str) -> object:
    return build_config(read_mesh_script(text.encode(), "<stdin>"))


def expand_pod_ip(text: str, config) -> str:
    return text.replace("$POD_IP", str(config.pod_ip))


@ROUND_TRIP
@given(configs(), st.sampled_from(sorted(SCHEMES)))
def test_round_trip_gives_the_same_config_and_ruleset(config, scheme):
    back = read(expand_pod_ip(fsm_script(config, scheme), config))
    assert back == config
    assert render(back) == render(config)


# FSM's injector writes the IPv4 script only: the drop-in reads FSM's configurations.
@pytest.mark.parametrize("scenario", sorted(name for name, options in SCENARIOS.items() if "ip_family" not in options))
def test_every_differential_scenario_round_trips(scenario):
    config = config_of(**SCENARIOS[scenario])
    assert read(render(config, "iptables")) == config


def test_each_value_names_its_line():
    text = render(config_of(**EVERY_LIST, **PODIP), "iptables")
    layer = read_mesh_script(text.encode(), "pod.sh")
    lines = text.splitlines()
    for option, items in layer.items():
        for item in items:
            if option == "local-proxy-mode" or item.text == "":
                continue
            number = int(str(item.source).rsplit(":", 1)[1])
            assert item.text.removesuffix("/32") in lines[number - 1] or item.text in lines[number - 1], (option, item)
    assert str(layer["pod-ip"][0].source) == f"pod.sh:{next(i for i, l in enumerate(lines, 1) if 'DNAT' in l)}"


# ------------------------------------------------------------------- what it accepts

ALL = render(config_of(**EVERY_LIST, **PODIP), "iptables")
ALL_CONFIG = config_of(**EVERY_LIST, **PODIP)


def edit(text: str, *pairs: tuple[str, str], count: int = 1) -> str:
    for old, new in pairs:
        assert re.search(old, text, re.M), old
        text = re.sub(old, new, text, count=count, flags=re.M)
    return text


ACCEPTED = {
    "FSM's comment, blank lines and other comments": lambda t: "# FSM sidecar interception rules\n\n" + t.replace("COMMIT", "# done\n\nCOMMIT"),
    "long spellings": lambda t: edit(
        t, (r"^-A FSM_PROXY_OUT_REDIRECT -p tcp -j REDIRECT --to-port", "--append FSM_PROXY_OUT_REDIRECT --protocol tcp --jump REDIRECT --to-ports"),
        (r"^-A FSM_PROXY_INBOUND -p tcp --dport 15010", "-A FSM_PROXY_INBOUND -p tcp --destination-port 15010"),
        (r"--match multiport --dports 7070", "-m multiport --destination-ports 7070"),
        (r"^-A FSM_PROXY_OUTBOUND -d 198", "-A FSM_PROXY_OUTBOUND --destination 198"),
        (r"^-A FSM_PROXY_OUTBOUND -o eth1", "--append FSM_PROXY_OUTBOUND --out-interface eth1"),
        (r"^-I FSM_PROXY_INBOUND -i eth1", "--insert FSM_PROXY_INBOUND --in-interface eth1"),
        (r"--to-destination", "--to-destination")),
    "quoted words and tabs": lambda t: edit(t, (r"^-A FSM_PROXY_OUTBOUND -o eth1 -j RETURN", '-A FSM_PROXY_OUTBOUND\t-o "eth1"  -j "RETURN"')),
    "a comment match and -m tcp": lambda t: edit(t, (r"^-A FSM_PROXY_INBOUND -p tcp --dport 15010", '-A FSM_PROXY_INBOUND -p tcp -m tcp -m comment --comment "prometheus \\"metrics\\"" --dport 15010')),
    "-I with an explicit index": lambda t: edit(t, (r"^-I FSM_PROXY_INBOUND -i eth1", "-I FSM_PROXY_INBOUND 1 -i eth1")),
    "counters in the declarations": lambda t: t.replace("- [0:0]", "- [12:3400]"),
    "a duplicated CIDR line (MeshConfig and annotation)": lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -d 198\.51\.100\.0/24 -j RETURN)$", r"\1\n\1")),
    "the same range spelled twice (FSM's merge keeps both)": lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -d 198\.51\.100\.0/24 -j RETURN)$", r"\1\n-A FSM_PROXY_OUTBOUND -d 198.51.100.7/24 -j RETURN")),
    "a duplicated inclusion line": lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -d 100\.64\.0\.0/16 -j FSM_PROXY_OUT_REDIRECT)$", r"\1\n\1")),
    "exclusions in another order among themselves": lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -d 198\.51\.100\.0/24 -j RETURN)\n(-A FSM_PROXY_OUTBOUND -d 100\.64\.5\.0/24 -j RETURN)$", r"\2\n\1")),
    "-A in the final order instead of FSM's -I": lambda t: edit(t, (r"^-I FSM_PROXY_INBOUND -i eth1 -j RETURN\n", ""), (r"^-I FSM_PROXY_INBOUND -p tcp --match multiport --dports 7070,9090 -j RETURN\n", ""),
                                                             (r"^(-A FSM_PROXY_INBOUND -p tcp --dport 15010 -j RETURN)$", r"-A FSM_PROXY_INBOUND -p tcp --match multiport --dports 7070,9090 -j RETURN\n-A FSM_PROXY_INBOUND -i eth1 -j RETURN\n\1")),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepts(case):
    text = ACCEPTED[case](ALL)
    assert text != ALL or case == "long spellings"
    back = read(text)
    # Order among exclusions is the order given; the ruleset is the same either way.
    assert render(back) == render(ALL_CONFIG)


def test_non_default_constants_are_honoured():
    text = edit(ALL, (r"--to-port 15001", "--to-port 16001"), (r"--to-port 15003", "--to-port 16003"),
                (r"--dport 15000 ", "--dport 16000 "), (r"--dport 15010 ", "--dport 16010 "),
                (r"--dport 15904 ", "--dport 16904 "), (r"^.*--dport 15902 -j RETURN\n", ""), (r"\b1500\b", "1337"), count=0)
    config = read(text)
    assert (config.proxy_outbound_port, config.proxy_inbound_port, config.proxy_admin_port) == (16001, 16003, 16000)
    assert (config.prometheus_port, config.probe_ports, config.healthcheck_port) == (16010, (15901, 15903), 16904)
    assert config.proxy_uid == 1337


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_other_meshes_chain_names(scheme):
    assert read(rename_chains(ALL, scheme)) == ALL_CONFIG


def test_tokenise_as_iptables_restore():
    assert tokenise('-A X  -m comment --comment "a \\"b\\" c"\t-j RETURN', "x") == [
        "-A", "X", "-m", "comment", "--comment", 'a "b" c', "-j", "RETURN"]
    assert tokenise('-o "" -j RETURN', "x") == ["-o", "", "-j", "RETURN"]


# ------------------------------------------------------------------- what it refuses

def _drop(pattern: str):
    return lambda t: edit(t, (pattern + r".*\n", ""))


# name -> (edit of ALL, the 1-based line refused (None: the line the edit changed), reason)
REFUSED: dict[str, tuple[object, int | str | None, str]] = {
    "another table (*filter)": (lambda t: t.replace("*nat", "*filter"), 1, "only the nat table"),
    "another table (*mangle) after nat": (lambda t: t + "*mangle\nCOMMIT\n", "*mangle", "after COMMIT"),
    "a missing COMMIT": (lambda t: t.replace("COMMIT\n", ""), 1, "no COMMIT"),
    "no table at all": (lambda t: "# nothing\n", 1, "no *nat table"),
    "a rule before *nat": (lambda t: "-A OUTPUT -p tcp -j RETURN\n" + t, 1, "outside a table"),
    "an unknown option (-s)": (lambda t: edit(t, (r"-A FSM_PROXY_OUTBOUND -d 198", "-A FSM_PROXY_OUTBOUND -s 10.0.0.0/8 -d 198")), None, "'-s'"),
    "--random": (lambda t: edit(t, (r"--to-port 15001", "--to-port 15001 --random")), None, "'--random'"),
    "a second REDIRECT port (range)": (lambda t: edit(t, (r"--to-port 15001", "--to-port 15001-15002")), None, "not a port"),
    "a second REDIRECT rule": (lambda t: edit(t, (r"^(-A FSM_PROXY_OUT_REDIRECT -p tcp --dport 15000 -j ACCEPT)$", r"\1\n-A FSM_PROXY_OUT_REDIRECT -p tcp -j REDIRECT --to-port 15002")), "15002", "ends the chain before this rule"),
    "an unknown chain": (lambda t: edit(t, (r"^:FSM_PROXY_OUT_REDIRECT - \[0:0\]$", ":FSM_PROXY_OUT_REDIRECT - [0:0]\n:KUBE_X - [0:0]")), "KUBE_X", "not a chain of FSM's or OSM's"),
    "an undeclared chain": (lambda t: edit(t, (r"^COMMIT", "-A FSM_PROXY_MORE -j RETURN\nCOMMIT")), "MORE", "neither built in nor declared"),
    "mixed chain names": (lambda t: t.replace("FSM_PROXY_INBOUND", "OSM_PROXY_INBOUND"), 1, "mixes chain names"),
    "rules in POSTROUTING": (lambda t: edit(t, (r"^COMMIT", "-A POSTROUTING -j RETURN\nCOMMIT")), "POSTROUTING", "not part of a mesh's redirection"),
    "a target it does not reproduce": (lambda t: edit(t, (r"^-A OUTPUT -p tcp -j FSM_PROXY_OUTBOUND", "-A OUTPUT -p tcp -j MASQUERADE")), None, "-j MASQUERADE"),
    "a bad CIDR": (lambda t: edit(t, (r"-d 198\.51\.100\.0/24", "-d 198.51.100.0/33")), None, "not an IPv4 CIDR"),
    "a bare address": (lambda t: edit(t, (r"-d 198\.51\.100\.0/24", "-d 198.51.100.7")), None, "not an IPv4 CIDR"),
    "a bad port": (lambda t: edit(t, (r"--dports 6379,5432", "--dports 6379,70000")), None, "not a port"),
    "port 0": (lambda t: edit(t, (r"--dport 15010", "--dport 0")), None, "not a port"),
    "a port range": (lambda t: edit(t, (r"--dports 6379,5432", "--dports 6379:6400")), None, "not a port"),
    "UDP (osm-edge's DNS proxy rule)": (lambda t: edit(t, (r"^COMMIT", "-A OUTPUT -p udp -d 127.0.0.153 --dport 53 -j DNAT --to-destination 127.0.0.153:5300\nCOMMIT")), "udp", "only TCP"),
    "an empty $POD_IP": (lambda t: edit(t, (r"--to-destination 10\.99\.0\.2", "--to-destination ")), None, "needs a value"),
    "$POD_IP unexpanded": (lambda t: edit(t, (r"--to-destination 10\.99\.0\.2", "--to-destination $POD_IP")), None, "not an IPv4 address"),
    "an exclusion in one direction only (inbound)": (_drop(r"^-A FSM_PROXY_OUTBOUND -o eth1"), "-i eth1", "no such rule here"),
    "an exclusion in one direction only (outbound)": (_drop(r"^-I FSM_PROXY_INBOUND -i eth1"), "COMMIT", "lacks '-I FSM_PROXY_INBOUND -i eth1 -j RETURN'"),
    "a missing bypass rule": (_drop(r"^-A FSM_PROXY_OUTBOUND -m owner --uid-owner 1500 -j RETURN"), "COMMIT", "lacks '-A FSM_PROXY_OUTBOUND -m owner --uid-owner 1500 -j RETURN'"),
    "a missing inbound REDIRECT": (_drop(r"^-A FSM_PROXY_IN_REDIRECT -p tcp -j REDIRECT"), "COMMIT", "lacks '-A FSM_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-port 15003'"),
    "only one static inbound return": (lambda t: edit(t, (r"^-A FSM_PROXY_INBOUND -p tcp --dport 159.*\n", ""), count=0), "COMMIT", "lacks '-A FSM_PROXY_INBOUND -p tcp --dport 15904 -j RETURN'"),
    "a different static rule": (lambda t: edit(t, (r"-o lo ! -d 127\.0\.0\.1/32", "-o lo ! -d 127.0.0.0/8")), None, "no such rule here"),
    "a different UID in one rule": (lambda t: edit(t, (r"-o lo -m owner ! --uid-owner 1500", "-o lo -m owner ! --uid-owner 1501")), None, "no such rule here"),
    "an exclusion out of place": (lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -d 100\.64\.5\.0/24 -j RETURN)\n((?:.*\n){2})", r"\2\1\n")), "100.64.5.0/24 -j RETURN", "out of place"),
    "a missing final RETURN": (_drop(r"^-A FSM_PROXY_OUTBOUND -j RETURN"), "COMMIT", "lacks '-A FSM_PROXY_OUTBOUND -j RETURN'"),
    "a negated interface": (lambda t: edit(t, (r"-A FSM_PROXY_OUTBOUND -o eth1", "-A FSM_PROXY_OUTBOUND ! -o eth1")), None, "'! -o'"),
    "a -D command": (lambda t: edit(t, (r"^COMMIT", "-D OUTPUT 1\nCOMMIT")), "-D", "only -A and -I"),
    "-t inside the table": (lambda t: edit(t, (r"^COMMIT", "-t nat -A OUTPUT -j RETURN\nCOMMIT")), "-t nat", "only -A and -I"),
    "an index of insertion too big": (lambda t: edit(t, (r"^-I FSM_PROXY_INBOUND -i eth1", "-I FSM_PROXY_INBOUND 9 -i eth1")), None, "too big"),
    "a jump to a built-in chain": (lambda t: edit(t, (r"^COMMIT", "-A FSM_PROXY_OUTBOUND -j OUTPUT\nCOMMIT")), "-j OUTPUT", "built-in"),
    "--uid-owner without -m owner": (lambda t: edit(t, (r"-A FSM_PROXY_OUTBOUND -m owner --uid-owner 1500 -j RETURN", "-A FSM_PROXY_OUTBOUND --uid-owner 1500 -j RETURN")), None, "needs -m owner"),
    "a second multiport list": (lambda t: edit(t, (r"^(-A FSM_PROXY_OUTBOUND -p tcp --match multiport --dports 6379,5432 -j RETURN)$", r"\1\n-A FSM_PROXY_OUTBOUND -p tcp --match multiport --dports 1,2 -j RETURN")), "1,2", "second multiport"),
    "an unterminated quote": (lambda t: edit(t, (r"-o eth1 -j RETURN", '-o "eth1 -j RETURN')), None, "unterminated quote"),
    "a policy on a built-in chain": (lambda t: t.replace("*nat\n", "*nat\n:PREROUTING ACCEPT [0:0]\n"), 2, "built-in chain's policy"),
    "a CRLF line": (lambda t: t.replace("COMMIT\n", "COMMIT\r\n"), "COMMIT", "control character"),
}


def refused_line(text: str, expect: int | str | None, original: str) -> int:
    lines = text.split("\n")
    if isinstance(expect, int):
        return expect
    if expect is None:  # the first line the edit changed
        before = original.split("\n")
        return next(i for i, (a, b) in enumerate(zip(lines, before + [""] * len(lines)), 1) if a != b)
    return next(i for i, line in enumerate(lines, 1) if expect in line)


@pytest.mark.parametrize("case", list(REFUSED))
def test_refuses(case):
    mutate, expect, reason = REFUSED[case]
    text = mutate(ALL)
    assert text != ALL
    with pytest.raises(ConfigError) as info:
        read(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"<stdin>:{refused_line(text, expect, ALL)}: "), message
    assert reason in message, message


def test_refuses_binary_garbage():
    with pytest.raises(ConfigError, match=r"^<stdin>:2: .*not UTF-8"):
        read_mesh_script(b"*nat\n\xff\xfe\x00garbage\nCOMMIT\n", "<stdin>")
    with pytest.raises(ConfigError, match=r"^<stdin>:2: .*control character"):
        read_mesh_script(b"*nat\n-A OUTPUT\x00 -j RETURN\nCOMMIT\n", "<stdin>")


def _parsed_or_refused(script: str):
    from nftredir.sources.iptables_restore import parse

    try:
        return parse(script.encode(), "<stdin>").chains
    except ConfigError as exc:
        return str(exc)


@given(st.one_of(cidrs, st.sampled_from(["010.0.0.0/8", "10.0.0.0/33", "256.0.0.0/8", "fd00::/8", "10.0.0.0", "10.0.0.0/08", ""])),
       st.sampled_from(["RETURN", "ACCEPT", "REDIRECT"]),
       st.sampled_from(["FSM_PROXY_OUTBOUND", "OUTPUT", "UNDECLARED"]),
       st.sampled_from(["-A {c} -d {d} -j {t}", "-A {c}  -d {d} -j {t}", "-A {c} -d {d} -j {t} ", "-A\t{c} -d {d} -j {t}",
                        '-A {c} -d "{d}" -j {t}', "-I {c} -d {d} -j {t}", "-A {c} ! -d {d} -j {t}"]))
@settings(max_examples=300, deadline=None)
def test_an_exclusion_line_reads_as_the_general_parser_reads_it(dst, target, chain, shape):
    """The shortcut for FSM's `-A CHAIN -d CIDR -j RETURN` lines makes exactly the rule, or the
    refusal, that the general parser makes of the same line."""
    from nftredir.sources import iptables_restore

    script = f"*nat\n:FSM_PROXY_OUTBOUND - [0:0]\n{shape.format(c=chain, d=dst, t=target)}\nCOMMIT\n"
    fast = _parsed_or_refused(script)
    shortcut, iptables_restore._exclusion = iptables_restore._exclusion, lambda *args: None
    try:
        general = _parsed_or_refused(script)
    finally:
        iptables_restore._exclusion = shortcut
    assert fast == general
