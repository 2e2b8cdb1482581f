"""One allocation cycle: weighted DRF progressive filling, driven through offers.

`allocate()` takes a snapshot and returns a plan. The framework with the lowest weighted
dominant share is offered resources; its scheduler launches one task (or declines); shares are
updated; repeat until every framework declined or has nothing pending. That is DRF's
progressive filling at task granularity, and it reaches DRF's result even on one large host.

Finding a host is the hot path. Requests that are alike (same resources, same static
constraints, same strategy) share a lane: the candidate hosts in strategy order, where a host
that no longer fits is dropped for good. That is exact within a cycle, because free resources
only shrink and per-group instance counts only grow, and it makes a cycle cost
O(hosts log hosts + tasks x dimensions) rather than O(hosts x tasks). Given a ClusterState
kept between cycles instead of hosts (core/cluster.py), the O(hosts log hosts) part is paid only
for the hosts that changed since the last cycle.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from meso_agentless.core.cluster import ClusterState, StaticFilter
from meso_agentless.core.drf import DRFSorter
from meso_agentless.core.lanes import (
    Demand,
    GroupCounts,
    HostState,
    Lane,
    SpreadLane,
    static_allows,
    static_passing,
)
from meso_agentless.core.model import (
    HOSTNAME,
    Constraint,
    Filter,
    Framework,
    Host,
    Placement,
    Plan,
    RevocableTask,
    Revocation,
    TaskGroup,
)
from meso_agentless.core.offers import (
    Decline,
    GangLaunch,
    JobScheduler,
    Launch,
    Offer,
    Scheduler,
)
from meso_agentless.core.pinning import LACKS, HostPins, PinnedHosts, no_host_has
from meso_agentless.core.resources import (
    PORTS,
    format_quantity,
)
from meso_agentless.core.revocation import revoke_for_guarantees

MAX_REJECTIONS_IN_A_ROW = 3
# what pick() needs of a task group: its demand, its lane, whether its instances are counted
Kind = tuple[Demand | None, Lane | SpreadLane | None, bool]


class Cycle:
    """The mutable state of one allocation cycle, built from a snapshot."""

    def __init__(
        self,
        hosts: Iterable[Host] | ClusterState,
        frameworks: Mapping[str, Framework],
        now: float = 0.0,
        filters: Iterable[Filter] = (),
        extra_dims: Iterable[str] = (),
    ) -> None:
        kept = isinstance(hosts, ClusterState)
        cluster = hosts if kept else ClusterState(hosts, extra_dims)  # type: ignore[arg-type]
        self.dims, self.index = cluster.dims, cluster.index
        self.hosts = cluster.states
        self.cluster = cluster
        self.by_name: Mapping[str, HostState] = cluster.by_name
        self.pinned = PinnedHosts(cluster.host)  # what hosts with a topology have free to pin
        self.total = cluster.total
        self.largest = cluster.largest
        # hosts of a kept state as they were before this cycle took from them (put_back())
        self._before: dict[str, tuple] | None = {} if kept else None
        self.frameworks = frameworks
        self.reserving = cluster.reserving
        self.filters = [f for f in filters if f.until > now]
        self.refused: dict[str, set[str] | None] = {}  # framework -> hosts (None: all)
        for f in self.filters:
            if f.resources is None or f.host is None or not self._grown(f):
                self._refuse(f.framework, f.host)
        # binpack visits the fullest hosts first, so tasks pack onto fewer hosts
        self.binpack_order = cluster.binpack_order
        self._candidates: dict[tuple[Constraint, ...], list[HostState]] = {}
        self._lanes: dict[tuple, Lane | SpreadLane] = {}
        self._groups: dict[tuple[str, str, str], GroupCounts] = {}
        self._patterns: dict[str, re.Pattern] = {}
        self._explained: dict[tuple, str] = {}
        self._kinds: dict[tuple, Kind] = {}
        # each framework's last group asked about, and its kind (a scheduler places a group's
        # instances one after another; none of this outlives the group)
        self._group_lanes: dict[str, tuple[TaskGroup, *Kind]] = {}
        self._found: tuple[HostState, TaskGroup, Demand, bool] | None = None
        self.sorter: DRFSorter | None = None  # set by allocate()
        self._gang: tuple[TaskGroup, list[Placement], _Undo] | None = None  # a trial, held
        # what frameworks with a quota hold, kept up to date as tasks are placed
        self.quota_used: dict[str, dict[str, int]] = {
            name: dict(fw.allocated) for name, fw in frameworks.items() if fw.quota is not None
        }
        # guarantees (none: nothing is ever revocable, and none of this is kept)
        self.guarded = any(fw.guarantee for fw in frameworks.values())
        self.guarantees: dict[str, list[int]] = {}
        self.nonrevocable: dict[str, list[int]] = {}  # held by tasks that are not revocable
        self.pool: list[int] = []  # left outside every guarantee for non-revocable tasks
        if self.guarded:
            self.guard(self.total)

    # -- guarantees and borrowing --------------------------------------------------------------

    def guard(self, total: Mapping[str, int]) -> None:
        """Set up the accounts of borrowing against the cluster's `total`: what is outside every
        guarantee (the pool) less what frameworks hold non-revocably beyond their guarantee.
        Only frameworks with a guarantee have an account: all that the others hold non-revocably
        comes from the pool."""
        dims, index = self.dims, self.index
        pool = [total.get(d, 0) for d in dims]
        self.guarantees, self.nonrevocable = {}, {}
        for name, fw in self.frameworks.items():
            if fw.guarantee:
                guarantee = [fw.guarantee.get(d, 0) for d in dims]
                held = [fw.allocated.get(d, 0) - fw.revocable.get(d, 0) for d in dims]
                self.guarantees[name], self.nonrevocable[name] = guarantee, held
                for i, (g, h) in enumerate(zip(guarantee, held, strict=True)):
                    pool[i] -= h if h > g else g
                continue
            for d, amount in fw.allocated.items():
                i = index.get(d)
                if i is not None:
                    pool[i] -= amount
            for d, amount in fw.revocable.items():
                i = index.get(d)
                if i is not None:
                    pool[i] += amount
        self.pool = pool

    def borrowing(self, framework: str, nz: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
        """(dimension, amount) a task would take from others' unused guarantees, or None: it
        fits in the framework's own guarantee and the pool, and is not revocable."""
        if not self.guarded:
            return None
        pool = self.pool
        guarantee = self.guarantees.get(framework)
        if guarantee is None:
            for i, amount in nz:
                if amount > pool[i]:
                    return i, amount
            return None
        held = self.nonrevocable[framework]
        for i, amount in nz:
            h, g = held[i], guarantee[i]
            if h + amount <= g:
                continue
            beyond = amount if h >= g else h + amount - g
            if beyond > pool[i]:
                return i, beyond
        return None

    def borrows(self, framework: str, decision: Launch | GangLaunch | Decline) -> bool:
        """Whether a launch (or a whole gang) would take capacity guaranteed to others."""
        if isinstance(decision, Decline):
            return False
        launches = decision.launches if isinstance(decision, GangLaunch) else (decision,)
        total: dict[str, int] = {}
        for launch in launches:
            for name, amount in launch.resources.items():
                total[name] = total.get(name, 0) + amount
        demand = self.demand(total)
        return demand is not None and self.borrowing(framework, demand[0]) is not None

    def borrow_excess(self, group: TaskGroup) -> str | None:
        """Why a group that may not borrow (`revocable: false`) cannot be placed now, or None."""
        if group.revocable or not self.guarded:
            return None
        demand = self.demand(group.resources)
        found = None if demand is None else self.borrowing(group.framework, demand[0])
        if found is None:
            return None
        i, beyond = found
        name = self.dims[i]
        return (
            f"revocable: false, and only borrowed capacity is left: {name} "
            f"{format_quantity(name, max(0, self.pool[i]))} outside the guarantees, the task "
            f"needs {format_quantity(name, beyond)} of it"
        )

    def _hold(self, framework: str, nz: tuple[tuple[int, int], ...]) -> None:
        """Count a non-revocable task against the framework's guarantee, then the pool."""
        pool = self.pool
        guarantee = self.guarantees.get(framework)
        if guarantee is None:
            for i, amount in nz:
                pool[i] -= amount
            return
        held = self.nonrevocable[framework]
        for i, amount in nz:
            h, g = held[i], guarantee[i]
            if h + amount > g:
                pool[i] -= amount if h >= g else h + amount - g
            held[i] = h + amount

    # -- demand, quota, fit --------------------------------------------------------------------

    def demand(self, resources: Mapping[str, int]) -> Demand | None:
        """Resources as (dimension index, amount) pairs; None if a host resource is unknown."""
        nz = []
        for name, amount in resources.items():
            if name == PORTS or amount == 0:
                continue
            i = self.index.get(name)
            if i is None:
                return None
            nz.append((i, amount))
        return tuple(nz), int(resources.get(PORTS, 0))

    def quota_excess(self, framework: str, resources: Mapping[str, int]) -> str | None:
        """Why `resources` would take `framework` past its quota, or None."""
        held = self.quota_used.get(framework)
        if held is None:
            return None
        for name, limit in self.frameworks[framework].quota.items():  # type: ignore[union-attr]
            need = resources.get(name, 0)
            if need and held.get(name, 0) + need > limit:
                return (
                    f"quota of framework {framework} reached: {name} "
                    f"{format_quantity(name, held.get(name, 0))} of "
                    f"{format_quantity(name, limit)} in use, the task needs "
                    f"{format_quantity(name, need)}"
                )
        return None

    def fit_function(self, framework: str, demand: Demand) -> Callable[[HostState], bool]:
        nz, nports = demand
        refused = self.refused.get(framework, set())
        if refused is None:
            return lambda host: False
        if framework not in self.reserving and not refused:

            def fits(host: HostState) -> bool:
                free = host.free
                for i, amount in nz:
                    if free[i] < amount:
                        return False
                return host.nports >= nports

            return fits

        def fits_own(host: HostState) -> bool:
            if host.name in refused:
                return False
            own = host.rfree.get(framework) if host.rfree else None
            free = host.free
            for i, amount in nz:
                if free[i] + (own[i] if own else 0) < amount:
                    return False
            return host.nports >= nports

        return fits_own

    # -- lanes ---------------------------------------------------------------------------------

    def candidates(self, static: tuple[Constraint, ...]) -> list[HostState]:
        """Hosts that pass the static constraints, in binpack order."""
        if not static:
            return self.binpack_order
        found = self._candidates.get(static)
        if found is None:
            passing = self.static_filter(static).passing
            found = self._candidates[static] = [h for h in self.binpack_order
                                                if h.name in passing]  # fmt: skip
        return found

    def static_filter(self, static: tuple[Constraint, ...]) -> StaticFilter:
        """The hosts that pass the static constraints and why the others do not (a kept
        ClusterState remembers it between cycles)."""
        patterns = [self.pattern(c) for c in static]

        def sift(hosts: list[HostState]) -> StaticFilter:
            filtered: Counter[str] = Counter()
            for constraint, pattern in zip(static, patterns, strict=True):
                name = constraint.attribute
                values = ([h.name for h in hosts] if name == HOSTNAME
                          else [h.attrs.get(name) for h in hosts])  # fmt: skip
                passing = static_passing(constraint, values, pattern)
                if len(passing) < len(hosts):
                    why = f'constraint "{constraint.describe()}" filtered'
                    filtered[why] += len(hosts) - len(passing)
                    hosts = [hosts[i] for i in passing]
            return StaticFilter(frozenset(host.name for host in hosts), filtered)

        return self.cluster.static_filter(static, sift)

    def pattern(self, constraint: Constraint) -> re.Pattern | None:
        if constraint.op != "regex":
            return None
        text = str(constraint.value)
        if text not in self._patterns:
            self._patterns[text] = re.compile(text)
        return self._patterns[text]

    def group_counts(self, group: TaskGroup) -> GroupCounts:
        key = (group.framework, group.job, group.task)
        counts = self._groups.get(key)
        if counts is None:
            counts = self._groups[key] = GroupCounts(group, self.by_name)
        return counts

    def kind(self, framework: str, group: TaskGroup) -> Kind:
        """A group's demand, lane, and whether its instances are counted (dynamic constraints);
        groups alike (same resources, pins, constraints and strategy) share them."""
        counted = bool(group.constraints) and any(not c.is_static for c in group.constraints)
        own = counted or framework in self.reserving or framework in self.refused
        key = (framework if own else None, tuple(group.resources.items()), group.constraints,
               group.strategy, group.pin, (group.job, group.task) if counted else None)  # fmt: skip
        kind = self._kinds.get(key)
        if kind is None:
            demand = self.demand(group.resources)
            lane = None if demand is None else self.lane(framework, group, demand)
            kind = self._kinds[key] = (demand, lane, counted)
        return kind

    def lane(self, framework: str, group: TaskGroup, demand: Demand) -> Lane | SpreadLane:
        static = tuple(c for c in group.constraints if c.is_static)
        dynamic = tuple(c for c in group.constraints if not c.is_static)
        spread = group.strategy == "spread"
        if dynamic:
            key: tuple = ("group", framework, group.job, group.task)
        else:
            own = framework in self.reserving or framework in self.refused
            key = (demand, static, spread, framework if own else None, group.pin)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = self._new_lane(framework, group, demand, static, dynamic)
        return lane

    def _new_lane(
        self,
        framework: str,
        group: TaskGroup,
        demand: Demand,
        static: tuple[Constraint, ...],
        dynamic: tuple[Constraint, ...],
    ) -> Lane | SpreadLane:
        fits = self.pinned_fit(group, self.fit_function(framework, demand))
        spread = group.strategy == "spread"
        over = next((c.attribute for c in dynamic if c.op == "spread"), None)
        among = None
        if any(amount > self.largest[i] for i, amount in demand[0]):
            hosts = []  # larger than every host: no need to look at each
        elif static and not spread and over is None:
            # binpack stops at the first host that fits: check the static constraints on the
            # way there rather than list every host that passes them first
            among = self.static_filter(static).passing
            fits = _among(among, fits)
            hosts = self.binpack_order
        else:
            hosts = self.candidates(static)
        if not dynamic:
            # free resources and ports alone (no pins, reservations, refusals): the lane checks
            plain = group.pin is None and framework not in self.reserving | self.refused.keys()
            return Lane(hosts, fits, spread, demand if plain else None, among)
        counts = self.group_counts(group)

        def fits_group(host: HostState) -> bool:
            return all(counts.allows(c, host) for c in dynamic) and fits(host)

        if over is None:
            return Lane(hosts, fits_group, spread)
        by_value: dict[str, list[HostState]] = {}
        for host in hosts:
            value = host.attr(over)
            if value is not None:
                by_value.setdefault(value, []).append(host)
        lanes = {v: Lane(hs, fits_group, spread) for v, hs in by_value.items()}
        return SpreadLane(lanes, counts.per_value[over])

    def pinned_fit(
        self, group: TaskGroup | None, fits: Callable[[HostState], bool]
    ) -> Callable[[HostState], bool]:
        """`fits`, and the group's dedicated cores and devices free on the host too."""
        pin = group.pin if group is not None else None
        if pin is None:
            return fits
        pinned = self.pinned

        def fits_pinned(host: HostState) -> bool:
            free = pinned.get(host.name)
            return free is not None and free.shortfall(pin) is None and fits(host)

        return fits_pinned

    def pin_reason(self, host: HostState, group: TaskGroup) -> str:
        """Why `host` cannot give the group's dedicated cores or devices ("": it can)."""
        if group.pin is None:
            return ""
        free = self.pinned.get(host.name)
        if free is None:
            return LACKS + "cores and devices to pin (none declared)"
        lacks = free.shortfall(group.pin)
        return LACKS + lacks if lacks else ""

    # -- offers and launches -------------------------------------------------------------------

    def find_host(
        self, framework: str, group: TaskGroup
    ) -> tuple[HostState, TaskGroup, Demand, bool] | None:
        """The host the strategy picks for one instance of `group`, within the framework's
        quota (and guarantees, if it may not borrow): (host, group, its demand, whether its
        instances are counted), or None."""
        if group.framework != framework:
            raise ValueError(f"group of {group.framework} offered to {framework}")
        known = self._group_lanes.get(framework)
        if known is None or known[0] is not group:
            known = self._group_lanes[framework] = (group, *self.kind(framework, group))
        _, demand, lane, counted = known
        if lane is None:
            return None
        if framework in self.quota_used and self.quota_excess(framework, group.resources):
            return None
        if not group.revocable and self.guarded and self.borrowing(framework, demand[0]):
            return None
        host = lane.next()
        return None if host is None else (host, group, demand, counted)

    def offer(self, host: HostState, framework: str) -> Offer:
        amounts = host.available(framework)
        fw = self.frameworks.get(framework)
        resources = {d: a for d, a in zip(self.dims, amounts, strict=True) if a}
        held = self.quota_used.get(framework)
        if fw is not None and fw.quota is not None and held is not None:
            for name, limit in fw.quota.items():
                if name in resources:
                    resources[name] = max(0, min(resources[name], limit - held.get(name, 0)))
        return Offer(host.name, host.attrs, resources, host.ports)

    def offers(self, framework: str) -> _Offers:
        return _Offers(self, framework)

    def commit(self, framework: str, launch: Launch) -> Placement | str:
        """Take what `launch` asks on its host, or say why not."""
        if self._gang is not None:
            self.drop_gang()
        return self._commit(framework, launch)

    def _commit(self, framework: str, launch: Launch) -> Placement | str:
        found, self._found = self._found, None
        if (
            found is not None
            and launch.group is found[1]
            and launch.host == found[0].name
            and launch.resources is found[1].resources
        ):
            host, _, demand, counted = found  # pick() just checked fit and quota
        else:
            checked = self._check(framework, launch)
            if isinstance(checked, str):
                return checked
            host, demand = checked
            group = launch.group
            counted = group is not None and any(not c.is_static for c in group.constraints)
        return self._take(framework, host, demand, counted, launch.job, launch.task, launch.index,
                          launch.resources, launch.group)  # fmt: skip

    def _take(
        self,
        framework: str,
        host: HostState,
        demand: Demand,
        counted: bool,
        job: str,
        task: str,
        index: int,
        resources: Mapping[str, int],
        group: TaskGroup | None,
    ) -> Placement | str:
        """Take a checked task's resources (and pins) on `host`: its placement."""
        revocable = False
        if self.guarded:
            revocable = self.borrowing(framework, demand[0]) is not None
            if revocable and group is not None and not group.revocable:
                return self.borrow_excess(group) or "revocable: false"
            if not revocable:
                self._hold(framework, demand[0])
        if self._before is not None and host.name not in self._before:
            self._before[host.name] = host.snapshot()
        ports = host.take(framework, demand)
        pin = group.pin if group is not None else None
        pins = self.pinned[host.name].take(pin) if pin is not None else None
        if counted:
            self.group_counts(group).record(host)  # type: ignore[arg-type]
        held = self.quota_used.get(framework)
        if held is not None:
            for name, amount in resources.items():
                held[name] = held.get(name, 0) + amount
        return Placement(job, task, index, framework, host.name, resources, ports, revocable,
                         pins)  # fmt: skip

    def _check(self, framework: str, launch: Launch) -> tuple[HostState, Demand] | str:
        host = self.by_name.get(launch.host)
        if host is None:
            return f"unknown host {launch.host!r}"
        demand = self.demand(launch.resources)
        if demand is None:
            return f"host {launch.host} has none of some resource in {dict(launch.resources)}"
        if not demand[0] and not demand[1]:
            return "a task must ask for some resources"
        excess = self.quota_excess(framework, launch.resources)
        if excess:
            return excess
        if not self.pinned_fit(launch.group, self.fit_function(framework, demand))(host):
            return f"host {launch.host} cannot give {dict(launch.resources)}"
        return host, demand

    # -- gangs: all instances at once, or none -------------------------------------------------

    def trial_gang(self, framework: str, group: TaskGroup, count: int) -> list[str] | str:
        """Place `count` instances of `group` now and hold them until commit_gang (any other
        decision undoes them); if they do not all fit, undo at once and say why."""
        self.drop_gang()
        undo = _Undo(self, framework, group)
        offers = self.offers(framework)
        placements: list[Placement] = []
        start = group.first_index + group.count - count
        for index in range(start, start + count):
            name = offers.pick(group)
            if name is None:
                why = self.explain(group)
                undo.restore()
                return (
                    f"gang of {count}: only {len(placements)} fit at once, so none was placed "
                    f"({why})"
                )
            undo.save(self.by_name[name])
            placement = self._commit(framework, Launch(name, group.job, group.task, index,
                                                       group.resources, group))  # fmt: skip
            if isinstance(placement, str):  # cannot happen: pick() checked fit and quota
                undo.restore()
                return placement
            placements.append(placement)
        self._gang = (group, placements, undo)
        return [p.host for p in placements]

    def commit_gang(self, framework: str, gang: GangLaunch) -> list[Placement] | str:
        """Take what every launch of `gang` asks, or nothing and say why not."""
        held, self._gang = self._gang, None
        if (
            held is not None
            and held[0] is gang.group
            and [(p.host, p.index) for p in held[1]]
            == [(launch.host, launch.index) for launch in gang.launches]
        ):
            return held[1]
        if held is not None:
            held[2].restore()
        if not gang.launches:
            return "a gang must launch at least one task"
        undo = _Undo(self, framework, gang.group)
        placements = []
        for launch in gang.launches:
            host = self.by_name.get(launch.host)
            if host is not None:
                undo.save(host)
            placement = self._commit(framework, launch)
            if isinstance(placement, str):
                undo.restore()
                return f"gang of {len(gang.launches)}: {launch.task}[{launch.index}]: {placement}"
            placements.append(placement)
        return placements

    def put_back(self) -> None:
        """Give a kept ClusterState's hosts back as they were before the cycle."""
        if self._before:
            for name, before in self._before.items():
                self.by_name[name].restore(before)
            self._before.clear()

    def drop_gang(self) -> None:
        """Undo a gang trial that was not committed."""
        if self._gang is not None:
            held, self._gang = self._gang, None
            held[2].restore()

    def refuse(self, framework: str, decline: Decline, now: float) -> None:
        if decline.refuse_seconds <= 0:
            return
        until = now + decline.refuse_seconds
        for host in decline.hosts if decline.hosts is not None else (None,):
            self.filters.append(Filter(framework, host, until))

    def _grown(self, f: Filter) -> bool:
        """Whether the filtered host could now offer more than was declined (a task ended)."""
        host = self.by_name.get(f.host or "")
        if host is None or f.resources is None:
            return False
        amounts = host.available(f.framework)
        return any(a > f.resources.get(d, 0) for d, a in zip(self.dims, amounts, strict=True))

    def _refuse(self, framework: str, host: str | None) -> None:
        if host is None:
            self.refused[framework] = None
        elif self.refused.get(framework, set()) is not None:
            self.refused.setdefault(framework, set()).add(host)  # type: ignore[union-attr]

    # -- explanations --------------------------------------------------------------------------

    def explain(self, group: TaskGroup) -> str:
        """Why no host takes an instance of `group`, the way `nomad job plan` says it."""
        if group.framework in self.quota_used:
            excess = self.quota_excess(group.framework, group.resources)
            if excess:
                return excess
        if self.guarded and not group.revocable:
            excess = self.borrow_excess(group)
            if excess:
                return excess
        if not self.hosts:
            return "no hosts in the cluster"
        dynamic = group.constraints and tuple(c for c in group.constraints if not c.is_static)
        own = group.framework in self.reserving or group.framework in self.refused
        key = (
            group.framework if own else None,
            tuple(sorted(group.resources.items())),
            group.constraints,
            group.pin,
        )
        if not dynamic and key in self._explained:
            return self._explained[key]
        demand = self.demand(group.resources)
        tally: Counter[str] = Counter()
        if dynamic or own or demand is None:
            counts = self.group_counts(group) if dynamic else None
            patterns = [self.pattern(c) for c in group.constraints]
            refused = self.refused.get(group.framework, set())
            for host in self.hosts:
                tally[self._why_not(host, group, demand, patterns, counts, refused)] += 1
            tally.pop("", None)
        else:
            self._tally_common(group, demand, tally)
        reason = no_host_has(tally, len(self.hosts)) or "no host fits: " + "; ".join(
            f"{what} on {n} host{'s' if n != 1 else ''}" for what, n in sorted(tally.items())
        )
        if not dynamic:
            self._explained[key] = reason
        return reason

    def _tally_common(self, group: TaskGroup, demand: Demand, tally: Counter[str]) -> None:
        """explain() for the usual case, fast: only static constraints, no reservations."""
        static = group.constraints
        passing = len(self.hosts)
        if static:
            filtered = self.static_filter(static)
            tally.update(filtered.filtered)
            passing = len(filtered.passing)
        nz, nports = demand
        named = [(i, amount, f'dimension "{self.dims[i]}" exhausted') for i, amount in nz]
        if named and named[0][1] > self.largest[named[0][0]] and group.pin is None:
            # more than any host has: that is the first thing every candidate lacks
            if passing:
                tally[named[0][2]] += passing
            return
        for host in self.candidates(static):
            if group.pin is not None and (lacks := self.pin_reason(host, group)):
                tally[lacks] += 1  # a pinned task: say what it lacks of those first
                continue
            free = host.free
            for i, amount, why in named:
                if free[i] < amount:
                    tally[why] += 1
                    break
            else:
                if host.nports < nports:
                    tally['dimension "ports" exhausted'] += 1

    def filtered(
        self,
        host: HostState,
        group: TaskGroup,
        counts: GroupCounts | None,
        patterns: list[re.Pattern | None] | None = None,
    ) -> str | None:
        """The first of the group's constraints that rules `host` out, as a reason; None."""
        for i, constraint in enumerate(group.constraints):
            if constraint.is_static:
                pattern = patterns[i] if patterns is not None else self.pattern(constraint)
                allowed = static_allows(constraint, host, pattern)
            else:
                allowed = counts is not None and counts.allows(constraint, host)
            if not allowed:
                return f'constraint "{constraint.describe()}" filtered'
        return None

    def _why_not(
        self,
        host: HostState,
        group: TaskGroup,
        demand: Demand | None,
        patterns: list[re.Pattern | None],
        counts: GroupCounts | None,
        refused: set[str] | None,
    ) -> str:
        if refused is None or host.name in refused:
            return "declined by the framework"
        filtered = self.filtered(host, group, counts, patterns)
        if filtered:
            return filtered
        lacks = self.pin_reason(host, group)
        if lacks:
            return lacks
        available = host.available(group.framework)
        for name, amount in group.resources.items():
            i = self.index.get(name)
            if name != PORTS and amount and (i is None or available[i] < amount):
                return f'dimension "{name}" exhausted'
        if host.nports < group.resources.get(PORTS, 0):
            return 'dimension "ports" exhausted'
        return ""  # it fits now (an earlier round found it full)


def _among(names: frozenset[str], fits: Callable[[HostState], bool]) -> Callable[[HostState], bool]:
    """`fits`, for the hosts named in `names` only."""
    return lambda host: host.name in names and fits(host)


class _Undo:
    """What a gang trial changed, to put back: touched hosts, the group's counts, the quota."""

    def __init__(self, cycle: Cycle, framework: str, group: TaskGroup | None) -> None:
        self.cycle = cycle
        self.hosts: dict[str, tuple] = {}
        self.pinned: dict[str, HostPins] = {}
        self.framework = framework
        held = cycle.quota_used.get(framework)
        self.quota = None if held is None else dict(held)
        self.pool = list(cycle.pool)
        nonrevocable = cycle.nonrevocable.get(framework)
        self.nonrevocable = None if nonrevocable is None else list(nonrevocable)
        self.counts = None
        if group is not None and any(not c.is_static for c in group.constraints):
            counts = cycle.group_counts(group)
            self.counts = (counts, Counter(counts.per_host),
                           {a: Counter(c) for a, c in counts.per_value.items()})  # fmt: skip

    def save(self, host: HostState) -> None:
        if host.name not in self.hosts:
            self.hosts[host.name] = host.snapshot()
            pinned = self.cycle.pinned.get(host.name)
            if pinned is not None:
                self.pinned[host.name] = pinned.copy()

    def restore(self) -> None:
        cycle = self.cycle
        for name, before in self.hosts.items():
            cycle.by_name[name].restore(before)
        cycle.pinned.update(self.pinned)
        if self.quota is not None:
            cycle.quota_used[self.framework] = self.quota
        cycle.pool = self.pool
        if self.nonrevocable is not None:
            cycle.nonrevocable[self.framework] = self.nonrevocable
        if self.counts is not None:
            counts, per_host, per_value = self.counts
            counts.per_host.clear()
            counts.per_host.update(per_host)
            for attribute, counter in counts.per_value.items():
                counter.clear()
                counter.update(per_value[attribute])
        # lanes dropped hosts that fit again now, and explanations saw the trial: start afresh
        cycle._lanes.clear()
        cycle._kinds.clear()
        cycle._group_lanes.clear()
        cycle._explained.clear()
        cycle._found = None


class _Offers:
    """The offers one framework sees in one round (lazy: nothing is built until asked)."""

    __slots__ = ("cycle", "framework")

    def __init__(self, cycle: Cycle, framework: str) -> None:
        self.cycle = cycle
        self.framework = framework

    def __iter__(self) -> Iterator[Offer]:
        refused = self.cycle.refused.get(self.framework, set())
        if refused is None:
            return
        for host in self.cycle.hosts:
            if host.name not in refused:
                offer = self.cycle.offer(host, self.framework)
                if offer.resources or offer.ports:
                    yield offer

    @property
    def headroom(self) -> dict[str, int] | None:
        """What the framework may take before another framework's turn: up to the next lowest
        weighted dominant share (None: no other framework wants any)."""
        cycle = self.cycle
        sorter = cycle.sorter
        following = sorter.next_share(self.framework) if sorter is not None else None
        if following is None or sorter is None:
            return None
        fw = cycle.frameworks.get(self.framework)
        weight = fw.weight if fw is not None else 1.0
        held = sorter.allocated(self.framework)
        return {d: max(0, math.floor(following * weight * total) - held.get(d, 0))
                for d, total in sorter.total.items()}  # fmt: skip

    def find(self, group: TaskGroup) -> Offer | None:
        host = self.pick(group)
        return None if host is None else self.cycle.offer(self.cycle.by_name[host], self.framework)

    def pick(self, group: TaskGroup) -> str | None:
        """The name of the host `find` would offer, without building the offer."""
        found = self.cycle._found = self.cycle.find_host(self.framework, group)
        return None if found is None else found[0].name

    def pick_all(self, group: TaskGroup, count: int) -> list[str] | str:
        """Hosts for `count` instances of `group` at once (held until the gang is launched)."""
        if group.framework != self.framework:
            raise ValueError(f"group of {group.framework} offered to {self.framework}")
        return self.cycle.trial_gang(self.framework, group, count)


def allocate(
    hosts: Iterable[Host] | ClusterState,
    frameworks: Iterable[Framework],
    schedulers: Iterable[Scheduler],
    *,
    now: float = 0.0,
    filters: Iterable[Filter] = (),
    total: Mapping[str, int] | None = None,
    revocable: Iterable[RevocableTask] = (),
) -> Plan:
    """Run one cycle of offers in weighted DRF order and return the plan (a pure function).

    `total`: the whole cluster's resources, when `hosts` are only some of its hosts (the ones
    with room, say): shares are then of the whole cluster, as if every host were given.
    Frameworks below their guarantee go first; a placement that takes capacity guaranteed to
    others is revocable; `revocable`: the borrowed tasks running now, of which the plan's
    revocations are chosen for the frameworks still below their guarantee.
    `hosts` may be a ClusterState kept between cycles: the cycle leaves it as it found it."""
    schedulers = list(schedulers)
    by_framework = {s.framework: s for s in schedulers}
    known = {f.name: f for f in frameworks}
    for name in by_framework:
        known.setdefault(name, Framework(name))
    cycle = Cycle(hosts, known, now, filters)
    try:
        return _run(cycle, schedulers, by_framework, known, now, total, revocable)
    finally:
        cycle.put_back()


_DECIDING = ("resource_offers", "next_group", "no_room", "cap_reason", "launched", "placed",
             "rejected", "wants_offers", "_advance")  # fmt: skip


@functools.cache
def _decides_as_jobs(cls: type[Scheduler]) -> bool:
    """Whether schedulers of class `cls` decide their rounds as the built-in JobScheduler does
    (it is one, or a subclass that changes none of that): then the cycle decides them."""
    return issubclass(cls, JobScheduler) and all(
        getattr(cls, method) is getattr(JobScheduler, method) for method in _DECIDING
    )


def _rounds(
    cycle: Cycle, sorter: DRFSorter, by_framework: Mapping[str, Scheduler], now: float
) -> list[Placement]:
    """Offer rounds in DRF order until no framework wants more: the placements.

    The built-in JobScheduler's rounds are decided here (_decides_as_jobs), without building its
    offers and launches: what its resource_offers() would answer (the host find() picks for its
    next instance) and commit() would take, one placement per round as for any scheduler. Its
    gangs go by the general round."""
    placements: list[Placement] = []
    rejections: Counter[str] = Counter()
    guarded = cycle.guarded
    fast = {n for n, s in by_framework.items() if _decides_as_jobs(type(s))}
    while (name := sorter.lowest()) is not None:
        scheduler = by_framework[name]
        if name in fast:
            group = scheduler.next_group()
            if group is None:  # it declines: nothing left
                sorter.deactivate(name)
                continue
            if not group.gang:
                found = cycle.find_host(name, group)
                if found is None:  # its next round goes on with its next group
                    scheduler.no_room(group)
                    continue
                host, _, demand, counted = found
                if (
                    guarded
                    and sorter.below_guarantee(name)
                    and cycle.borrowing(name, demand[0]) is not None
                ):
                    sorter.demote(name)  # as below: it waits for its turn by DRF
                    continue
                placement = cycle._take(name, host, demand, counted, group.job, group.task,
                                        scheduler.next_index, group.resources, group)  # fmt: skip
                # never refused: find_host() found no host for a group that may not borrow
                placements.append(placement)  # type: ignore[arg-type]
                sorter.allocate(name, group.resources)
                if rejections:
                    rejections.pop(name, None)
                if not scheduler.placed(placement):  # type: ignore[arg-type] - launched()
                    sorter.deactivate(name)
                continue
        decision = scheduler.resource_offers(cycle.offers(name))
        if cycle.guarded and sorter.below_guarantee(name) and cycle.borrows(name, decision):
            cycle.drop_gang()  # beyond its guarantee: it waits for its turn by DRF instead
            sorter.demote(name)
            continue
        if isinstance(decision, Decline):
            cycle.drop_gang()
            cycle.refuse(name, decision, now)
            sorter.deactivate(name)
            continue
        if isinstance(decision, GangLaunch):
            result = cycle.commit_gang(name, decision)
            if not isinstance(result, str):
                placements.extend(result)
                for placement in result:
                    sorter.allocate(name, placement.resources)
                    scheduler.launched(placement)
                rejections[name] = 0
            else:
                scheduler.rejected(decision, result)
                rejections[name] += 1
        elif isinstance(result := cycle.commit(name, decision), Placement):
            placements.append(result)
            sorter.allocate(name, decision.resources)
            rejections[name] = 0
            scheduler.launched(result)
        else:
            scheduler.rejected(decision, result)
            rejections[name] += 1
        if rejections[name] >= MAX_REJECTIONS_IN_A_ROW or not scheduler.wants_offers():
            sorter.deactivate(name)
    return placements


def _run(
    cycle: Cycle,
    schedulers: list[Scheduler],
    by_framework: Mapping[str, Scheduler],
    known: Mapping[str, Framework],
    now: float,
    total: Mapping[str, int] | None,
    revocable: Iterable[RevocableTask],
) -> Plan:
    """The offer rounds of one cycle, then the explanations and revocations."""
    if total is not None and cycle.guarded:
        cycle.guard(total)
    sorter = cycle.sorter = DRFSorter(cycle.total if total is None else total)
    for name in sorted(known):
        fw = known[name]
        scheduler = by_framework.get(name)
        wants = scheduler is not None and scheduler.wants_offers()
        sorter.add(name, fw.weight, fw.allocated, fw.guarantee, active=wants)
    placements = _rounds(cycle, sorter, by_framework, now)
    cycle.drop_gang()
    unplaced = [u for s in schedulers for u in s.unplaced(cycle.explain)]
    revocations: list[Revocation] = []
    if cycle.guarded:
        wanting = [
            (s.framework, groups)
            for s in schedulers
            if sorter.owed(s.framework) and (groups := s.waiting())
        ]
        revocations, waits = revoke_for_guarantees(cycle, wanting, revocable)
        if waits:
            unplaced = [
                replace(u, reason=waits[key]) if (key := (u.job, u.task, u.index)) in waits else u
                for u in unplaced
            ]
    return Plan(placements, unplaced, sorter.shares(), tuple(cycle.filters), tuple(revocations))
