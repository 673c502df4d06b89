"""nftredir.cidr: parsing and merging IPv4 CIDRs as ints, checked against the standard library."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nftredir import cidr
from nftredir.cidr import Cidr


@pytest.mark.parametrize(
    "text, expected",
    [("10.0.0.0/8", "10.0.0.0/8"), ("10.1.2.3/8", "10.0.0.0/8"), ("0.0.0.0/0", "0.0.0.0/0"),
     ("255.255.255.255/32", "255.255.255.255/32"), ("192.168.1.129/25", "192.168.1.128/25"), ("1.2.3.4/0", "0.0.0.0/0")],
)
def test_parse_masks_host_bits(text, expected):
    parsed = cidr.parse(text)
    assert str(parsed) == expected == str(ipaddress.IPv4Network(text, strict=False))


@pytest.mark.parametrize(
    "text, reason",
    [("10.0.0.0", "expected a.b.c.d/len"), ("10.0.0/8", "expected a.b.c.d/len"), (" 10.0.0.0/8", "expected"),
     ("10.0.0.0/8\n", "expected"), ("256.0.0.0/8", "octet 256 is over 255"), ("10.0.0.0/33", "prefix length 33"),
     ("01.0.0.0/8", "leading zeros"), ("10.0.0.0/08", "leading zeros"), ("١٠.0.0.0/8", "expected")],
)
def test_parse_refuses_what_is_not_a_plain_ipv4_cidr(text, reason):
    if reason is None:  # a leading zero in the length is harmless, as Go's ParseCIDR accepts it
        assert cidr.parse(text) == Cidr(0x0A000000, 8)
        return
    with pytest.raises(ValueError, match=reason):
        cidr.parse(text)


def test_last_address_and_text():
    block = cidr.parse("10.0.0.0/30")
    assert (block.network, block.last, block.address) == (0x0A000000, 0x0A000003, "10.0.0.0")


def test_merge_joins_adjacent_and_overlapping_ranges_into_the_fewest_cidrs():
    merged = cidr.merge(cidr.parse(t) for t in ["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "1.1.1.1/32", "1.1.1.2/31"])
    assert [str(c) for c in merged] == ["1.1.1.1/32", "1.1.1.2/31", "10.0.0.0/8"]


def test_merge_of_a_range_that_is_no_single_prefix_splits_it():
    merged = cidr.merge(cidr.parse(t) for t in ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"])
    assert [str(c) for c in merged] == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"]
    assert cidr.merge([Cidr(0, 0), Cidr(5, 32)]) == [Cidr(0, 0)]


networks = st.builds(lambda value, length: cidr.parse(f"{ipaddress.IPv4Address(value)}/{length}"),
                     st.integers(0, 2**32 - 1), st.integers(0, 32))


@settings(max_examples=300, deadline=None)
@given(st.lists(networks, max_size=40))
def test_merge_equals_the_standard_librarys_collapse(blocks):
    expected = ipaddress.collapse_addresses(ipaddress.IPv4Network(str(b)) for b in blocks)
    assert [str(c) for c in cidr.merge(blocks)] == [str(n) for n in expected]


texts = st.one_of(
    st.builds(lambda value, length: f"{ipaddress.IPv4Address(value)}/{length}", st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.sampled_from(["10.0.0.0/33", "01.0.0.0/8", "256.0.0.0/8", "10.0.0.0", "fd00::/8", "", "10.0.0.0/8\n10.0.0.0/8",
                     "10.0.0.0/8 ", "١٠.0.0.0/8", "10.0.0.0/8/10.1.0.0", "16", "10.0.0.0/+8", "10.0.0.0/-0", "0x0a.0.0.0/8"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=30))
def test_parse_many_is_parse_of_each_or_none_when_one_is_not_a_plain_ipv4_cidr(values):
    try:
        expected = [cidr.parse(text) for text in values]
        all_ipv4 = all(c.version == 4 for c in expected)
    except ValueError:
        expected, all_ipv4 = None, False
    got = cidr.parse_many(values)
    assert got == (expected if all_ipv4 and values else None)
    assert got is None or all(type(c) is Cidr for c in got)


def test_parse_many_judges_each_line_not_the_joined_text():
    # joined with newlines, ["10.0.0.0/8\n10.1.0.0/16"] reads as two valid lines: still refused
    assert cidr.parse_many(["10.0.0.0/8\n10.1.0.0/16"]) is None
    assert cidr.parse_many(["10.0.0.0/8", "10.1.0.0/16\n"]) is None


# Ranges in a 16-address block: every overlap, adjacency and gap of one address occurs.
small = st.builds(lambda value, length: Cidr(value & ~(0xFFFFFFFF >> length) & 0xFFFFFFFF, length),
                  st.integers(0x0A000000, 0x0A00000F), st.integers(28, 32))


@settings(max_examples=500, deadline=None)
@given(st.lists(small, max_size=8))
def test_merge_of_touching_and_barely_apart_ranges_equals_collapse(blocks):
    expected = ipaddress.collapse_addresses(ipaddress.IPv4Network(str(b)) for b in blocks)
    assert [str(c) for c in cidr.merge(blocks)] == [str(n) for n in expected]
