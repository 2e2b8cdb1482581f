"""The cycle's fast paths decide the same plans as the general offer rounds (hypothesis).

The cycle decides the rounds of the built-in JobScheduler itself (the host its next instance
goes to, what it takes), without building offers or launches; a scheduler that decides its own
rounds gets offers. `Rounds`, a JobScheduler whose resource_offers() is its own (the same), is
therefore offered its rounds, the straightforward path: over random clusters and workloads (weights,
quotas, reservations, filters, constraints, ports, pinned cores, gangs, caps, priorities,
instances already running, guarantees and borrowed tasks, a kept cluster state) both must give
the same placements, unplaced tasks and reasons, shares, filters and revocations.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from meso_agentless.core.allocator import allocate
from meso_agentless.core.cluster import ClusterState
from meso_agentless.core.model import (
    Filter,
    Framework,
    Host,
    RevocableTask,
    TaskGroup,
)
from meso_agentless.core.offers import JobScheduler
from meso_agentless.core.pinning import PinRequest, Topology
from tests.unit.test_allocator_properties import CONSTRAINTS, GiB

FRAMEWORKS = ("fa", "fb", "fc", "fd")
TOPOLOGY = Topology({0: (0, 1), 1: (2, 3)}, {0: 2 * GiB, 1: 2 * GiB}, {"gpu": ("/dev/g0",)})


class Rounds(JobScheduler):
    """The built-in scheduler, offered its rounds like any other scheduler."""

    def resource_offers(self, offers):
        return super().resource_offers(offers)


@st.composite
def workloads(draw):
    hosts = []
    for i in range(draw(st.integers(0, 6))):
        cpus = draw(st.integers(2, 16)) * 500
        mem = draw(st.integers(1, 8)) * GiB
        used = {"cpus": draw(st.integers(0, 2)) * 500}
        attributes = {"rack": f"r{i % 3}"} if draw(st.booleans()) else {}
        reservations = {}
        if draw(st.integers(0, 3)) == 0:
            reservations[draw(st.sampled_from(FRAMEWORKS))] = {"cpus": 1000, "mem": GiB}
        nports = draw(st.integers(0, 4))
        ports = ((31000, 31000 + nports - 1),) if nports else ()
        topology = TOPOLOGY if draw(st.integers(0, 3)) == 0 else None
        capacity = {"cpus": cpus, "mem": mem}
        if draw(st.integers(0, 5)) == 0:
            capacity["gpus"] = 2
        hosts.append(Host(f"h{i}", capacity, ports, attributes, reservations, used,
                          topology=topology))  # fmt: skip
    guarded = draw(st.integers(0, 2)) == 0
    frameworks = []
    for name in FRAMEWORKS:
        quota = {"cpus": draw(st.integers(1, 12)) * 500} if draw(st.integers(0, 2)) == 0 else None
        allocated = {"cpus": draw(st.integers(0, 4)) * 500}
        guarantee = None
        if guarded and draw(st.booleans()):
            guarantee = {"cpus": draw(st.integers(1, 8)) * 1000}
        revocable = {"cpus": allocated["cpus"]} if guarded and draw(st.booleans()) else {}
        frameworks.append(Framework(name, draw(st.sampled_from([0.5, 1.0, 2.0])), quota,
                                    allocated, guarantee, revocable))  # fmt: skip
    groups = []
    for n in range(draw(st.integers(1, 10))):
        resources = {"cpus": draw(st.integers(1, 8)) * 250}
        resources["mem"] = draw(st.integers(0, 4)) * GiB // 4
        if draw(st.integers(0, 3)) == 0:
            resources["ports"] = draw(st.integers(1, 2))
        if draw(st.integers(0, 7)) == 0:
            resources["gpus"] = 1
        count = draw(st.integers(1, 6))
        job = f"job{draw(st.integers(0, 4))}"
        groups.append(
            TaskGroup(
                job,
                f"t{n}",
                draw(st.sampled_from(FRAMEWORKS)),
                count,
                resources,
                tuple(draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2, unique=True))),
                draw(st.sampled_from(["binpack", "spread"])),
                first_index=draw(st.integers(0, 2)),
                running={"h0": 1} if draw(st.integers(0, 4)) == 0 else {},
                order=draw(st.integers(0, 3)),
                gang=draw(st.integers(0, 4)) == 0,
                priority=draw(st.sampled_from([20, 50, 80])),
                revocable=draw(st.integers(0, 3)) != 0,
                max_running=draw(st.sampled_from([None, None, 1, 3])),
                running_count=draw(st.integers(0, 1)),
                job_max_running=draw(st.sampled_from([None, None, 2, 5])),
                pin=draw(st.sampled_from([None, None, None, PinRequest(1), PinRequest(2, True)])),
            )
        )
    filters = []
    if hosts and draw(st.booleans()):
        host = draw(st.sampled_from([None, *[h.name for h in hosts]]))
        filters.append(Filter(draw(st.sampled_from(FRAMEWORKS)), host, 10.0))
    borrowed = []
    if guarded and hosts:
        borrowed.append(RevocableTask("old", "t", 0, "fd", hosts[0].name, {"cpus": 500}, 1.0))
    return hosts, frameworks, groups, filters, borrowed


def plan(cls, hosts, frameworks, groups, filters, borrowed):
    by_framework: dict[str, list[TaskGroup]] = {}
    for group in groups:
        by_framework.setdefault(group.framework, []).append(group)
    schedulers = [cls(fw, gs) for fw, gs in sorted(by_framework.items())]
    return allocate(hosts, frameworks, schedulers, filters=filters, revocable=borrowed)


@settings(max_examples=400, deadline=None)
@given(workloads(), st.booleans())
def test_the_fast_path_plans_as_the_offer_rounds(workload, kept):
    hosts, *rest = workload
    fast = plan(JobScheduler, ClusterState(hosts) if kept else hosts, *rest)
    rounds = plan(Rounds, hosts, *rest)
    assert fast == rounds
    assert fast.placements or fast.unplaced  # every workload asks for something


def test_one_framework_alone_is_placed_in_one_run_and_others_in_turn():
    """A framework below the others' shares places several tasks in a row; then DRF turns."""
    hosts = [Host(f"h{i}", {"cpus": 8000, "mem": 8 * GiB}) for i in range(2)]
    frameworks = [Framework("fa"), Framework("fb", allocated={"cpus": 4000})]
    groups = [TaskGroup("a", "t", "fa", 6, {"cpus": 1000, "mem": GiB}),
              TaskGroup("b", "t", "fb", 4, {"cpus": 1000, "mem": GiB})]  # fmt: skip
    fast = plan(JobScheduler, hosts, frameworks, groups, [], [])
    assert fast == plan(Rounds, hosts, frameworks, groups, [], [])
    order = [p.framework for p in fast.placements]
    assert order == ["fa"] * 5 + ["fb", "fa", "fb", "fb", "fb"]


def test_below_its_guarantee_a_task_that_would_borrow_waits_for_its_turn_by_drf():
    """Nothing is left outside the guarantees: fa's task would go beyond its own guarantee, so
    it is not placed ahead of fb; by share alone fb goes first, then fa borrows."""
    hosts = [Host("h0", {"cpus": 4000, "mem": 4 * GiB})]
    frameworks = [
        Framework("fa", 0.5, allocated={"cpus": 1500}, guarantee={"cpus": 2000}),
        Framework("fb", allocated={"cpus": 2000}),
    ]
    groups = [TaskGroup("a", "t", "fa", 1, {"cpus": 1000}),
              TaskGroup("b", "t", "fb", 1, {"cpus": 250})]  # fmt: skip
    fast = plan(JobScheduler, hosts, frameworks, groups, [], [])
    assert fast == plan(Rounds, hosts, frameworks, groups, [], [])
    assert [(p.framework, p.revocable) for p in fast.placements] == [("fb", True), ("fa", True)]
