"""The allocation cycle: DRF golden cases, weights, quotas, reservations, constraints, ports,
strategies, offers to custom schedulers, and the explanations of what was not placed."""

from collections import Counter

import pytest

from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Constraint, Filter, Framework, Host, TaskGroup
from meso_agentless.core.offers import Decline, JobScheduler, Launch, Scheduler, revive

GiB = 2**30


def run(hosts, groups, frameworks=(), **kwargs):
    by_fw: dict[str, list[TaskGroup]] = {}
    for g in groups:
        by_fw.setdefault(g.framework, []).append(g)
    schedulers = [JobScheduler(fw, gs) for fw, gs in by_fw.items()]
    return allocate(hosts, frameworks, schedulers, **kwargs)


def per(plan, key):
    return Counter(getattr(p, key) for p in plan.placements)


def test_drf_paper_example_on_one_host():
    """Ghodsi et al. 2011, section 4: 9 CPUs and 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPUs,
    1 GB>. Worked by hand: A 0 -> 2/9 (mem), B 0 -> 1/3 (cpu), A -> 4/9, B -> 2/3, A -> 2/3;
    then 9 CPUs and 14 GB are used and neither next task fits. A runs 3 tasks, B 2,
    both at a dominant share of 2/3."""
    hosts = [Host("big", {"cpus": 9000, "mem": 18 * GiB})]
    a = TaskGroup("ja", "t", "A", 10, {"cpus": 1000, "mem": 4 * GiB})
    b = TaskGroup("jb", "t", "B", 10, {"cpus": 3000, "mem": 1 * GiB})
    plan = run(hosts, [a, b])
    assert [p.framework for p in plan.placements] == ["A", "B", "A", "B", "A"]
    assert per(plan, "framework") == {"A": 3, "B": 2}
    assert plan.shares == pytest.approx({"A": 2 / 3, "B": 2 / 3})
    assert len(plan.unplaced) == 15
    assert plan.unplaced[0].reason == 'no host fits: dimension "cpus" exhausted on 1 host'


def test_weights_split_one_host_in_their_ratio():
    hosts = [Host("big", {"cpus": 12_000, "mem": 12 * GiB})]
    groups = [
        TaskGroup("j1", "t", "gold", 100, {"cpus": 1000, "mem": 1 * GiB}),
        TaskGroup("j2", "t", "bronze", 100, {"cpus": 1000, "mem": 1 * GiB}),
    ]
    plan = run(hosts, groups, [Framework("gold", weight=2.0), Framework("bronze")])
    assert per(plan, "framework") == {"gold": 8, "bronze": 4}
    assert plan.shares == pytest.approx({"gold": 8 / 12 / 2, "bronze": 4 / 12})


def test_existing_allocations_count_towards_shares():
    hosts = [Host("big", {"cpus": 10_000, "mem": 10 * GiB}, used={"cpus": 4000, "mem": 4 * GiB})]
    groups = [
        TaskGroup("j1", "t", "old", 100, {"cpus": 1000, "mem": 1 * GiB}),
        TaskGroup("j2", "t", "new", 100, {"cpus": 1000, "mem": 1 * GiB}),
    ]
    frameworks = [Framework("old", allocated={"cpus": 4000, "mem": 4 * GiB}), Framework("new")]
    plan = run(hosts, groups, frameworks)
    assert per(plan, "framework") == {"new": 5, "old": 1}  # new catches up to 5, then 5 vs 5


def test_no_framework_hoards_a_large_host():
    hosts = [Host("huge", {"cpus": 64_000, "mem": 256 * GiB})]
    groups = [
        TaskGroup(f"job{i}", "t", f"fw{i}", 1000, {"cpus": 1000, "mem": 1 * GiB}) for i in range(4)
    ]
    plan = run(hosts, groups)
    assert per(plan, "framework") == {f"fw{i}": 16 for i in range(4)}


def test_quota_caps_a_framework_and_is_named():
    hosts = [Host("h", {"cpus": 8000, "mem": 8 * GiB})]
    groups = [TaskGroup("j", "t", "capped", 8, {"cpus": 1000, "mem": 1 * GiB})]
    plan = run(hosts, groups, [Framework("capped", quota={"cpus": 3000})])
    assert len(plan.placements) == 3
    assert len(plan.unplaced) == 5
    assert plan.unplaced[0].reason == (
        "quota of framework capped reached: cpus 3 of 3 in use, the task needs 1"
    )


def test_reservations_are_offered_only_to_their_framework():
    hosts = [
        Host("r1", {"cpus": 8000, "mem": 8 * GiB}, reservations={"analytics": {"cpus": 6000}}),
    ]
    web = TaskGroup("web", "t", "web", 8, {"cpus": 1000, "mem": 256 * 2**20})
    plan = run(hosts, [web])
    assert len(plan.placements) == 2  # only the 2 unreserved cpus
    assert plan.unplaced[0].reason == 'no host fits: dimension "cpus" exhausted on 1 host'
    analytics = TaskGroup("an", "t", "analytics", 8, {"cpus": 1000, "mem": 256 * 2**20})
    plan = run(hosts, [web, analytics])
    # analytics draws on its reservation first, so the 2 unreserved cpus go to web
    assert per(plan, "framework") == {"analytics": 6, "web": 2}


def test_reservation_already_in_use_is_accounted():
    host = Host(
        "r1",
        {"cpus": 8000, "mem": 8 * GiB},
        reservations={"analytics": {"cpus": 4000}},
        used={"cpus": 6000},
        used_reserved={"analytics": {"cpus": 4000}},
    )
    plan = run([host], [TaskGroup("web", "t", "web", 4, {"cpus": 1000})])
    assert len(plan.placements) == 2


def cluster(n=6, racks=3, cpus=4000):
    return [
        Host(f"h{i}", {"cpus": cpus, "mem": 8 * GiB}, attributes={"rack": f"r{i % racks}"})
        for i in range(1, n + 1)
    ]


def test_attribute_constraints_eq_ne_regex():
    hosts = cluster()
    eq = TaskGroup("j", "eq", "f", 2, {"cpus": 100}, (Constraint("eq", "rack", "r1"),))
    plan = run(hosts, [eq])
    assert {p.host for p in plan.placements} <= {"h1", "h4"}
    ne = TaskGroup("j", "ne", "f", 30, {"cpus": 1000}, (Constraint("ne", "rack", "r1"),))
    plan = run(hosts, [ne])
    assert "h1" not in {p.host for p in plan.placements}
    assert len(plan.placements) == 16
    rx = TaskGroup("j", "rx", "f", 3, {"cpus": 100}, (Constraint("regex", "hostname", "h[23]"),))
    plan = run(hosts, [rx])
    assert {p.host for p in plan.placements} <= {"h2", "h3"}


def test_unique_host_and_max_per():
    hosts = cluster()
    unique = TaskGroup("j", "u", "f", 8, {"cpus": 100}, (Constraint("unique_host"),))
    plan = run(hosts, [unique])
    assert len({p.host for p in plan.placements}) == 6 == len(plan.placements)
    assert plan.unplaced[0].reason == 'no host fits: constraint "unique host" filtered on 6 hosts'
    per_rack = TaskGroup("j", "m", "f", 8, {"cpus": 100}, (Constraint("max_per", "rack", 1),))
    plan = run(hosts, [per_rack])
    racks = Counter(p.host for p in plan.placements)
    assert len(plan.placements) == 3 and len(racks) == 3


def test_running_instances_count_for_dynamic_constraints():
    hosts = cluster(n=3)
    group = TaskGroup(
        "j", "u", "f", 2, {"cpus": 100}, (Constraint("unique_host"),), first_index=1,
        running={"h1": 1},
    )  # fmt: skip
    plan = run(hosts, [group])
    assert sorted((p.index, p.host) for p in plan.placements) == [(1, "h2"), (2, "h3")]


def test_spread_over_an_attribute_is_even():
    hosts = cluster(n=6, racks=3, cpus=16_000)
    group = TaskGroup("j", "s", "f", 9, {"cpus": 100}, (Constraint("spread", "rack"),))
    plan = run(hosts, [group])
    by_rack = Counter(hosts[int(p.host[1:]) - 1].attributes["rack"] for p in plan.placements)
    assert by_rack == {"r0": 3, "r1": 3, "r2": 3}


def test_binpack_fills_fewest_hosts_and_spread_uses_all():
    hosts = cluster(n=4, cpus=4000)
    pack = TaskGroup("j", "p", "f", 4, {"cpus": 1000, "mem": GiB})
    assert per(run(hosts, [pack]), "host") == {"h1": 4}
    spread = TaskGroup("j", "s", "f", 4, {"cpus": 1000, "mem": GiB}, strategy="spread")
    assert per(run(hosts, [spread]), "host") == {"h1": 1, "h2": 1, "h3": 1, "h4": 1}


def test_binpack_prefers_hosts_already_in_use():
    hosts = [
        Host("a", {"cpus": 4000, "mem": 4 * GiB}),
        Host("b", {"cpus": 4000, "mem": 4 * GiB}, used={"cpus": 2000}),
    ]
    plan = run(hosts, [TaskGroup("j", "t", "f", 2, {"cpus": 1000})])
    assert per(plan, "host") == {"b": 2}


def test_ports_are_distinct_and_from_the_hosts_range():
    hosts = [Host("h1", {"cpus": 8000}, ports=((31000, 31004),), used_ports=frozenset({31001}))]
    plan = run(hosts, [TaskGroup("web", "t", "f", 3, {"cpus": 100, "ports": 2})])
    assert [p.ports for p in plan.placements] == [(31000, 31002), (31003, 31004)]
    assert plan.unplaced[0].reason == 'no host fits: dimension "ports" exhausted on 1 host'


def test_explanations_name_every_cause_with_host_counts():
    hosts = [
        *cluster(n=3),
        Host("small", {"cpus": 500, "mem": 8 * GiB}, attributes={"rack": "r9"}),
        Host("nomem", {"cpus": 8000, "mem": GiB // 2}, attributes={"rack": "r9"}),
    ]
    group = TaskGroup(
        "big", "t", "f", 1, {"cpus": 1000, "mem": GiB}, (Constraint("ne", "rack", "r1"),)
    )
    too_big = TaskGroup("huge", "t", "f", 1, {"cpus": 100_000})
    plan = run([h for h in hosts if h.name in ("h1", "small", "nomem")], [group, too_big])
    reasons = {u.job: u.reason for u in plan.unplaced}
    assert reasons["big"] == (
        'no host fits: constraint "rack != r1" filtered on 1 host; '
        'dimension "cpus" exhausted on 1 host; dimension "mem" exhausted on 1 host'
    )
    assert reasons["huge"] == 'no host fits: dimension "cpus" exhausted on 3 hosts'
    gpu = TaskGroup("gpu", "t", "f", 1, {"cpus": 100, "gpus": 1})
    assert run(hosts, [gpu]).unplaced[0].reason == (
        'no host fits: dimension "gpus" exhausted on 5 hosts'
    )
    assert run([], [gpu]).unplaced[0].reason == "no hosts in the cluster"


class PickMostMemory(Scheduler):
    """A framework's own scheduler: it looks at every offer and takes the roomiest."""

    def __init__(self, wanted: int, refuse: tuple[str, ...] = ()):
        self.framework = "custom"
        self.wanted = wanted
        self.refuse = refuse
        self.seen_offers: list[int] = []

    def wants_offers(self) -> bool:
        return self.wanted > 0

    def resource_offers(self, offers):
        usable = [o for o in offers if o.host not in self.refuse]
        self.seen_offers.append(len(usable))
        if not usable:
            return Decline()
        best = max(usable, key=lambda o: (o.resources.get("mem", 0), o.host))
        if best.resources.get("mem", 0) < GiB:
            return Decline(refuse_seconds=30, hosts=self.refuse or None)
        return Launch(best.host, "custom-job", "t", 100 - self.wanted, {"cpus": 100, "mem": GiB})

    def launched(self, placement):
        self.wanted -= 1


def test_custom_scheduler_sees_offers_and_shares_fairly_with_jobs():
    hosts = [Host("a", {"cpus": 8000, "mem": 4 * GiB}), Host("b", {"cpus": 8000, "mem": 6 * GiB})]
    custom = PickMostMemory(wanted=20)
    jobs = JobScheduler("batch", [TaskGroup("j", "t", "batch", 20, {"cpus": 100, "mem": GiB})])
    plan = allocate(hosts, [], [custom, jobs])
    assert per(plan, "framework") == {"custom": 5, "batch": 5}
    assert custom.seen_offers[0] == 2


def test_decline_with_refusal_becomes_a_filter_for_later_cycles():
    hosts = [Host("a", {"cpus": 8000, "mem": 4 * GiB}), Host("b", {"cpus": 8000, "mem": 4 * GiB})]
    custom = PickMostMemory(wanted=100, refuse=("a",))
    plan = allocate(hosts, [], [custom], now=100.0)
    assert {p.host for p in plan.placements} == {"b"}
    assert Filter("custom", "a", 130.0) in plan.filters
    # the next cycle honours the filter until it expires; offers then skip host a
    jobs = JobScheduler("custom", [TaskGroup("j", "t", "custom", 2, {"cpus": 100, "mem": GiB})])
    later = allocate(hosts, [], [jobs], now=110.0, filters=plan.filters)
    assert {p.host for p in later.placements} == {"b"}
    jobs = JobScheduler("custom", [TaskGroup("j", "t", "custom", 2, {"cpus": 100, "mem": GiB})])
    expired = allocate(hosts, [], [jobs], now=131.0, filters=plan.filters)
    assert {p.host for p in expired.placements} == {"a"}
    assert expired.filters == ()
    # revive forgets the refusals at once
    jobs = JobScheduler("custom", [TaskGroup("j", "t", "custom", 2, {"cpus": 100, "mem": GiB})])
    revived = allocate(hosts, [], [jobs], now=110.0, filters=revive(plan.filters, "custom"))
    assert {p.host for p in revived.placements} == {"a"}


def test_suppressed_frameworks_get_no_offers_and_bad_launches_do_not_loop():
    class Silent(Scheduler):
        framework = "silent"

        def wants_offers(self):
            return False

        def resource_offers(self, offers):
            raise AssertionError("offered while suppressed")

    class Broken(Scheduler):
        framework = "broken"

        def __init__(self):
            self.rejected_reasons: list[str] = []

        def resource_offers(self, offers):
            return Launch("nowhere", "j", "t", 0, {"cpus": 100})

        def rejected(self, launch, reason):
            self.rejected_reasons.append(reason)

    broken = Broken()
    plan = allocate([Host("a", {"cpus": 1000})], [], [Silent(), broken])
    assert plan.placements == []
    assert broken.rejected_reasons == ["unknown host 'nowhere'"] * 3


def test_spread_sees_what_earlier_groups_placed_in_the_same_cycle():
    hosts = [Host("h1", {"cpus": 4000}), Host("h2", {"cpus": 4000})]
    packed = TaskGroup("a", "t", "f", 2, {"cpus": 1000}, order=0)
    spread = TaskGroup("b", "t", "f", 1, {"cpus": 1000}, strategy="spread", order=1)
    plan = run(hosts, [packed, spread])
    assert [(p.job, p.host) for p in plan.placements] == [("a", "h1"), ("a", "h1"), ("b", "h2")]
