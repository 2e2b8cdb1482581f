"""Fair sharing between teams, golden cases written out by hand: guarantees, borrowing,
revocation, limits, caps and priorities (the pure core).

The cluster of most cases: one host of 10 CPUs and 40 GiB. Team `a` is guaranteed 6 CPUs and
24 GiB, team `b` 2 CPUs and 8 GiB; the pool outside every guarantee is 2 CPUs and 8 GiB.
Tasks ask 1 CPU and 4 GiB unless said otherwise (a tenth of the host in both).
"""

from collections import Counter

from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Framework, Host, RevocableTask, TaskGroup
from meso_agentless.core.offers import JobScheduler

GiB = 2**30
SMALL = {"cpus": 1000, "mem": 4 * GiB}
A = Framework("a", guarantee={"cpus": 6000, "mem": 24 * GiB})
B = Framework("b", guarantee={"cpus": 2000, "mem": 8 * GiB})


def host(name="h0", cpus=10, mem=40, used=None):
    return Host(name, {"cpus": cpus * 1000, "mem": mem * GiB}, used=used or {})


def run(hosts, groups, frameworks, revocable=()):
    by: dict[str, list[TaskGroup]] = {}
    for g in groups:
        by.setdefault(g.framework, []).append(g)
    schedulers = [JobScheduler(fw, gs) for fw, gs in sorted(by.items())]
    return allocate(hosts, frameworks, schedulers, revocable=revocable)


def group(fw, job, count, resources=SMALL, **kw):
    return TaskGroup(job, "t", fw, count, resources, **kw)


def held(n, revocable=0):
    """What n small tasks hold, as a Framework's allocated/revocable."""
    total = {"cpus": n * 1000, "mem": n * 4 * GiB}
    rev = {"cpus": revocable * 1000, "mem": revocable * 4 * GiB}
    return total, rev


def test_borrowing_marks_what_exceeds_the_guarantee_and_the_pool_as_revocable():
    # b asks 10 tasks while a is idle:
    #   tasks 0-1: within b's guarantee (2 CPUs)        -> not revocable
    #   tasks 2-3: the pool outside guarantees (2 CPUs)  -> not revocable
    #   tasks 4-9: a's unused guarantee (6 CPUs)          -> revocable (borrowed)
    # b's dominant share: 10/10 CPUs = 1.0; a's: 0
    plan = run([host()], [group("b", "bj", 10)], [A, B])
    assert [p.revocable for p in plan.placements] == [False] * 4 + [True] * 6
    assert plan.shares == {"a": 0.0, "b": 1.0}
    assert not plan.unplaced and not plan.revocations


def test_an_owner_below_its_guarantee_revokes_the_youngest_borrowed_tasks_only():
    # b runs 10 tasks, 6 of them borrowed (started at t=1..6; t=6 is the youngest).
    # a submits 2 tasks of 2 CPUs / 8 GiB: 4 CPUs within its guarantee of 6.
    # Nothing is free: the 4 youngest borrowed tasks (t=6,5,4,3) are revoked, t=1,2 stay.
    alloc, rev = held(10, revocable=6)
    b = Framework("b", guarantee=B.guarantee, allocated=alloc, revocable=rev)
    running = [RevocableTask("bj", "t", i, "b", "h0", SMALL, since=i - 3) for i in range(4, 10)]
    big = {"cpus": 2000, "mem": 8 * GiB}
    plan = run([host(used=alloc)], [group("a", "aj", 2, big)], [A, b], running)
    assert sorted(r.index for r in plan.revocations) == [6, 7, 8, 9]  # since 3, 4, 5, 6
    assert {r.owner for r in plan.revocations} == {"a"}
    assert not plan.placements
    assert [u.reason for u in plan.unplaced] == [
        "waiting for revocation: borrowed tasks on h0 are being stopped"
    ] * 2
    # the next cycle, once they stopped: a goes first (below its guarantee), b's 4 revoked
    # batch tasks are pending again and find no room
    alloc, rev = held(6, revocable=2)
    b = Framework("b", guarantee=B.guarantee, allocated=alloc, revocable=rev)
    plan = run(
        [host(used=alloc)],
        [group("a", "aj", 2, big), group("b", "bj", 4, first_index=6)],
        [A, b],
        running[:2],
    )
    assert [(p.job, p.index, p.revocable) for p in plan.placements] == [
        ("aj", 0, False), ("aj", 1, False),
    ]  # fmt: skip
    assert [u.index for u in plan.unplaced] == [6, 7, 8, 9]
    assert not plan.revocations
    # shares: a 4/10 = 0.4, b 6/10 = 0.6
    assert plan.shares == {"a": 0.4, "b": 0.6}


def test_tasks_already_being_revoked_are_not_revoked_twice():
    alloc, rev = held(10, revocable=6)
    b = Framework("b", guarantee=B.guarantee, allocated=alloc, revocable=rev)
    running = [
        RevocableTask("bj", "t", i, "b", "h0", SMALL, since=i, stopping=i >= 6)
        for i in range(4, 10)
    ]
    plan = run([host(used=alloc)], [group("a", "aj", 2, {"cpus": 2000, "mem": 8 * GiB})],
               [A, b], running)  # fmt: skip
    assert not plan.revocations  # the 4 stopping ones make the room
    assert len(plan.unplaced) == 2


def test_the_fewest_victims_are_chosen_and_unneeded_ones_kept():
    # on h0, borrowed: a small young task (1 CPU, t=10) and a big older one (4 CPUs, t=5).
    # a needs 4 CPUs: youngest first takes the small one, then the big one; the small one turns
    # out not to be needed, so only the big one is revoked.
    used = {"cpus": 10000, "mem": 40 * GiB}
    b = Framework("b", allocated=used, revocable={"cpus": 5000, "mem": 20 * GiB})
    big = {"cpus": 4000, "mem": 16 * GiB}
    running = [
        RevocableTask("young", "t", 0, "b", "h0", SMALL, since=10),
        RevocableTask("old", "t", 0, "b", "h0", big, since=5),
    ]
    plan = run([host(used=used)], [group("a", "aj", 1, big)], [A, b], running)
    assert [r.job for r in plan.revocations] == ["old"]


def test_nothing_is_revoked_beyond_the_guarantee_or_when_it_fits():
    alloc, _ = held(4)
    a = Framework("a", guarantee=A.guarantee, allocated=alloc)
    b_alloc, b_rev = held(6, revocable=4)
    b = Framework("b", guarantee=B.guarantee, allocated=b_alloc, revocable=b_rev)
    used = {"cpus": 10000, "mem": 40 * GiB}
    running = [RevocableTask("bj", "t", i, "b", "h0", SMALL, since=i) for i in range(4)]
    # a holds 4 of its 6 CPUs; 3 more would take it to 7: only 2 get revocations
    plan = run([host(used=used)], [group("a", "aj", 3)], [a, b], running)
    assert sorted(r.index for r in plan.revocations) == [2, 3]
    # with room free, nothing is revoked at all
    plan = run([host(cpus=20, mem=80, used=used)], [group("a", "aj", 2)], [a, b], running)
    assert not plan.revocations and len(plan.placements) == 2


def test_a_framework_below_its_guarantee_goes_first_whatever_its_share():
    # a holds 5 of 10 CPUs (share 0.5, but below its guarantee of 6), c holds nothing.
    # one CPU is free: a takes it first (it is below its guarantee), c gets nothing.
    a = Framework("a", guarantee={"cpus": 6000}, allocated={"cpus": 5000})
    c = Framework("c")
    used = {"cpus": 9000, "mem": 0}
    plan = run([host(used=used)], [group("a", "aj", 1), group("c", "cj", 1)], [a, c])
    assert [p.framework for p in plan.placements] == ["a"]


def test_revocable_false_keeps_a_group_off_borrowed_capacity():
    # b's 10 tasks may not borrow: its guarantee (2) and the pool (2) take 4, the rest wait
    plan = run([host()], [group("b", "bj", 10, revocable=False)], [A, B])
    assert len(plan.placements) == 4
    assert not any(p.revocable for p in plan.placements)
    assert plan.unplaced[0].reason == (
        "revocable: false, and only borrowed capacity is left: cpus 0 outside the "
        "guarantees, the task needs 1 of it"
    )


def test_limits_hold_with_borrowing():
    b = Framework("b", quota={"cpus": 5000}, guarantee=B.guarantee)
    plan = run([host()], [group("b", "bj", 10)], [A, b])
    assert len(plan.placements) == 5
    assert plan.unplaced[0].reason.startswith("quota of framework b reached: cpus 5 of 5")


def test_max_running_caps_a_group_and_a_job():
    # group cap 3 with 1 running: 2 start, 3 wait; job cap 4 over two groups, 1 running
    g1 = TaskGroup("j1", "web", "c", 5, SMALL, max_running=3, running_count=1)
    g2 = TaskGroup("j2", "x", "c", 3, SMALL, job_max_running=4, job_running=1, order=1)
    g3 = TaskGroup("j2", "y", "c", 3, SMALL, job_max_running=4, job_running=1, order=1)
    plan = run([host(cpus=100, mem=400)], [g1, g2, g3], [Framework("c")])
    assert Counter((p.job, p.task) for p in plan.placements) == {
        ("j1", "web"): 2, ("j2", "x"): 3,
    }  # fmt: skip
    reasons = {(u.job, u.task): u.reason for u in plan.unplaced}
    assert reasons == {
        ("j1", "web"): "cap reached: j1/web runs at most 3 at once (3 running)",
        ("j2", "y"): "cap reached: job j2 runs at most 4 at once (4 running)",
    }


def test_a_gang_over_its_cap_waits_whole():
    g = TaskGroup("mpi", "rank", "c", 4, SMALL, gang=True, max_running=3)
    plan = run([host()], [g], [Framework("c")])
    assert not plan.placements and len(plan.unplaced) == 4


def test_priority_orders_a_frameworks_jobs_before_submission_order():
    # room for 2 tasks; "late" (priority 90, submitted second) goes before "early" (50)
    early = group("c", "early", 2, order=0)
    late = group("c", "late", 2, order=1, priority=90)
    plan = run([host(cpus=2, mem=8)], [early, late], [Framework("c")])
    assert [p.job for p in plan.placements] == ["late", "late"]
    assert {u.job for u in plan.unplaced} == {"early"}


def test_equal_inputs_give_the_same_plan_in_any_order():
    alloc, rev = held(10, revocable=6)
    b = Framework("b", guarantee=B.guarantee, allocated=alloc, revocable=rev)
    running = [RevocableTask("bj", "t", i, "b", "h0", SMALL, since=i % 3) for i in range(4, 10)]
    groups = [group("a", "aj", 2, {"cpus": 2000, "mem": 8 * GiB})]
    one = run([host(used=alloc)], groups, [A, b], running)
    two = run([host(used=alloc)], groups, [b, A], list(reversed(running)))
    assert one == two
