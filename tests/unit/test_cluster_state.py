"""A ClusterState kept between cycles and fed events equals one built from scratch (hypothesis).

A reference model holds the hosts and the tasks running on them; random sequences of events
(tasks placed and ended, new samples, hosts added, removed or drained, frameworks added, a new
kind of resource, attributes that change) go both to the model and to a kept ClusterState. At
any point, a cycle on the kept state must give the same plan as a cycle on hosts built from the
model, and leave the state as it was: equal, host by host and in binpack order, to a state
built from scratch.
"""

from dataclasses import dataclass, replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meso_agentless.core.allocator import allocate
from meso_agentless.core.cluster import ClusterState
from meso_agentless.core.model import Constraint, Framework, Host, TaskGroup
from meso_agentless.core.offers import JobScheduler

GiB = 2**30
CONSTRAINTS = [
    Constraint("ne", "rack", "r1"),
    Constraint("eq", "rack", "r0"),
    Constraint("unique_host"),
    Constraint("spread", "rack"),
]


@dataclass(frozen=True)
class Task:
    host: str
    resources: dict
    ports: tuple[int, ...] = ()


capacities = st.fixed_dictionaries(
    {"cpus": st.integers(1, 16).map(lambda n: n * 1000), "mem": st.integers(1, 8).map(GiB.__mul__)}
)
racks = st.dictionaries(st.just("rack"), st.sampled_from(["r0", "r1", "r2"]), max_size=1)
shapes = st.fixed_dictionaries(
    {"cpus": st.integers(1, 8).map(lambda n: n * 250), "mem": st.integers(1, 8).map(GiB.__mul__)},
    optional={"ports": st.integers(1, 2)},
)


class KeptEqualsScratch(RuleBasedStateMachine):
    """Events to a kept ClusterState and to a reference model, compared in every cycle."""

    @initialize(count=st.integers(0, 4), data=st.data())
    def start(self, count, data):
        self.base: dict[str, Host] = {}  # host without what its tasks hold
        self.tasks: list[Task] = []
        self.frameworks = [Framework("fa"), Framework("fb", weight=2.0)]
        self.made = 0
        for _ in range(count):
            self._new_host(data)
        self.state = ClusterState(self.hosts())

    def _new_host(self, data) -> Host:
        name = f"h{self.made}"
        self.made += 1
        reservations = {"fa": {"cpus": 1000}} if data.draw(st.booleans()) else {}
        host = Host(name, data.draw(capacities), ((31000, 31003),), data.draw(racks), reservations)
        self.base[name] = host
        return host

    def host(self, name: str) -> Host:
        """What a controller would build from scratch: the host and what its tasks hold."""
        used: dict[str, int] = {}
        ports: set[int] = set()
        for task in self.tasks:
            if task.host == name:
                for resource, amount in task.resources.items():
                    used[resource] = used.get(resource, 0) + amount
                ports.update(task.ports)
        return replace(self.base[name], used=used, used_ports=frozenset(ports))

    def hosts(self) -> list[Host]:
        return [self.host(name) for name in self.base]

    @precondition(lambda self: self.base)
    @rule(data=st.data(), count=st.integers(1, 3))
    def place(self, data, count):
        placed = []
        for _ in range(count):
            name = data.draw(st.sampled_from(sorted(self.base)))
            held = self.host(name).used_ports | {
                p for t in placed if t.host == name for p in t.ports
            }
            free = [p for p in range(31000, 31004) if p not in held]
            ports = tuple(data.draw(st.lists(st.sampled_from(free), max_size=1))) if free else ()
            placed.append(Task(name, {"cpus": data.draw(st.integers(1, 4)) * 500}, ports))
        self.tasks += placed
        self.state.place(placed)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def end(self, data):
        ended = data.draw(st.lists(st.sampled_from(self.tasks), min_size=1, max_size=3,
                                   unique_by=id))  # fmt: skip
        self.tasks = [t for t in self.tasks if not any(t is e for e in ended)]
        self.state.release(ended)

    @precondition(lambda self: self.base)
    @rule(data=st.data(), gpus=st.booleans())
    def sample(self, data, gpus):
        """A new sample: the capacity (maybe with a resource no host had) or the rack moved."""
        name = data.draw(st.sampled_from(sorted(self.base)))
        capacity = data.draw(capacities)
        if gpus:
            capacity["gpus"] = 2
        self.base[name] = replace(self.base[name], capacity=capacity, attributes=data.draw(racks))
        self.state.put(self.host(name))

    @rule(data=st.data())
    def add_host(self, data):
        self.state.put(self.host(self._new_host(data).name))

    @precondition(lambda self: self.base)
    @rule(data=st.data())
    def remove_or_drain(self, data):
        name = data.draw(st.sampled_from(sorted(self.base)))
        del self.base[name]
        self.tasks = [t for t in self.tasks if t.host != name]
        self.state.remove(name)

    @rule(weight=st.sampled_from([0.5, 1.0, 3.0]))
    def add_framework(self, weight):
        self.frameworks.append(Framework(f"f{len(self.frameworks)}", weight=weight))

    @rule(data=st.data())
    def cycle(self, data):
        groups = []
        for n in range(data.draw(st.integers(1, 5))):
            framework = data.draw(st.sampled_from(self.frameworks)).name
            constraints = tuple(data.draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=1)))
            groups.append(TaskGroup(f"job{n}", "t", framework, data.draw(st.integers(1, 4)),
                                    data.draw(shapes), constraints,
                                    data.draw(st.sampled_from(["binpack", "spread"]))))  # fmt: skip
        kept = allocate(self.state, self.frameworks, schedulers(groups))
        scratch = allocate(self.hosts(), self.frameworks, schedulers(groups))
        assert kept == scratch

    @invariant()
    def same_as_scratch(self):
        if not hasattr(self, "state"):
            return
        fresh = ClusterState(self.hosts())
        assert self.state.hosts() == fresh.hosts()
        assert self.state.dims == fresh.dims
        assert self.state.total == fresh.total
        assert self.state.largest == fresh.largest
        assert self.state.reserving == fresh.reserving
        assert [look(s) for s in self.state.binpack_order] == [look(s) for s in fresh.binpack_order]


def schedulers(groups: list[TaskGroup]) -> list[JobScheduler]:
    by_framework: dict[str, list[TaskGroup]] = {}
    for group in groups:
        by_framework.setdefault(group.framework, []).append(group)
    return [JobScheduler(fw, gs) for fw, gs in sorted(by_framework.items())]


def look(state) -> tuple:
    """A host's state as a cycle starts from it."""
    return (
        state.name,
        state.cap,
        state.free,
        state.rfree,
        state.ports,
        state.nports,
        state.current_util(),
    )


KeptEqualsScratch.TestCase.settings = settings(max_examples=60, stateful_step_count=25,
                                               deadline=None)  # fmt: skip
test_kept_state_equals_scratch = KeptEqualsScratch.TestCase


def test_a_cycle_that_fails_half_way_still_gives_the_kept_hosts_back():
    hosts = [Host(f"h{i}", {"cpus": 4000, "mem": 4 * GiB}, ((31000, 31003),)) for i in range(3)]
    state = ClusterState(hosts)

    class Crashes(JobScheduler):
        def launched(self, placement):
            super().launched(placement)
            if placement.index == 2:
                raise RuntimeError("the scheduler broke")

    group = TaskGroup("j", "t", "fa", 5, {"cpus": 1000, "mem": GiB, "ports": 1})
    try:
        allocate(state, [Framework("fa")], [Crashes("fa", [group])])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the scheduler's error was swallowed")
    fresh = ClusterState(hosts)
    assert [look(s) for s in state.binpack_order] == [look(s) for s in fresh.binpack_order]
    assert allocate(state, [Framework("fa")], schedulers([group])) == allocate(
        hosts, [Framework("fa")], schedulers([group])
    )


def test_tasks_on_a_host_no_longer_held_change_nothing():
    state = ClusterState([Host("h0", {"cpus": 4000, "mem": GiB})])
    state.remove("h0")
    state.place([Task("h0", {"cpus": 1000})])
    state.release([Task("h0", {"cpus": 1000})])
    assert state.hosts() == [] and state.total == {}
    state.put(Host("h0", {"cpus": 4000, "mem": GiB}, used={"cpus": 1000}))
    state.release([Task("h0", {"cpus": 1000})])
    assert state.hosts() == [Host("h0", {"cpus": 4000, "mem": GiB})]
