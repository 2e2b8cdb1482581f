"""core.deployments: a deployment's next step from its policy and the attempts with their
versions (pure), and a property over whole rolling updates simulated step by step."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from meso_agentless.core import deployments as core
from meso_agentless.core.jobs import ROLLED_BACK

NOW = 1000.0


def old(index, task="t", attempt=1, state="running"):
    return core.Instance(task, index, attempt, f"u-{task}-{index}-{attempt}", "h1", False,
                         state, "healthy", 0.0, 0.0, 0.0)  # fmt: skip


def new(index, task="t", attempt=2, since=NOW - 100, healthy_since=None, health="healthy", **kw):
    return core.Instance(task, index, attempt, f"u-{task}-{index}-{attempt}", "h2", True,
                         kw.pop("state", "running"), health,
                         since if healthy_since is None else healthy_since, since,
                         kw.pop("created", since), **kw)  # fmt: skip


ONE_AT_A_TIME = core.Policy(max_parallel=1, min_healthy_time=10)


def step(instances, policy=ONE_AT_A_TIME, count=3, **kw):
    kw.setdefault("promoted", False)
    kw.setdefault("started", NOW - 500)
    return core.step(policy, {"t": count}, instances, now=NOW, **kw)


def test_the_first_step_replaces_max_parallel_running_instances_in_order():
    first = step([old(0), old(1), old(2)], core.Policy(max_parallel=2))
    assert first.state == core.RUNNING
    assert first.replace == (("t", 0, "h1"), ("t", 1, "h1"))
    assert first.retire == ()
    assert first.progress == {"t": {"desired": 3, "new": 0, "healthy": 0, "old": 3}}


def test_an_old_instance_stops_only_once_its_replacement_was_healthy_for_min_healthy_time():
    young = new(0, healthy_since=NOW - 5)
    waiting = step([old(0), young, old(1), old(2)])
    assert (waiting.replace, waiting.retire) == ((), ())  # one under way: nothing more
    grown = new(0, healthy_since=NOW - 10)
    moving = step([old(0), grown, old(1), old(2)])
    assert moving.retire == (old(0),)
    assert moving.replace == (("t", 1, "h1"),)  # the next one starts as this one is done


def test_without_checks_running_for_min_healthy_time_is_enough():
    unchecked = new(0, health=None, since=NOW - 10)
    assert step([old(0), unchecked, old(1)], count=2).retire == (old(0),)


def test_the_deployment_is_successful_once_every_slot_is_new_and_no_old_one_runs():
    done = [new(i, healthy_since=NOW - 60) for i in range(3)]
    assert step(done).state == core.SUCCESSFUL
    assert step([old(0, state="killed"), *done]).state == core.SUCCESSFUL
    assert step([old(0), *done]).state == core.RUNNING  # the last old one still stops


def test_canaries_wait_for_a_promote_then_the_rest_roll():
    policy = core.Policy(max_parallel=1, min_healthy_time=10, canary=2)
    first = step([old(0), old(1), old(2)], policy)
    assert first.replace == (("t", 0, "h1"), ("t", 1, "h1")) and first.retire == ()
    canaries = [old(0), new(0), old(1), new(1), old(2)]
    waiting = step(canaries, policy)
    assert (waiting.state, waiting.replace, waiting.retire) == (core.WAITING, (), ())
    assert "waiting for a promote" in waiting.reason
    promoted = step(canaries, policy, promoted=True)
    assert promoted.retire == (old(0), old(1)) and promoted.replace == (("t", 2, "h1"),)
    auto = step(canaries, replace(policy, auto_promote=True))
    assert auto.promote and auto.state == core.RUNNING


def test_a_new_instance_failing_its_check_fails_the_deployment_naming_the_check():
    failed = new(0, state="failed", reason="unhealthy: 3 checks failed in a row (HTTP 500)")
    result = step([old(0), failed, old(1), old(2)], checks={"t": "http /health on port 0"})
    assert result.state == core.FAILED
    assert result.reason == ("t[0] failed its health check (http /health on port 0): "
                             "unhealthy: 3 checks failed in a row (HTTP 500)")  # fmt: skip


def test_a_new_instance_not_healthy_within_the_deadline_fails_it():
    policy = core.Policy(healthy_deadline=60)
    slow = new(0, health="starting", created=NOW - 61)
    result = step([old(0), slow], policy, count=1, checks={"t": "tcp on port 0"})
    assert result.state == core.FAILED
    assert result.reason == ("t[0] did not pass its health check (tcp on port 0) within the "
                             "healthy_deadline (60 s)")  # fmt: skip
    assert step([old(0), replace(slow, created=NOW - 59)], policy, count=1).state == core.RUNNING


def test_a_failure_from_before_the_deployment_does_not_count():
    earlier = new(0, state="failed", created=NOW - 900, reason="exit 1")
    assert step([old(0), earlier], count=1).state == core.RUNNING


def test_a_rollback_takes_back_the_new_attempts_where_an_old_one_still_runs():
    failed = new(0, state="failed", reason="unhealthy")
    fresh = new(1, attempt=1)  # no old one left in slot 1: kept (a revert replaces it)
    taken = core.rollback([old(0), failed, fresh, old(2)])
    assert taken == [failed]
    marked = replace(failed, reason=ROLLED_BACK)
    assert core.slots([old(0), marked], {"t": 1})[0].latest == old(0)


# -- the property: a whole rolling update, simulated ---------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_rolling_update_keeps_enough_healthy_and_never_too_many(data):
    count = data.draw(st.integers(1, 6), label="count")
    policy = core.Policy(
        max_parallel=data.draw(st.integers(1, count), label="max_parallel"),
        min_healthy_time=data.draw(st.sampled_from([0, 3, 10]), label="min_healthy_time"),
        healthy_deadline=10_000,
        canary=data.draw(st.integers(0, count), label="canary"),
        auto_promote=data.draw(st.booleans(), label="auto_promote"),
    )
    now, promoted = 0.0, False
    live = {i: [old(i)] for i in range(count)}  # slot -> attempts (the last is the latest)
    ready_at: dict[str, tuple[float, float]] = {}  # unit -> (running at, healthy at)
    for _ in range(400):
        now += 1.0
        for attempts in live.values():  # new attempts start, then pass their checks
            for i, a in enumerate(attempts):
                if a.unit in ready_at:
                    running, healthy = ready_at[a.unit]
                    if a.state == "staging" and now >= running:
                        attempts[i] = a = replace(a, state="running", since=now)
                    if a.state == "running" and a.health == "starting" and now >= healthy:
                        attempts[i] = replace(a, health="healthy", healthy_since=now)
        everything = [a for attempts in live.values() for a in attempts]
        result = core.step(policy, {"t": count}, everything, promoted=promoted, started=0.0,
                           now=now)  # fmt: skip
        running = [a for a in everything if a.state in core.LIVE]
        healthy = [a for a in running if a.state == "running" and a.health == "healthy"]
        assert len(healthy) >= count - policy.max_parallel
        assert len(running) <= count + max(policy.max_parallel, policy.canary)
        assert result.state != core.FAILED
        if result.state == core.SUCCESSFUL:
            break
        if result.state == core.WAITING or result.promote:
            promoted = True
        retired = {a.unit for a in result.retire}
        for attempts in live.values():
            attempts[:] = [replace(a, state="killed") if a.unit in retired else a
                           for a in attempts]  # fmt: skip
        for task, index, _host in result.replace:
            attempt = live[index][-1].attempt + 1
            unit = f"u-{task}-{index}-{attempt}"
            fresh = core.Instance(task, index, attempt, unit, "h2", True, "staging", "starting",
                                  None, now, now)  # fmt: skip
            live[index].append(fresh)
            start = data.draw(st.integers(0, 3), label="starts after")
            ready_at[unit] = (now + start, now + start + data.draw(st.integers(0, 4)))
        still = [a for a in everything if a.state in core.LIVE and a.unit not in retired]
        assert len(still) + len(result.replace) <= count + max(policy.max_parallel, policy.canary)
    else:
        raise AssertionError("the deployment never completed")
    latest = [attempts[-1] for attempts in live.values()]
    assert all(a.current and a.state == "running" for a in latest)
    assert not [a for a in everything if not a.current and a.state in core.LIVE]
