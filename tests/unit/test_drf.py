"""The DRF sorter, golden tests in the manner of Mesos' sorter tests: shares beside the order."""

import pytest

from meso_agentless.core.drf import DRFSorter, dominant_share

GiB = 2**30
TOTAL = {"cpus": 100_000, "mem": 100 * GiB}


def test_dominant_share_is_the_largest_fraction_divided_by_weight():
    assert dominant_share({"cpus": 10_000, "mem": 30 * GiB}, TOTAL) == pytest.approx(0.30)
    assert dominant_share({"cpus": 10_000, "mem": 30 * GiB}, TOTAL, 3.0) == pytest.approx(0.10)
    assert dominant_share({"ports": 500}, TOTAL) == 0.0  # ports never count


def test_golden_order():
    sorter = DRFSorter(TOTAL)
    sorter.add("a", allocated={"cpus": 5_000, "mem": 5 * GiB})  # share 0.05
    sorter.add("b", allocated={"cpus": 20_000, "mem": 1 * GiB})  # share 0.20
    sorter.add("c", allocated={"cpus": 1_000, "mem": 10 * GiB})  # share 0.10
    sorter.add("d")  # share 0.00
    assert sorter.sort() == ["d", "a", "c", "b"]
    sorter.allocate("d", {"mem": 15 * GiB})  # d: 0.15
    assert sorter.sort() == ["a", "c", "d", "b"]
    sorter.allocate("a", {"cpus": 30_000})  # a: 0.35
    assert sorter.sort() == ["c", "d", "b", "a"]
    assert sorter.lowest() == "c"
    sorter.deactivate("c")
    assert sorter.lowest() == "d"


def test_golden_order_with_weights():
    sorter = DRFSorter(TOTAL)
    sorter.add("heavy", weight=2.0, allocated={"cpus": 40_000})  # 0.40 / 2 = 0.20
    sorter.add("light", weight=1.0, allocated={"mem": 30 * GiB})  # 0.30 / 1 = 0.30
    sorter.add("tiny", weight=0.5, allocated={"cpus": 5_000})  # 0.05 / 0.5 = 0.10
    assert sorter.sort() == ["tiny", "heavy", "light"]
    assert sorter.shares() == pytest.approx({"heavy": 0.20, "light": 0.30, "tiny": 0.10})


def test_ties_go_to_the_smaller_name_and_weights_must_be_positive():
    sorter = DRFSorter(TOTAL)
    for name in ("zeta", "alpha", "mid"):
        sorter.add(name)
    assert sorter.sort() == ["alpha", "mid", "zeta"]
    assert sorter.lowest() == "alpha"
    with pytest.raises(ValueError, match="positive"):
        sorter.add("bad", weight=0)
