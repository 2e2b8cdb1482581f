"""Gang task groups: all instances placed in one cycle, at once, or none (with the reason)."""

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Constraint, Framework, Host, TaskGroup
from meso_agentless.core.offers import Decline, GangLaunch, JobScheduler, Launch, Scheduler
from meso_agentless.errors import UsageError
from meso_agentless.spec import job_from_data
from tests.unit.test_allocator_properties import snapshots

GiB = 2**30
ONE = {"cpus": 1000, "mem": GiB}


def run(hosts, groups, frameworks=()):
    by_fw: dict[str, list[TaskGroup]] = {}
    for g in groups:
        by_fw.setdefault(g.framework, []).append(g)
    return allocate(hosts, frameworks, [JobScheduler(fw, gs) for fw, gs in by_fw.items()])


def hosts(n, cpus=4000):
    return [Host(f"h{i}", {"cpus": cpus, "mem": 16 * GiB}) for i in range(n)]


def test_a_gang_that_fits_is_placed_whole_across_hosts():
    plan = run(hosts(3), [TaskGroup("mpi", "rank", "hpc", 10, ONE, gang=True)])
    assert sorted(p.index for p in plan.placements) == list(range(10))
    assert sum(Counter(p.host for p in plan.placements).values()) == 10
    assert plan.unplaced == []


def test_a_gang_that_does_not_fit_places_nothing_and_says_why():
    plan = run(hosts(3), [TaskGroup("mpi", "rank", "hpc", 13, ONE, gang=True)])
    assert plan.placements == []
    assert len(plan.unplaced) == 13
    assert plan.unplaced[0].reason == (
        'gang of 13: only 12 fit at once, so none was placed (no host fits: dimension "cpus" '
        "exhausted on 3 hosts)"
    )


def test_without_gang_the_same_group_is_placed_in_part():
    plan = run(hosts(3), [TaskGroup("mpi", "rank", "hpc", 13, ONE)])
    assert len(plan.placements) == 12 and len(plan.unplaced) == 1


def test_a_failed_gang_leaves_its_room_to_the_next_groups_and_frameworks():
    groups = [
        TaskGroup("big", "rank", "hpc", 20, ONE, gang=True, order=0),
        TaskGroup("small", "rank", "hpc", 2, ONE, gang=True, order=1),
        TaskGroup("web", "srv", "web", 10, ONE),
    ]
    plan = run(hosts(3), groups)
    placed = Counter(p.job for p in plan.placements)
    assert placed == {"small": 2, "web": 10}
    assert {u.job for u in plan.unplaced} == {"big"}
    used = Counter()
    for p in plan.placements:
        used[p.host] += p.resources["cpus"]
    assert max(used.values()) <= 4000


def test_gang_respects_dynamic_constraints_and_undoes_their_counts():
    racks = [Host(f"h{i}", {"cpus": 8000, "mem": 16 * GiB}, attributes={"rack": f"r{i % 2}"})
             for i in range(4)]  # fmt: skip
    unique = (Constraint("unique_host"),)
    too_many = TaskGroup("a", "t", "hpc", 5, ONE, unique, gang=True, order=0)
    fits = TaskGroup("b", "t", "hpc", 4, ONE, unique, gang=True, order=1)
    plan = run(racks, [too_many, fits])
    assert [u.job for u in plan.unplaced] == ["a"] * 5
    assert 'constraint "unique host" filtered on 4 hosts' in plan.unplaced[0].reason
    assert sorted(p.host for p in plan.placements) == ["h0", "h1", "h2", "h3"]
    spread = TaskGroup("c", "t", "hpc", 4, ONE, (Constraint("spread", "rack"),), gang=True)
    plan = run(racks, [spread])
    assert Counter(racks[int(p.host[1])].attributes["rack"] for p in plan.placements) == {
        "r0": 2,
        "r1": 2,
    }


def test_gang_within_quota_or_not_at_all():
    quota = [Framework("hpc", quota={"cpus": 5000})]
    plan = run(hosts(3), [TaskGroup("a", "t", "hpc", 6, ONE, gang=True)], quota)
    assert plan.placements == []
    assert "quota of framework hpc reached" in plan.unplaced[0].reason
    plan = run(hosts(3), [TaskGroup("a", "t", "hpc", 5, ONE, gang=True)], quota)
    assert len(plan.placements) == 5


def test_gang_shares_stay_fair_after_the_gang():
    """The gang is one round; DRF then offers to the framework furthest below its share."""
    groups = [
        TaskGroup("mpi", "rank", "hpc", 6, ONE, gang=True),
        TaskGroup("web", "srv", "web", 20, ONE),
    ]
    plan = run(hosts(3), groups)
    assert Counter(p.framework for p in plan.placements) == {"hpc": 6, "web": 6}
    assert plan.shares == pytest.approx({"hpc": 0.5, "web": 0.5})


class Partial(Scheduler):
    """A scheduler that asks for a gang one host cannot give: nothing of it may be taken."""

    framework = "x"

    def __init__(self):
        self.asked = False
        self.reasons = []

    def wants_offers(self):
        return not self.asked

    def resource_offers(self, offers):
        self.asked = True
        return GangLaunch(tuple(Launch("h0", "j", "t", i, ONE) for i in range(5)))

    def rejected(self, launch, reason):
        self.reasons.append(reason)


def test_a_custom_gang_launch_that_does_not_fit_takes_nothing():
    scheduler = Partial()
    follower = JobScheduler("y", [TaskGroup("j", "t", "y", 4, ONE)])
    plan = allocate(hosts(1), [], [scheduler, follower])
    assert scheduler.reasons == ["gang of 5: t[4]: host h0 cannot give {'cpus': 1000, "
                                 "'mem': 1073741824}"]  # fmt: skip
    assert [p.framework for p in plan.placements] == ["y"] * 4


class ChangesItsMind(Scheduler):
    """Asks for hosts for a gang, then declines (or launches one task): the trial is undone."""

    framework = "x"

    def __init__(self, then):
        self.then = then
        self.done = False
        self.picked = None

    def wants_offers(self):
        return not self.done

    def resource_offers(self, offers):
        self.done = True
        group = TaskGroup("j", "t", "x", 4, ONE, gang=True)
        self.picked = offers.pick_all(group, 4)
        if self.then == "decline":
            return Decline()
        return Launch("h0", "j", "t", 0, ONE)


@pytest.mark.parametrize("then", ["decline", "launch one"])
def test_a_gang_trial_not_launched_takes_nothing(then):
    scheduler = ChangesItsMind(then)
    follower = JobScheduler("y", [TaskGroup("k", "t", "y", 8, ONE)])
    plan = allocate(hosts(2), [], [scheduler, follower])
    assert scheduler.picked == ["h0", "h0", "h0", "h0"]
    placed = Counter(p.framework for p in plan.placements)
    assert placed == ({"y": 8} if then == "decline" else {"x": 1, "y": 7})


def test_a_job_file_says_gang_and_the_group_carries_it():
    job = job_from_data({"job": "mpi", "tasks": [{"name": "rank", "command": "x", "count": 4,
                                                  "gang": True}]})  # fmt: skip
    assert [g.gang for g in job.groups()] == [True]
    plain = job_from_data({"job": "a", "tasks": [{"name": "t", "command": "x"}]})
    assert "gang" not in plain.model_dump()["tasks"][0]
    with pytest.raises(UsageError, match="gang"):
        job_from_data({"job": "a", "tasks": [{"name": "t", "command": "x", "gang": "often"}]})


@settings(max_examples=300, deadline=None)
@given(snapshots(), st.data())
def test_property_gangs_are_all_or_nothing_and_hosts_never_over(snapshot, data):
    hosts, frameworks, groups = snapshot
    groups = [replace(g, gang=data.draw(st.booleans())) for g in groups]
    by_fw: dict[str, list[TaskGroup]] = {}
    for g in groups:
        by_fw.setdefault(g.framework, []).append(g)
    plan = allocate(hosts, frameworks, [JobScheduler(fw, gs) for fw, gs in by_fw.items()])
    placed = Counter(p.job for p in plan.placements)
    for g in groups:
        if g.gang:
            assert placed[g.job] in (0, g.count), g
            assert all("gang of" in u.reason for u in plan.unplaced if u.job == g.job)
    assert placed.total() + len(plan.unplaced) == sum(g.count for g in groups)
    used = {h.name: Counter() for h in hosts}
    ports = {h.name: [] for h in hosts}
    held = Counter()
    for p in plan.placements:
        used[p.host].update({k: v for k, v in p.resources.items() if k != "ports"})
        ports[p.host] += p.ports
        held[p.framework] += p.resources["cpus"]
    for h in hosts:
        for d, amount in used[h.name].items():
            assert amount <= h.capacity[d]
        assert len(ports[h.name]) == len(set(ports[h.name]))
    for fw in frameworks:
        if fw.quota is not None:
            assert held[fw.name] <= fw.quota["cpus"]
    per_host = Counter((p.job, p.host) for p in plan.placements)
    for g in groups:
        if Constraint("unique_host") in g.constraints:
            assert all(n <= 1 for (job, _), n in per_host.items() if job == g.job)
