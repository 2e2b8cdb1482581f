"""The controller acting on guarantees, on a fake fleet with a fake clock: borrowed tasks are
marked revocable (env, unit description), revoked when their owner needs its guarantee back
(batch requeued, services replaced, neither a failure), caps and priorities hold."""

from meso_agentless.controller.loop import Controller
from meso_agentless.core.model import Framework
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster

GUARANTEED = (
    Framework("a", guarantee={"cpus": 6000}),
    Framework("b", guarantee={"cpus": 1000}),
)


def job(name, framework, count, type_="batch", **extra):
    task = {"name": "t", "count": count, "command": ["true"],
            "resources": {"cpus": 1, "mem": "64MiB"}, **extra.pop("task", {})}  # fmt: skip
    return Job.model_validate(
        {"job": name, "type": type_, "framework": framework, "tasks": [task], **extra}
    )


def running(c, name):
    return sorted(u for u in c.plane.running() if u.startswith(f"meso-{name}_"))


def request(c, unit):
    host = c.plane.where(unit)
    return c.plane.by_name[host].units[unit].request


def test_borrowed_tasks_are_revoked_for_the_owner_and_requeued_nothing_lost_or_run_twice(
    tmp_path,
):
    # one host of 8 CPUs: a is guaranteed 6, b 1; the pool outside guarantees is 1
    c = FakeCluster.of(tmp_path, {"h1": (8, "64GiB")}, GUARANTEED)
    c.step()
    c.controller.submit(job("jb", "b", 8))
    c.step()
    assert len(running(c, "jb")) == 8
    revocable = [u for u in running(c, "jb") if request(c, u)["env"].get("MESO_REVOCABLE")]
    assert len(revocable) == 6  # b's guarantee (1) and the pool (1) are not revocable
    assert all(" revocable [state:" in request(c, u)["description"] for u in revocable)
    # a, idle so far, submits 3 tasks within its guarantee
    c.controller.submit(job("ja", "a", 3))
    c.step()  # the youngest 3 borrowed tasks are revoked (stopped, back to pending)
    revoked = [u for u in revocable if u not in c.plane.running()]
    assert revoked == ["meso-jb_t_5_1", "meso-jb_t_6_1", "meso-jb_t_7_1"]
    messages = c.messages()
    for i in (5, 6, 7):
        assert f"jb/t[{i}] on h1: revoked, a needs its guarantee back" in messages
        assert f"jb/t[{i}] on h1: killed (revoked)" in messages
    assert (
        "ja/t[0-2] not placed: waiting for revocation: borrowed tasks on h1 are being "
        "stopped" in messages
    )
    c.step()  # the next cycle: a runs, b's requeued tasks wait for room
    assert len(running(c, "ja")) == 3
    states = c.states("jb")
    assert [states[("t", i, 1)] for i in (5, 6, 7)] == ["killed"] * 3
    assert all(("t", i, 2) not in states for i in (5, 6, 7))
    jb = c.controller.jobs["jb"].unplaced
    assert {u.index for u in jb} == {5, 6, 7}
    for unit in running(c, "ja") + running(c, "jb"):
        c.plane.finish(unit)
    for _ in range(3):
        c.step()
    for unit in running(c, "jb"):
        c.plane.finish(unit)
    c.step()
    c.step()
    assert c.controller.outcome("ja")[0].code == 0
    result = c.controller.outcome("jb")[0]
    assert (result.code, result.message) == (0, "all 8 task(s) finished")  # not a failure
    assert max(c.plane.started.values()) == 1  # no unit ever started twice
    finished = {(t, i) for (t, i, _), s in c.states("jb").items() if s == "finished"}
    assert finished == {("t", i) for i in range(8)}  # nothing lost


def test_a_revoked_service_instance_is_replaced(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (8, "64GiB")}, GUARANTEED)
    c.step()
    c.controller.submit(job("web", "b", 8, type_="service"))
    c.step()
    c.controller.submit(job("ja", "a", 6))
    c.step()
    c.step()
    assert len(running(c, "ja")) == 6
    assert len(running(c, "web")) == 2  # the non-revocable ones stay
    assert {u.reason for u in c.controller.jobs["web"].unplaced} == {
        'no host fits: dimension "cpus" exhausted on 1 host'
    }
    for unit in running(c, "ja"):
        c.plane.finish(unit)
    c.step()
    c.step()
    assert len(running(c, "web")) == 8  # replaced, under new attempts
    assert sorted(a for (_, _, a) in c.states("web")).count(2) == 6


def test_a_restarted_controller_knows_the_borrowed_tasks_from_their_hosts(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (8, "64GiB")}, GUARANTEED)
    c.step()
    c.controller.submit(job("jb", "b", 8))
    c.step()
    old = c.controller
    c.controller = Controller(old.store, old.inventory, old.plane, old.fleet, old.clock,
                              old.events)  # fmt: skip
    c.step()
    c.controller.submit(job("ja", "a", 2))
    c.step()
    assert len(running(c, "jb")) == 6


def test_max_running_holds_and_the_rest_wait_in_order(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (8, "64GiB")})
    c.step()
    c.controller.submit(job("capped", "x", 5, task={"max_running": 2}))
    c.step()
    assert len(running(c, "capped")) == 2
    reasons = {u.index: u.reason for u in c.controller.jobs["capped"].unplaced}
    assert reasons == {i: "cap reached: capped/t runs at most 2 at once (2 running)"
                       for i in (2, 3, 4)}  # fmt: skip
    c.plane.finish(running(c, "capped")[0])
    c.step()
    c.step()
    assert len(running(c, "capped")) == 2
    assert ("t", 2, 1) in c.states("capped")  # the next in order


def test_a_higher_priority_job_goes_first_within_its_framework(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (2, "64GiB")})
    c.step()
    c.controller.submit(job("busy", "x", 2))
    c.step()
    c.controller.submit(job("early", "x", 2))
    c.controller.submit(job("urgent", "x", 2, priority=90))
    for unit in running(c, "busy"):
        c.plane.finish(unit)
    c.step()
    c.step()
    assert len(running(c, "urgent")) == 2 and not running(c, "early")
