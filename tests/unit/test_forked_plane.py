"""Simulated hosts answering samples from a process of their own (testing.forked): the same
answers as in this process, a cut host unreachable, a refused request refused, and the fleet's
rounds and digests work through it."""

import pytest

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import Fleet
from meso_agentless.hosts.plane import NodeRefused, Unreachable
from meso_agentless.testing.fakes import FakeUnit
from meso_agentless.testing.forked import forked
from meso_agentless.testing.simfleet import SimPlane


def test_forked_hosts_answer_as_they_would_here_as_they_were_when_forked():
    plane = SimPlane.of(3)
    first, second, third = plane.hosts
    plane.place(first, FakeUnit("meso-a_t_0_1", {"cpus": 1000}))
    plane.cut(third)
    here = plane.sample(first)
    with forked(plane) as remote:
        plane.place(second, FakeUnit("meso-b_t_0_1", {"cpus": 1000}))  # after the fork: not there
        answers = remote.sample_round({first: {}, second: {}, third: {}})
        assert answers[first] == here
        assert answers[second]["units"] == []
        assert isinstance(answers[third], Unreachable)
        same = remote.sample(first, units_digest=here["units_digest"])
        assert same["same_units"] is True and "units" not in same
        with pytest.raises(NodeRefused, match="units_digest"):
            remote.sample(first, units_digest="not one")
        assert remote.hosts == plane.hosts


def test_a_fleet_samples_forked_hosts_in_rounds():
    plane = SimPlane.of(20)
    with forked(plane) as remote:
        fleet = Fleet(remote, SystemClock(), interval=0.05)
        fleet.start()
        try:
            for _ in range(3):
                fleet.wait_round(10.0)
        finally:
            fleet.stop()
        assert fleet.hosts_up() == 20
