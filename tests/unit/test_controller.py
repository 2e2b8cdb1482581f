"""The controller's loop on a fake fleet with a fake clock (Nomad's scheduler harness is the
model): every path from submit to outcome, and what it does when hosts misbehave."""

import pytest

from meso_agentless.controller.loop import JobConflict, NotFound
from meso_agentless.core.model import Framework
from meso_agentless.errors import Unplaceable
from meso_agentless.hosts.plane import EXPIRY_MARGIN
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster

TWO_HOSTS = {"h1": (2, "4GiB"), "h2": (2, "4GiB")}


def job(name="j", count=2, type_="batch", cpus=1, framework="default", resources_ports=0,
        disconnect=None, **task):  # fmt: skip
    return Job.model_validate({
        "job": name, "type": type_, "framework": framework,
        **({"disconnect": disconnect} if disconnect else {}),
        "tasks": [{"name": "t", "count": count, "command": ["true"],
                   "resources": {"cpus": cpus, "mem": "64MiB", "ports": resources_ports},
                   **task}],
    })  # fmt: skip


@pytest.fixture
def cluster(tmp_path, state):
    """On each store: SQLite and PostgreSQL."""
    c = FakeCluster.of(tmp_path, TWO_HOSTS, replace_after=30.0, state=state)
    c.step()
    return c


def outcome(c, name="j"):
    result, _ = c.controller.outcome(name)
    return None if result is None else (result.code, result.message)


def test_a_batch_job_is_placed_launched_watched_and_finished(cluster):
    cluster.controller.submit(job())
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "running", ("t", 1, 1): "running"}
    assert outcome(cluster) is None
    for unit in list(cluster.plane.running()):
        cluster.plane.finish(unit)
    cluster.step()
    assert set(cluster.states("j").values()) == {"finished"}
    assert outcome(cluster) == (0, "all 2 task(s) finished")
    assert cluster.controller.store.job("j").state == "done"
    assert all(not h.units for h in cluster.plane.by_name.values())  # cleaned up once stored
    assert "j/t[0] placed on h1 (attempt 1)" in cluster.messages()


def test_ended_units_are_forgotten_in_one_request_per_host(cluster):
    cluster.controller.submit(job(count=4))
    cluster.step()
    for unit in list(cluster.plane.running()):
        cluster.plane.finish(unit)
    cluster.step()
    assert outcome(cluster) == (0, "all 4 task(s) finished")
    asked = [call for call in cluster.plane.calls if call[0] == "forget_many"]
    assert sorted(host for _, host, _ in asked) == ["h1", "h2"]
    assert sum(len(units) for _, _, units in asked) == 4
    assert all(not h.units for h in cluster.plane.by_name.values())


def test_a_failure_is_retried_per_policy_then_the_job_fails(cluster):
    cluster.controller.submit(job(count=1, restart={"policy": "on-failure", "attempts": 1}))
    cluster.step()
    cluster.plane.finish("meso-j_t_0_1", exit_code=3)
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "failed", ("t", 0, 2): "running"}
    cluster.plane.finish("meso-j_t_0_2", exit_code=4)
    cluster.step()
    assert outcome(cluster) == (1, "1 task(s) failed; first t[0]: failed exit 4")
    assert cluster.controller.store.job("j").state == "failed"


def test_a_launch_that_never_reached_its_host_is_launched_again_under_the_same_name(cluster):
    cluster.controller.submit(job(count=1))
    real_launch = cluster.plane.launch
    cluster.plane.launch = lambda *a, **k: (_ for _ in ()).throw(
        __import__("meso_agentless.hosts.plane", fromlist=["Unreachable"]).Unreachable("lost")
    )
    cluster.step()  # the launch was lost on the way: the row stays staging
    assert cluster.states("j") == {("t", 0, 1): "staging"}
    cluster.plane.launch = real_launch
    cluster.step()  # the host says it has no such unit: missing
    assert cluster.states("j") == {("t", 0, 1): "missing"}
    # not launched again while the lost launch may still arrive and start (until it expires
    # on the host: the launch's deadline and the margin, after it was sent)
    waited = 1.0
    while waited <= cluster.controller.launch_timeout + EXPIRY_MARGIN:
        assert cluster.plane.started["meso-j_t_0_1"] == 0
        cluster.step()
        waited += 1.0
    cluster.step()  # then the same attempt again
    assert cluster.states("j") == {("t", 0, 1): "running"}
    assert cluster.plane.started["meso-j_t_0_1"] == 1


def test_a_report_older_than_the_launch_never_makes_a_task_missing(cluster):
    cluster.controller.submit(job(count=1))
    cluster.controller.tick()  # launched on views sampled before the launch
    cluster.controller.tick()  # the same old views again: not trusted for that unit
    assert cluster.states("j") == {("t", 0, 1): "running"}
    assert cluster.plane.started["meso-j_t_0_1"] == 1


def test_an_unreachable_service_instance_is_replaced_after_replace_after_and_the_original_stopped_when_its_host_returns(  # noqa: E501
    tmp_path,
):
    # three hosts: losing one is a third, not more (more would look like the controller cut off)
    cluster = FakeCluster.of(tmp_path, {**TWO_HOSTS, "h3": (2, "4GiB")}, replace_after=30.0)
    cluster.step()
    cluster.controller.submit(job(type_="service", count=2, cpus=0.5))
    cluster.step()
    cluster.step()  # a cycle that launched nothing more: the service is up
    assert outcome(cluster) == (0, "service up: 2 instances running")
    cut = cluster.plane.where("meso-j_t_0_1")
    cluster.plane.cut(cut)
    for _ in range(6):
        cluster.step()
    states = cluster.states("j")
    assert states[("t", 0, 1)] == "unreachable"  # not lost: nothing is replaced yet
    assert ("t", 0, 2) not in states
    for _ in range(30):
        cluster.step()
    states = cluster.states("j")
    assert states[("t", 0, 1)] == "lost" and states[("t", 0, 2)] == "running"
    assert cluster.plane.where("meso-j_t_0_2") != cut
    cluster.plane.heal(cut)
    cluster.step()
    cluster.step()
    running = cluster.plane.running()
    assert "meso-j_t_0_1" not in running  # the replacement wins
    assert sum(1 for u in running if u.startswith("meso-j_t_0_")) == 1
    assert len(running) == 2


def test_a_reboot_means_the_tasks_are_gone_batch_retried_service_replaced(cluster):
    cluster.controller.submit(job(count=1, restart={"policy": "on-failure", "attempts": 2}))
    cluster.controller.submit(job("s", type_="service", count=1, cpus=0.5))
    cluster.step()
    for host in ("h1", "h2"):
        cluster.plane.reboot(host)
    cluster.step()
    assert cluster.states("j")[("t", 0, 1)] == "gone"
    assert cluster.states("s")[("t", 0, 1)] == "gone"
    assert any("rebooted: its tasks are gone" in m for m in cluster.messages())
    cluster.step()
    assert cluster.states("j")[("t", 0, 2)] == "running"
    assert cluster.states("s")[("t", 0, 2)] == "running"


def test_a_host_shutting_down_has_its_tasks_gone_not_lost_and_gets_nothing_new(cluster):
    """Seen mid-shutdown (units already stopped, same boot): gone, as after the reboot, with
    the restart policies deciding; nothing is launched there until it is back."""
    cluster.controller.submit(job(count=1, restart={"policy": "never"}))
    cluster.controller.submit(job("s", type_="service", count=1, cpus=0.5))
    cluster.step()
    host = cluster.plane.where("meso-j_t_0_1")
    cluster.plane.shut_down(host)
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "gone"}
    assert cluster.controller.store.job("j").state == "failed"
    assert any(f"{host}: stopping" in m for m in cluster.messages())
    cluster.step()
    service = {k: v for k, v in cluster.states("s").items() if v == "running"}
    assert len(service) == 1
    assert all(cluster.plane.where(u) != host for u in cluster.plane.running())
    cluster.plane.reboot(host)
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "gone"}


def test_a_launch_refused_because_its_host_is_stopping_is_placed_again(cluster):
    cluster.controller.submit(job(count=1))
    cluster.plane.shut_down("h1")  # after the last sample: h1 looks up and free
    cluster.controller.tick()
    assert cluster.states("j") == {}
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "running"}
    assert cluster.plane.where("meso-j_t_0_1") == "h2"


def test_a_vanished_service_instance_comes_back_and_a_crash_counts_as_a_restart(cluster):
    cluster.controller.submit(job(type_="service", count=1, cpus=0.5))
    cluster.step()
    cluster.plane.crash("meso-j_t_0_1")  # systemd restarts it in place
    cluster.step()
    assert cluster.controller.store.tasks("j")[0].restarts == 1
    cluster.plane.vanish("meso-j_t_0_1")  # stopped behind our back: lost, relaunched
    cluster.step()
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "lost", ("t", 0, 2): "running"}


def test_scale_up_and_down(cluster):
    cluster.controller.submit(job(type_="service", count=1, cpus=0.5))
    cluster.step()
    cluster.controller.scale("j", "t", 3)
    cluster.step()
    assert len(cluster.plane.running()) == 3
    row = cluster.controller.scale("j", "t", 1)
    cluster.step()
    assert list(cluster.plane.running()) == ["meso-j_t_0_1"]
    result, version = cluster.controller.outcome("j")
    assert result.code == 0 and version >= row.version
    with pytest.raises(NotFound):
        cluster.controller.scale("j", "nosuch", 2)


def test_kill_stops_everything_and_a_unit_on_an_unreachable_host_when_it_returns(cluster):
    cluster.controller.submit(job(type_="service", count=2, cpus=1.5))  # one on each host
    cluster.step()
    away = cluster.plane.where("meso-j_t_1_1")
    cluster.plane.cut(away)
    for _ in range(6):
        cluster.step()
    stopped = cluster.controller.kill("j")
    assert {s["state"] for s in stopped} == {"killed", "unreachable"}
    assert outcome(cluster) == (1, "killed")
    for _ in range(40):  # nothing is replaced for a killed job
        cluster.step()
    assert ("t", 1, 2) not in cluster.states("j")
    cluster.plane.heal(away)
    cluster.step()
    cluster.step()
    assert cluster.plane.running() == {}
    assert set(cluster.states("j").values()) == {"killed"}


def test_submitting_the_same_job_again_changes_nothing_and_another_spec_conflicts(cluster):
    first = cluster.controller.submit(job())
    assert cluster.controller.submit(job()) == first
    with pytest.raises(JobConflict, match="active with another spec"):
        cluster.controller.submit(job(count=5))
    cluster.step()
    for unit in list(cluster.plane.running()):
        cluster.plane.finish(unit)
    cluster.step()
    again = cluster.controller.submit(job(count=5))  # ended: a new run, numbered on
    assert again.run == 2


def test_the_same_job_done_is_not_run_again_unless_asked_and_a_failed_one_is(cluster):
    spec = job(restart={"policy": "never"})
    first = cluster.controller.submit(spec)
    cluster.step()
    for unit in list(cluster.plane.running()):
        cluster.plane.finish(unit)
    cluster.step()
    assert cluster.controller.store.job("j").state == "done"
    cluster.controller.jobs.clear()  # a restarted controller knows no outcome but its rows
    retried = cluster.controller.submit(spec)  # a `meso run` retried after it broke
    assert (retried.run, retried.version) == (first.run, cluster.controller.store.job("j").version)
    assert outcome(cluster) == (0, "already done (run 1): all 2 task(s) finished; "
                                   "--again runs it again")  # fmt: skip
    cluster.step()
    assert not cluster.plane.running()
    again = cluster.controller.submit(spec, again=True)
    assert again.run == 2
    cluster.step()
    assert len(cluster.plane.running()) == 2
    for unit in list(cluster.plane.running()):
        cluster.plane.finish(unit, exit_code=1)
    cluster.step()
    assert cluster.controller.store.job("j").state == "failed"
    assert cluster.controller.submit(spec).run == 3  # failed: the same file tries again


def test_units_nobody_launched_are_reported_and_left_alone(cluster):
    cluster.plane.launch("h1", {"unit": "meso-other_t_0_1", "argv": ["sleep"], "cpus": 1000})
    cluster.step()
    assert cluster.controller.unclaimed == {"h1": ["meso-other_t_0_1"]}
    assert "meso-other_t_0_1" in cluster.plane.running()
    assert any("was not launched by this controller" in m for m in cluster.messages())
    cluster.controller.submit(job(count=3, cpus=1))  # h1 has 1 CPU left, h2 has 2
    cluster.step()
    hosts = [r.host for r in cluster.controller.store.tasks("j")]
    assert sorted(hosts) == ["h1", "h2", "h2"]


def test_a_job_that_does_not_fit_now_waits_and_is_placed_when_room_frees(cluster):
    cluster.controller.submit(job("a", count=4, cpus=1))
    cluster.step()
    cluster.controller.submit(job("b", count=1, cpus=1))
    cluster.step()
    assert outcome(cluster, "b") is None  # pending: it could fit, just not now
    [pending] = cluster.controller.jobs["b"].unplaced
    assert pending.reason == 'no host fits: dimension "cpus" exhausted on 2 hosts'
    cluster.plane.finish("meso-a_t_0_1")
    cluster.step()
    cluster.step(5)
    assert cluster.states("b") == {("t", 0, 1): "running"}


def test_frameworks_share_by_weighted_drf_across_jobs_in_one_cycle(tmp_path):
    frameworks = (Framework("a", 3.0), Framework("b", 1.0))
    c = FakeCluster.of(tmp_path, {"h1": (8, "64GiB")}, frameworks)
    c.step()
    c.controller.submit(job("ja", count=8, cpus=1, framework="a"))
    c.controller.submit(job("jb", count=8, cpus=1, framework="b"))
    c.step()
    placed = {name: sum(s == "running" for s in c.states(name).values()) for name in ("ja", "jb")}
    assert placed == {"ja": 6, "jb": 2}


def test_a_zero_quota_places_nothing_and_says_so(tmp_path):
    c = FakeCluster.of(tmp_path, TWO_HOSTS, (Framework("capped", 1.0, {"cpus": 0}),))
    c.step()
    with pytest.raises(Unplaceable, match="quota of framework capped reached: cpus 0 of 0"):
        c.controller.submit(job(framework="capped", count=1))
    assert c.controller.store.jobs() == []


@pytest.mark.parametrize(("spec", "reason"), [
    ({"cpus": 3}, 'no host fits: dimension "cpus" exhausted on 2 hosts'),
    ({"count": 3, "type_": "service", "constraints": [{"op": "unique_host"}]},
     'no host fits: constraint "unique host" filtered on 2 hosts'),
    ({"constraints": [{"attribute": "rack", "op": "eq", "value": "nowhere"}]},
     'no host fits: constraint "rack = nowhere" filtered on 2 hosts'),
])  # fmt: skip
def test_a_task_that_could_never_fit_is_refused_at_submission_storing_nothing(
    cluster, spec, reason
):
    spec = dict(spec)  # each store's run gets the same
    with pytest.raises(Unplaceable) as refused:
        cluster.controller.submit(job(count=spec.pop("count", 1), **spec))
    assert refused.value.exit_code == 3 and refused.value.unplaced[-1]["reason"] == reason
    assert cluster.controller.store.jobs() == [] and cluster.plane.running() == {}


def test_a_batch_job_larger_than_the_cluster_runs_in_turns(cluster):
    """Six 1-CPU tasks on 4 CPUs, each on its own host at a time: they wait for each other."""
    cluster.controller.submit(job(count=6, cpus=1, constraints=[{"op": "unique_host"}]))
    for _ in range(3):
        cluster.step()
        for unit in list(cluster.plane.running()):
            cluster.plane.finish(unit)
    cluster.step()
    cluster.step()
    assert outcome(cluster) == (0, "all 6 task(s) finished")


def test_scaling_past_what_could_ever_fit_is_refused(cluster):
    cluster.controller.submit(job(type_="service", count=1, constraints=[{"op": "unique_host"}]))
    with pytest.raises(Unplaceable):
        cluster.controller.scale("j", "t", 3)
    assert Job.model_validate(cluster.controller.store.job("j").spec).tasks[0].count == 1


def test_jobs_of_one_framework_are_placed_in_submission_order(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (1, "4GiB")})
    c.step()
    c.controller.submit(job("zz", count=1))
    c.controller.submit(job("aa", count=1))
    c.step()
    assert c.states("zz") == {("t", 0, 1): "running"} and c.states("aa") == {}


def test_a_run_time_weight_and_quota_change_persist(cluster):
    cluster.controller.set_framework("web", 2.5, {"cpus": 4000})
    names = {f.name: f for f in cluster.controller.frameworks()}
    assert (names["web"].weight, names["web"].quota) == (2.5, {"cpus": 4000})


def test_a_launch_refused_by_host_admission_is_placed_again_not_failed(cluster):
    """Another controller took h1 between our sample and our launch: the task is pending
    again, and goes where there is room once the next sample shows it."""
    cluster.plane.launch("h1", {"unit": "meso-other_t_0_1", "argv": ["sleep"], "cpus": 2000})
    cluster.controller.submit(job(count=1, cpus=1.5))
    cluster.controller.tick()  # views from before the other launch: h1 looks free
    assert cluster.states("j") == {}
    said = "not launched on h1, placing it again: h1: admission"
    assert any(said in m for m in cluster.messages())
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "running"}
    assert cluster.plane.where("meso-j_t_0_1") == "h2"


def test_a_host_cut_just_before_a_launch_costs_one_deadline_and_the_rest_go_elsewhere(cluster):
    cluster.controller.submit(job(count=4, cpus=0.25))
    cluster.plane.cut("h1")  # views from before the cut: h1 looks up, binpack fills it first
    cluster.controller.tick()
    messages = cluster.messages()
    assert sum("h1 unreachable during the launch" in m for m in messages) == 1
    assert sum("not launched on h1, placing it again" in m for m in messages) == 3
    cluster.controller.tick()  # h1 is not placed on again until it answers a newer sample
    states = cluster.states("j")
    assert sorted(states.values()) == ["running", "running", "running", "staging"]
    assert {cluster.plane.where(u) for u in cluster.plane.running()} == {"h2"}


def test_kill_and_gc_stop_units_nobody_claims_but_never_adopt_them(cluster):
    cluster.plane.launch("h1", {"unit": "meso-j_t_0_9", "argv": ["sleep"], "cpus": 100})
    cluster.plane.launch("h2", {"unit": "meso-other_t_0_1", "argv": ["sleep"], "cpus": 100})
    cluster.controller.submit(job(type_="service", count=1, cpus=0.5))
    cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "running"}  # its own attempt, not the stray
    stopped = {s["unit"] for s in cluster.controller.kill("j")}
    assert stopped == {"meso-j_t_0_1", "meso-j_t_0_9"}
    assert set(cluster.plane.running()) == {"meso-other_t_0_1"}
    cluster.step()
    assert [s["unit"] for s in cluster.controller.gc()] == ["meso-other_t_0_1"]
    assert cluster.plane.running() == {}


def test_a_controller_cut_off_from_many_hosts_at_once_replaces_nothing(tmp_path):
    hosts = {f"h{i}": (2, "4GiB") for i in range(1, 6)}
    c = FakeCluster.of(tmp_path, hosts, replace_after=30.0)
    c.step()
    c.controller.submit(job(type_="service", count=5, cpus=1.5))  # one per host
    c.step()
    for host in ("h1", "h2", "h3"):
        c.plane.cut(host)
    for _ in range(60):
        c.step()
    assert c.controller.replacements_paused
    assert all(attempt == 1 for (_, _, attempt) in c.states("j"))  # nothing replaced
    assert any("3 of 5 hosts unreachable at once" in m for m in c.messages())
    for host in ("h1", "h2", "h3"):
        c.plane.heal(host)
    c.step()
    c.step()
    assert not c.controller.replacements_paused
    assert set(c.states("j").values()) == {"running"} and len(c.plane.running()) == 5


def test_one_host_lost_among_five_is_still_replaced(tmp_path):
    hosts = {f"h{i}": (2, "4GiB") for i in range(1, 6)}
    c = FakeCluster.of(tmp_path, hosts, replace_after=30.0)
    c.step()
    c.controller.submit(job(type_="service", count=4, cpus=1.5))
    c.step()
    c.plane.cut(c.plane.where("meso-j_t_0_1"))
    for _ in range(40):
        c.step()
    assert not c.controller.replacements_paused
    assert c.states("j")[("t", 0, 2)] == "running"


def checked_service(count=2, failures=3, grace="0", **extra):
    return job(type_="service", count=count, cpus=0.5, resources_ports=1,
               health={"http": "/health", "interval": "2s", "timeout": "1s", "grace": grace,
                       "failures": failures}, **extra)  # fmt: skip


def test_a_service_is_up_only_once_its_instances_pass_their_checks(cluster):
    cluster.controller.submit(checked_service())
    cluster.step()
    assert set(cluster.states("j").values()) == {"running"}
    for unit in cluster.plane.running():
        cluster.plane.set_health(unit, False, "connection refused")
    for _ in range(3):
        cluster.step()
    assert outcome(cluster) is None  # running, not healthy: not up
    assert {r.health for r in cluster.controller.store.tasks("j")} == {"unhealthy"}
    for unit in cluster.plane.running():
        cluster.plane.set_health(unit, True)
    for _ in range(3):
        cluster.step()
    assert outcome(cluster) == (0, "service up: 2 instances running")
    assert {r.health for r in cluster.controller.store.tasks("j")} == {"healthy"}
    assert any(": healthy (HTTP 200)" in m for m in cluster.messages())


def test_an_instance_failing_its_check_failures_times_in_a_row_is_restarted(cluster):
    cluster.controller.submit(checked_service(count=1, failures=3))
    cluster.step()
    cluster.plane.set_health("meso-j_t_0_1", False, "HTTP 500")
    for _ in range(8):  # a check every 2 s: three failures, then the stop and a new attempt
        cluster.step()
    states = cluster.states("j")
    assert states[("t", 0, 1)] == "failed" and states[("t", 0, 2)] == "running"
    [first] = [r for r in cluster.controller.store.tasks("j") if r.attempt == 1]
    assert first.reason == "unhealthy: 3 checks failed in a row (HTTP 500)"
    assert "meso-j_t_0_1" not in cluster.plane.running()


def test_failures_within_the_grace_period_or_broken_by_a_success_do_not_restart(cluster):
    cluster.controller.submit(checked_service(count=1, failures=2, grace="20s"))
    cluster.step()
    cluster.plane.set_health("meso-j_t_0_1", False)
    for _ in range(15):  # within the grace period
        cluster.step()
    assert cluster.states("j") == {("t", 0, 1): "running"}
    for _ in range(10):  # past it: one failure, then a success resets the count
        cluster.step()
        health = cluster.fleet.view("h1").health.get("meso-j_t_0_1")
        if health and health.failures == 1:
            cluster.plane.set_health("meso-j_t_0_1", True)
    assert cluster.states("j") == {("t", 0, 1): "running"}


def test_a_drained_host_loses_its_service_instances_one_at_a_time_and_its_batch_at_the_deadline(
    tmp_path,
):
    c = FakeCluster.of(tmp_path, {"h1": (4, "8GiB"), "h2": (4, "8GiB"), "h3": (4, "8GiB")})
    c.step()
    c.controller.submit(job("svc", type_="service", count=2, cpus=1))  # binpack: both on h1
    c.controller.submit(job("b", count=1, cpus=1, restart={"policy": "never", "attempts": 0}))
    c.step()
    c.step()
    assert {c.plane.where(u) for u in c.plane.running()} == {"h1"}
    c.controller.drain("h1", deadline=20)
    lowest = 2
    for _ in range(8):
        c.step()
        lowest = min(lowest, sum(u.startswith("meso-svc_") for u in c.plane.running()))
    assert lowest == 2  # never below its count: the new one runs before the old one stops
    svc = {u: h for u, h in c.plane.running().items() if u.startswith("meso-svc_")}
    assert len(svc) == 2 and "h1" not in svc.values()
    assert c.plane.where("meso-b_t_0_1") == "h1"  # batch may finish until the deadline
    for _ in range(20):
        c.step()
    assert c.states("b") == {("t", 0, 1): "killed", ("t", 0, 2): "running"}
    assert c.controller.store.tasks("b")[0].reason == "drained"
    assert c.plane.where("meso-b_t_0_2") != "h1"
    assert c.controller.host_states["h1"] == "drained"
    assert c.controller.placeable_hosts(c.fleet.views(), []) and "h1" not in {
        h.name for h in c.controller.placeable_hosts(c.fleet.views(), [])}  # fmt: skip
    c.controller.undrain("h1")
    c.step()
    assert "h1" in {h.name for h in c.controller.placeable_hosts(c.fleet.views(), [])}


def test_each_job_says_when_its_unreachable_tasks_are_replaced(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB"), "h3": (2, "4GiB")})
    c.step()
    c.controller.submit(job("quick", type_="service", count=1, cpus=1.5,
                            disconnect={"replace_after": "10s"}))  # fmt: skip
    c.controller.submit(job("once", count=1, cpus=1.5, restart={"policy": "never",
                                                                "attempts": 0}))  # fmt: skip
    c.controller.submit(job("again", count=1, cpus=1.5))  # on-failure, attempts 3
    c.step()
    c.step()
    hosts = {name: c.plane.where(f"meso-{name}_t_0_1") for name in ("quick", "once", "again")}
    assert len(set(hosts.values())) == 3  # one per host
    for name in ("quick", "once", "again"):  # one at a time, each its own partition
        c.plane.cut(hosts[name])
        for _ in range(16):
            c.step()
        c.plane.heal(hosts[name])
        c.step()
        c.step()
    assert c.states("quick")[("t", 0, 2)] == "running"  # replaced after its 10 s
    assert "meso-quick_t_0_1" not in c.plane.running()  # and the original stopped on return
    assert ("t", 0, 2) not in c.states("once")  # never: it waits for its host
    assert c.states("once")[("t", 0, 1)] == "running"
    assert set(c.states("again")) == {("t", 0, 1)}  # 16 s < the default 30 s


def test_a_service_scaled_to_nothing_stays_a_service_and_scales_up_again(cluster):
    cluster.controller.submit(job(type_="service", count=1, cpus=0.5))
    cluster.step()
    cluster.controller.scale("j", "t", 0)
    cluster.step()
    cluster.step()
    assert cluster.plane.running() == {}
    assert outcome(cluster) == (0, "service up: 0 instances running")
    assert cluster.controller.store.job("j").state == "active"
    cluster.controller.scale("j", "t", 2)
    cluster.step()
    assert len(cluster.plane.running()) == 2


def test_thousands_of_pending_instances_cost_one_group_not_one_each(cluster):
    cluster.controller.submit(job("q", count=5000, cpus=1))
    cluster.step()
    report = cluster.controller.tick(allocate_now=True)
    assert len(report.unplaced) == 4996
    unplaced = [m for m in cluster.messages() if "not placed" in m]
    assert unplaced == ['q/t[4-4999] not placed: no host fits: dimension "cpus" exhausted on '
                        "2 hosts"]  # said once, for the whole run of indexes  # fmt: skip


def test_a_unit_of_the_same_name_launched_by_someone_else_is_never_taken_for_ours(cluster):
    """Another controller (another state) or a person started meso-j_t_0_2 before us: our
    attempt 2 is not it; we neither adopt, stop nor clean it up, and run attempt 3 instead."""
    cluster.controller.submit(job(type_="service", count=1, cpus=0.5))
    cluster.step()
    host = cluster.plane.where("meso-j_t_0_1")
    cluster.plane.launch(
        host,
        {
            "unit": "meso-j_t_0_2",
            "argv": ["sleep"],
            "cpus": 100,
            "description": "meso j/t[0] attempt 2 [state:0123456789ab]",
        },
    )
    cluster.plane.vanish("meso-j_t_0_1")  # ours goes: the next attempt's name is taken
    for _ in range(4):
        cluster.step()
    states = cluster.states("j")
    assert states[("t", 0, 2)] == "lost" and states[("t", 0, 3)] == "running"
    assert "meso-j_t_0_2" in cluster.plane.running()  # left alone
    assert "meso-j_t_0_2" in cluster.controller.unclaimed.get(host, [])
    assert cluster.controller.gc() == []  # another state's unit: not ours to stop
    cluster.controller.kill("j")
    assert set(cluster.plane.running()) == {"meso-j_t_0_2"}


def test_after_a_partition_heals_a_host_still_away_gets_its_whole_replace_after_again(tmp_path):
    hosts = {f"h{i}": (2, "4GiB") for i in range(1, 7)}
    c = FakeCluster.of(tmp_path, hosts)
    c.step()
    c.controller.submit(job(type_="service", count=4, cpus=1.5,
                            disconnect={"replace_after": "20s"}))  # h1..h4, one each  # fmt: skip
    c.step()
    for host in ("h1", "h2", "h3"):
        c.plane.cut(host)
    for _ in range(40):  # a partition: nothing replaced however long it lasts
        c.step()
    c.plane.heal("h1")
    c.plane.heal("h2")
    for _ in range(10):  # replacements resume; h3's 20 s count from here, not from the cut
        c.step()
    assert not c.controller.replacements_paused
    assert all(attempt == 1 for (_, _, attempt) in c.states("j"))
    for _ in range(15):
        c.step()
    assert any(attempt == 2 for (_, _, attempt) in c.states("j"))


def test_a_batch_job_may_wait_for_its_unreachable_host_instead_of_being_replaced(tmp_path):
    c = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB"), "h3": (2, "4GiB")})
    c.step()
    c.controller.submit(job("waits", count=1, cpus=1.5,
                            disconnect={"replace_after": "10s", "batch": "wait"}))  # fmt: skip
    c.controller.submit(job("moves", count=1, cpus=1.5, disconnect={"replace_after": "10s"}))
    c.step()
    c.step()
    for name in ("waits", "moves"):
        host = c.plane.where(f"meso-{name}_t_0_1")
        c.plane.cut(host)
        for _ in range(16):
            c.step()
        c.plane.heal(host)
        c.step()
        c.step()
    assert set(c.states("waits")) == {("t", 0, 1)}  # never run twice
    assert c.states("waits")[("t", 0, 1)] == "running"
    assert c.states("moves")[("t", 0, 2)] == "running"  # replaced, the original stopped
    assert "meso-moves_t_0_1" not in c.plane.running()
