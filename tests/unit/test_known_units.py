"""A sample leaves out the units its caller already holds (nodecmd.sample_unless_known): the
request carries the digest of the units held from that host, the node answers `same_units`
instead of the list when its own units have that digest. The fleet sends the digest, keeps
its units on such an answer, and never takes an answer for more than it says."""

from __future__ import annotations

import json

import pytest

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import Fleet
from meso_agentless.node import nodecmd
from meso_agentless.testing.fakes import FakeClock, FakeHost, FakePlane
from meso_agentless.testing.simfleet import SimPlane
from tests.unit.test_sim_fleet import batch

UNITS = [{"unit": "meso-a_t_0_1.service", "state": "running", "exit_code": None}]


def sampled(units: list[dict]) -> dict:
    return {"hostname": "h", "boot": "b", "units": [dict(u) for u in units], "runs": []}


def test_the_node_leaves_out_only_the_units_whose_digest_the_caller_holds():
    whole = nodecmd.without_known_units(sampled(UNITS), None)
    digest = whole["units_digest"]
    assert whole["units"] == UNITS and "same_units" not in whole
    same = nodecmd.without_known_units(sampled(UNITS), digest)
    assert "units" not in same and same["same_units"] is True
    assert same["units_digest"] == digest
    ended = [{**UNITS[0], "state": "finished", "exit_code": 0}]
    changed = nodecmd.without_known_units(sampled(ended), digest)
    assert changed["units"] == ended and changed["units_digest"] != digest
    for gone in ([], [*UNITS, *UNITS]):  # a rebooted host; another unit
        assert nodecmd.without_known_units(sampled(gone), digest)["units"] == gone


@pytest.mark.parametrize("bad", [5, "x" * 32, "ABCDEF" * 6, "0" * 31, ["0" * 32]])
def test_a_digest_that_is_not_one_is_refused_naming_the_field_before_anything_is_done(
    monkeypatch, bad
):
    done = []
    monkeypatch.setattr(nodecmd, "sample", lambda *a: done.append(a) or sampled(UNITS))
    line = json.dumps({"verb": "sample", "units_digest": bad}).encode()
    answer = nodecmd.handle_line(line, nodecmd.Session())
    assert answer["ok"] is False and answer["error"].startswith("units_digest:")
    assert done == []


def test_a_request_without_a_digest_gets_the_units_as_before(monkeypatch):
    monkeypatch.setattr(nodecmd, "sample", lambda request, session: sampled(UNITS))
    answer = nodecmd.handle_line(b'{"verb": "sample"}', nodecmd.Session())
    assert answer["ok"] is True and answer["units"] == UNITS


def test_the_fleet_sends_its_digest_keeps_its_units_and_sees_every_change(tmp_path):
    plane = SimPlane.of(2, cpus=4)
    fleet = Fleet(plane, plane.clock)
    host = plane.hosts[0]
    plane.launch(host, {"unit": "meso-a_t_0_1", "argv": ["sleep", "5"], "cpus": 1000})
    plane.launch(host, {"unit": "meso-b_t_0_1", "argv": ["serve"], "cpus": 1000})
    fleet.refresh()
    first = fleet.view(host)
    assert "units_digest" not in plane.sample_fields[host]
    assert first.units["meso-a_t_0_1"]["state"] == "running"
    plane.clock.advance(1)
    fleet.refresh()  # nothing changed: the node leaves the units out, the fleet keeps them
    assert plane.sample_fields[host]["units_digest"]
    kept = fleet.view(host)
    assert kept.units is first.units and kept.marks == first.marks
    assert not kept.facts.get("same_units") and "units_digest" not in kept.facts
    plane.clock.advance(5)  # meso-a's sleep is over
    fleet.refresh()
    ended = fleet.view(host)
    assert ended.units["meso-a_t_0_1"]["state"] == "finished" and ended.marks != first.marks
    plane.reboot(host)  # its units are gone, whatever digest the fleet holds
    plane.clock.advance(1)
    fleet.refresh()
    assert fleet.view(host).units == {}


def test_an_answer_that_says_same_of_units_the_fleet_no_longer_holds_is_not_recorded():
    plane = FakePlane({"h1": FakeHost("h1")}, FakeClock())
    fleet = Fleet(plane, plane.clock)
    plane.launch("h1", {"unit": "meso-a_t_0_1", "cpus": 1000})
    fleet.refresh()
    held = fleet.view("h1")
    stale = plane.sample("h1", units_digest="0" * 32)  # whole: another digest
    stale.update(same_units=True, units_digest="0" * 32)
    del stale["units"]
    plane.clock.advance(1)
    fleet._sampled("h1", plane.clock.monotonic(), stale)
    assert fleet.view("h1").units == held.units and fleet.view("h1").asked == held.asked
    assert "units_digest" not in fleet._fields("h1")  # the next sample asks for them whole
    fleet.refresh()
    assert fleet.view("h1").units == held.units and fleet.view("h1").asked > held.asked


def test_an_answer_asked_before_the_one_recorded_never_overwrites_it():
    plane = FakePlane({"h1": FakeHost("h1")}, FakeClock())
    fleet = Fleet(plane, plane.clock)
    plane.launch("h1", {"unit": "meso-a_t_0_1", "cpus": 1000})
    older_asked = plane.clock.monotonic()
    older = plane.sample("h1")  # asked first, read late
    plane.clock.advance(1)
    plane.finish("meso-a_t_0_1")
    fleet.refresh()
    fleet._sampled("h1", older_asked, older)
    assert fleet.view("h1").units["meso-a_t_0_1"]["state"] == "finished"


class OldNode(FakePlane):
    """A node command from before digests: it refuses the field, and never sends one."""

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        if "units_digest" in fields:
            raise AssertionError("units_digest: unknown field")
        answer = super().sample(host, timeout, **fields)
        del answer["units_digest"]
        return answer


def test_a_node_that_sends_no_digest_is_never_sent_one():
    plane = OldNode({"h1": FakeHost("h1")}, FakeClock())
    fleet = Fleet(plane, plane.clock)
    plane.launch("h1", {"unit": "meso-a_t_0_1", "cpus": 1000})
    for _ in range(3):
        plane.clock.advance(1)
        fleet.refresh()
    plane.finish("meso-a_t_0_1")
    fleet.refresh()
    assert fleet.view("h1").units["meso-a_t_0_1"]["state"] == "finished"
    assert fleet.view("h1").error is None


def test_the_controller_sees_each_task_end_through_same_units_answers_on_a_simulated_fleet(
    tmp_path,
):
    from meso_agentless.testing.simfleet import sim_cluster

    cluster = sim_cluster(tmp_path, 50, cpus=4)
    cluster.controller.submit(batch(120, 30, "j"))
    for _ in range(60):
        cluster.step(1.0)
        states = cluster.states("j")
        if len(states) == 120 and set(states.values()) == {"finished"}:
            break
    assert set(cluster.states("j").values()) == {"finished"}
    assert all(n == 1 for n in cluster.plane.started.values())  # each ran once
    assert any("units_digest" in f for f in cluster.plane.sample_fields.values())


def test_the_daemon_sends_digests_too():
    plane = SimPlane.of(3)
    fleet = Fleet(plane, SystemClock(), interval=0.05)
    fleet.start()
    try:
        fleet.wait_round(5.0)
        fleet.wait_round(5.0)
        fleet.wait_round(5.0)
    finally:
        fleet.stop()
    assert all("units_digest" in plane.sample_fields[h] for h in plane.hosts)
