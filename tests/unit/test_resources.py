"""Resource quantities: sizes, CPUs, counts and port ranges parse to exact integers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meso_agentless.core.resources import (
    ResourceError,
    count_ports,
    format_quantity,
    parse_count,
    parse_cpus,
    parse_port_ranges,
    parse_resources,
    parse_size,
    remove_ports,
    take_ports,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256MiB", 256 * 2**20),
        ("4GiB", 4 * 2**30),
        ("1.5G", 1_500_000_000),
        ("1.5Gi", 3 * 2**29),
        ("512", 512),
        (512, 512),
        ("10 MB", 10_000_000),
        ("2T", 2 * 10**12),
        ("1KiB", 1024),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1G", "not a size"),
        (-5, "negative"),
        ("1.5", "whole number of bytes"),
        ("12XB", "not a size"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("999999999TiB", "absurdly large"),
        (True, "must be a number"),
        ([1], "must be a number"),
    ],
)
def test_bad_sizes(value, message):
    with pytest.raises(ResourceError, match=message):
        parse_size(value, "mem")


def test_cpus_are_millicpus():
    assert parse_cpus(2) == 2000
    assert parse_cpus(0.5) == 500
    assert parse_cpus("1.25") == 1250
    assert parse_cpus("250m") == 250
    with pytest.raises(ResourceError, match="thousandth"):
        parse_cpus(0.0001)
    with pytest.raises(ResourceError, match="negative"):
        parse_cpus(-1)


@given(st.integers(0, 2**50))
def test_sizes_round_trip_through_their_text(n):
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}KiB") == n * 1024


def test_resources_mapping():
    assert parse_resources({"cpus": 0.5, "mem": "256MiB", "gpus": 1, "disk": 0}) == {
        "cpus": 500,
        "mem": 256 * 2**20,
        "gpus": 1,
    }
    with pytest.raises(ResourceError, match=r"resources.gpus .* whole number"):
        parse_resources({"gpus": 0.5})
    with pytest.raises(ResourceError, match="not a resource name"):
        parse_resources({"Bad Name": 1})


def test_port_ranges_parse_merge_and_hand_out_lowest_first():
    ranges = parse_port_ranges("31000-31002,31003-31005, 8080")
    assert ranges == ((8080, 8080), (31000, 31005))
    assert count_ports(ranges) == 7
    rest = remove_ports(ranges, [31001, 8080])
    assert rest == ((31000, 31000), (31002, 31005))
    taken, left = take_ports(rest, 3)
    assert taken == [31000, 31002, 31003]
    assert left == ((31004, 31005),)
    with pytest.raises(ResourceError, match="1-65535"):
        parse_port_ranges("0-10")


def test_format_quantity():
    assert format_quantity("cpus", 1500) == "1.5"
    assert format_quantity("mem", 256 * 2**20) == "256MiB"
    assert format_quantity("mem", 3 * 2**29) == "1.5GiB"
    assert format_quantity("gpus", 2) == "2"


@pytest.mark.parametrize("value", ["1e999999", 10**400, "9" * 5000, "1e31"])
def test_absurd_quantities_are_refused_not_overflowed(value):
    for parse in (parse_cpus, parse_size, parse_count):
        with pytest.raises(ResourceError, match=r"absurdly large|not a size"):
            parse(value, "x")
