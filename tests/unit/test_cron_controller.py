"""Cron jobs on a fake fleet with a fake clock: a timer placed once like a task, runs collected
from the hosts (also the ones fired while the controller was away), concurrency and admission
at fire time on the host, and no scheduled time fired twice when the timer's host is lost."""

from collections import Counter

import pytest

from meso_agentless.controller.loop import JobConflict
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster

HOSTS = {"h1": (2, "4GiB"), "h2": (2, "4GiB"), "h3": (2, "4GiB"), "h4": (2, "4GiB")}
TIMER = "meso-c_t_0_1"


def cron_job(name="c", concurrency="forbid", replace_after="10s", cpus=1, count=1):
    return Job.model_validate({
        "job": name, "type": "cron", "schedule": "*:*:0/10", "concurrency": concurrency,
        "disconnect": {"replace_after": replace_after},
        "tasks": [{"name": "t", "count": count, "command": ["true"],
                   "resources": {"cpus": cpus, "mem": "64MiB"}}],
    })  # fmt: skip


def batch_job(name="b", cpus=2, count=1):
    return Job.model_validate({"job": name, "tasks": [{
        "name": "t", "count": count, "command": ["true"],
        "resources": {"cpus": cpus, "mem": "64MiB"}}]})  # fmt: skip


@pytest.fixture
def cluster(tmp_path, state):
    """On each store: SQLite and PostgreSQL."""
    c = FakeCluster.of(tmp_path, HOSTS, state=state)
    c.step()
    return c


def placed(c: FakeCluster) -> FakeCluster:
    c.controller.submit(cron_job())
    c.step()
    c.step()
    return c


def runs(c, job="c"):
    return {r.unit: (r.state, r.exit_code) for r in c.controller.store.runs(job, limit=1000)}


def started_per_scheduled_time(c, *timers):
    """Runs that really started on any host, per scheduled time (what the hosts did)."""
    count: Counter = Counter()
    for timer in timers:
        for record in c.plane.runs_of(timer):
            if record.get("state") == "started":
                count[record["scheduled"]] += 1
    return count


def test_a_cron_job_is_one_timer_placed_like_a_task(cluster):
    placed(cluster)
    assert cluster.states("c") == {("t", 0, 1): "running"}
    assert cluster.controller.outcome("c")[0].message == "cron timers placed: 1 instances running"
    host = cluster.plane.where(TIMER)
    request = cluster.plane.by_name[host].units[TIMER].request
    assert request["schedule"] == ["*:*:0/10 UTC"]
    assert request["concurrency"] == "forbid" and request["lease_sec"] == 10
    assert request["owner"] == cluster.controller.store.identity
    # every sample of that host renews its lease, and only its own
    cluster.step()
    assert cluster.plane.sample_fields[host]["leases"]["units"] == [TIMER]
    other = next(h for h in HOSTS if h != host)
    assert cluster.plane.sample_fields[other]["leases"]["units"] == []


def test_between_runs_the_timer_holds_nothing(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    # four hosts of 2 cpus, each filled by a 2-cpu task: the timer's host too
    cluster.controller.submit(batch_job(count=4))
    cluster.step()
    assert set(cluster.states("b").values()) == {"running"}
    # a firing now does not fit: skipped, with the reason, not overcommitted
    cluster.plane.fire(TIMER, scheduled=100)
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r100": ("skipped", None)}
    reason = cluster.controller.store.runs("c")[0].reason
    assert reason.startswith("admission: cpus would exceed")
    assert cluster.plane.where(TIMER) == host


def test_runs_are_collected_once_with_their_end_and_unloaded(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    cluster.plane.fire(TIMER, scheduled=10)
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r10": ("running", None)}
    assert any(f"run {TIMER}-r10 on {host}: started" in m for m in cluster.messages())
    cluster.plane.finish_run(f"{TIMER}-r10", exit_code=3)
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r10": ("failed", 3)}
    assert f"{TIMER}-r10" not in cluster.plane.by_name[host].runs  # forgotten once stored
    for _ in range(3):
        cluster.step()
    assert len(cluster.controller.store.runs("c")) == 1
    assert sum(f"{TIMER}-r10 on" in m for m in cluster.messages()) == 2  # started, failed
    # the host is told which records are stored: it reports only newer ones
    assert cluster.plane.sample_fields[host]["after"] == {TIMER: 1}


def test_runs_fired_while_the_controller_was_away_are_all_collected(cluster):
    placed(cluster)
    for scheduled in (10, 20, 30):  # no sample, no cycle: the controller is stopped
        cluster.clock.advance(3)
        cluster.plane.fire(TIMER, scheduled=scheduled)
        cluster.plane.finish_run(f"{TIMER}-r{scheduled}")
    cluster.step()
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r{t}": ("finished", 0) for t in (10, 20, 30)}
    assert started_per_scheduled_time(cluster, TIMER) == {10: 1, 20: 1, 30: 1}


def test_a_host_past_its_lease_fires_no_more(cluster):
    placed(cluster)
    cluster.clock.advance(11)  # the controller stopped for longer than the lease (10 s)
    record = cluster.plane.fire(TIMER, scheduled=50)
    assert record["state"] == "skipped" and record["reason"] == "lease lapsed"


def test_forbid_skips_while_a_run_runs(cluster):
    placed(cluster)
    cluster.plane.fire(TIMER, scheduled=10)
    skipped = cluster.plane.fire(TIMER, scheduled=20)
    assert skipped["reason"] == f"forbid: {TIMER}-r10 is still running"
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r10": ("running", None), f"{TIMER}-r20": ("skipped", None)}


def test_replace_stops_the_running_one_first(tmp_path):
    c = FakeCluster.of(tmp_path, HOSTS)
    c.step()
    c.controller.submit(cron_job(concurrency="replace"))
    c.step()
    c.plane.fire(TIMER, scheduled=10)
    c.step()
    c.plane.fire(TIMER, scheduled=20)
    c.step()
    assert runs(c) == {f"{TIMER}-r10": ("killed", None), f"{TIMER}-r20": ("running", None)}
    assert c.controller.store.run_by_unit(f"{TIMER}-r10").reason == f"replaced by {TIMER}-r20"


def test_a_trigger_runs_it_now_under_the_same_rules(cluster):
    placed(cluster)
    fired = cluster.controller.trigger("c")
    assert [r["state"] for r in fired] == ["running"] and fired[0]["kind"] == "trigger"
    cluster.clock.advance(1)
    again = cluster.controller.trigger("c")  # forbid: the first one still runs
    assert again[0]["state"] == "skipped" and "forbid" in again[0]["reason"]
    cluster.step()
    assert sorted(s for s, _ in runs(cluster).values()) == ["running", "skipped"]
    cluster.controller.submit(batch_job(cpus=1))
    with pytest.raises(JobConflict, match="not cron"):
        cluster.controller.trigger("b")


def test_a_lost_host_moves_the_timer_and_no_scheduled_time_fires_twice(cluster):
    placed(cluster)
    first = cluster.plane.where(TIMER)
    cluster.plane.cut(first)
    fired_at = 0
    # the cut host keeps firing on its own until its lease lapses
    for _ in range(25):
        cluster.step()
        fired_at += 10
        for timer in (TIMER, "meso-c_t_0_2"):
            if cluster.plane.where(timer) is not None:
                cluster.plane.fire(timer, scheduled=fired_at)
    assert cluster.states("c")[("t", 0, 1)] == "lost"
    assert cluster.states("c")[("t", 0, 2)] == "running"
    second = cluster.plane.where("meso-c_t_0_2")
    assert second not in (None, first)
    records = cluster.plane.runs_of(TIMER)
    assert any(r["state"] == "skipped" and r["reason"] == "lease lapsed" for r in records)
    # the first host comes back: its stale timer is removed, and it never got a lease again
    cluster.plane.heal(first)
    cluster.step()
    assert TIMER not in cluster.plane.by_name[first].units
    assert cluster.plane.sample_fields[first]["leases"]["units"] == []
    assert ("stop", first, TIMER) in cluster.plane.calls
    per_time = started_per_scheduled_time(cluster, TIMER, "meso-c_t_0_2")
    assert per_time and max(per_time.values()) == 1
    # what the first host ran while it was cut is collected now
    cluster.step()
    stored = {r.unit for r in cluster.controller.store.runs("c", limit=1000)
              if r.state != "skipped"}  # fmt: skip
    ran = {r["run"] for t in (TIMER, "meso-c_t_0_2") for r in cluster.plane.runs_of(t)
           if r["state"] == "started"}  # fmt: skip
    assert stored == ran


def test_a_rebooted_host_loses_its_timer_and_it_is_placed_again(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    cluster.plane.fire(TIMER, scheduled=10)
    cluster.step()
    cluster.plane.reboot(host)
    cluster.step()
    cluster.step()
    assert cluster.states("c")[("t", 0, 1)] == "gone"
    assert cluster.states("c")[("t", 0, 2)] == "running"
    # the run that was going when the host rebooted is lost, not running forever
    assert runs(cluster)[f"{TIMER}-r10"][0] == "lost"


def test_kill_removes_the_timer_and_its_runs(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    cluster.plane.fire(TIMER, scheduled=10)
    cluster.step()
    cluster.controller.kill("c")
    assert TIMER not in cluster.plane.by_name[host].units
    assert not cluster.plane.by_name[host].runs
    cluster.step()
    assert runs(cluster) == {f"{TIMER}-r10": ("killed", None)}
    assert cluster.plane.sample_fields[host]["leases"]["units"] == []


def test_drain_moves_the_timer_removing_it_first(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    cluster.controller.drain(host, deadline=600)
    cluster.step()
    cluster.step()
    assert TIMER not in cluster.plane.by_name[host].units
    moved = cluster.plane.where("meso-c_t_0_2")
    assert moved not in (None, host)
    stop = cluster.plane.calls.index(("stop", host, TIMER))
    launch = cluster.plane.calls.index(("launch", moved, "meso-c_t_0_2"))
    assert stop < launch  # never two timers at once


@pytest.mark.parametrize("catch_up", [0, 1, 2])
def test_a_timer_placed_anew_catches_up_what_no_host_ran(tmp_path, catch_up):
    c = FakeCluster.of(tmp_path, HOSTS)
    c.step()
    spec = cron_job().model_dump(mode="json")
    every_second = {**spec, "schedule": "*:*:*", "catch_up": catch_up}
    c.controller.submit(Job.model_validate(every_second))
    c.step()
    first = c.plane.where(TIMER)
    last_seen = c.clock.time()  # its last sample, which renewed its lease (10 s)
    c.plane.cut(first)
    for _ in range(30):
        c.step()
    moved = c.plane.where("meso-c_t_0_2")
    assert moved not in (None, first)
    caught = [r for r in c.controller.store.runs("c") if r.kind == "catch-up"]
    assert len(caught) == catch_up
    for run in caught:  # only times the first host could not have fired: its lease had lapsed
        assert run.scheduled > last_seen + 10
        assert run.host == moved and run.state in ("running", "skipped")
    if catch_up:  # the latest missed ones, each on its own, run once (forbid skips the 2nd)
        placed = c.controller.store.tasks("c")[-1].created
        assert sorted(r.scheduled for r in caught) == [placed - n for n in range(catch_up, 0, -1)]
        assert caught[-1].state == "running"
        assert any("caught up" in m for m in c.messages())


def test_a_kill_that_cannot_reach_the_holder_renews_its_lease_no_more(cluster):
    placed(cluster)
    host = cluster.plane.where(TIMER)
    cluster.plane.cut(host)
    for _ in range(7):
        cluster.step()
    assert cluster.states("c")[("t", 0, 1)] == "unreachable"
    cluster.controller.kill("c")
    cluster.plane.heal(host)
    cluster.step()  # its first sample back carries no lease for it: it cannot fire
    assert cluster.plane.sample_fields[host]["leases"]["units"] == []
    assert TIMER not in cluster.plane.by_name[host].units  # and it is removed
