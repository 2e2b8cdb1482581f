"""A host's free resources during one cycle, and the lanes that find hosts for requests.

A lane holds the candidate hosts for one kind of request in strategy order: a cursor over them
(binpack) or a lazy heap (spread). A host that no longer fits a lane's request is dropped for
good; within a cycle that is exact, because free resources only shrink and a task group's
instance counts only grow.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import repeat
from operator import sub

from meso_agentless.core.model import HOSTNAME, Constraint, Host, TaskGroup
from meso_agentless.core.resources import count_ports, merge_ranges, remove_ports, take_ports

Demand = tuple[tuple[tuple[int, int], ...], int]  # ((dimension index, amount), ...), ports
_ZEROS = repeat(0)  # the default of each dict.get() mapped over the dimensions


class HostState:
    """A host's free resources during one cycle (mutable, owned by the cycle)."""

    __slots__ = (
        "attrs", "cap", "free", "name", "nports", "ports", "rfree", "util", "util_version",
        "version",
    )  # fmt: skip

    def __init__(self, host: Host, dims: tuple[str, ...]) -> None:
        self.name = host.name
        self.attrs = host.attributes
        self.cap = cap = list(map(host.capacity.get, dims, _ZEROS))  # maps: cheaper than loops
        self.rfree: dict[str, list[int]] | None = None
        if host.reservations:
            used = host.used.get
            self.rfree = {}
            reserved_total = [0] * len(dims)
            for fw, amounts in host.reservations.items():
                taken = host.used_reserved.get(fw, {})
                self.rfree[fw] = [max(0, amounts.get(d, 0) - taken.get(d, 0)) for d in dims]
                for i, d in enumerate(dims):
                    reserved_total[i] += amounts.get(d, 0)
            used_reserved = [sum(u.get(d, 0) for u in host.used_reserved.values()) for d in dims]
            self.free = [
                max(0, cap - res - (used(d, 0) - ur))
                for d, cap, res, ur in zip(dims, cap, reserved_total, used_reserved, strict=True)
            ]
            self.util = self.utilization()
        else:
            self.free = free = list(map(sub, cap, map(host.used.get, dims, _ZEROS)))
            if min(free, default=0) < 0:
                self.free = free = [max(0, f) for f in free]
            self.util = _used_fraction(cap, free)  # utilization(), without reservations
        ports = host.ports
        if len(ports) > 1:
            ports = merge_ranges(ports)
        if host.used_ports:
            ports = remove_ports(ports, host.used_ports)
        self.ports = ports
        self.nports = count_ports(ports) if ports else 0
        self.version = self.util_version = 0

    def attr(self, name: str) -> str | None:
        """A host attribute; "hostname" is the host's name."""
        return self.name if name == HOSTNAME else self.attrs.get(name)

    def current_util(self) -> float:
        """Dominant utilization now (recomputed only when the host changed since)."""
        if self.util_version != self.version:
            self.util = self.utilization()
            self.util_version = self.version
        return self.util

    def utilization(self) -> float:
        """Dominant utilization: the largest used fraction of any resource."""
        rfree, free = self.rfree, self.free
        if rfree:  # what is reserved, unused, counts as free
            free = [f + sum(r[i] for r in rfree.values()) for i, f in enumerate(free)]
        return _used_fraction(self.cap, free)

    def available(self, framework: str) -> list[int]:
        own = self.rfree.get(framework) if self.rfree else None
        return [f + r for f, r in zip(self.free, own, strict=True)] if own else list(self.free)

    def snapshot(self) -> tuple:
        """What take() changes, to restore() later."""
        rfree = None if self.rfree is None else {k: list(v) for k, v in self.rfree.items()}
        return list(self.free), rfree, self.ports, self.nports

    def restore(self, snapshot: tuple) -> None:
        self.free, self.rfree, self.ports, self.nports = snapshot
        self.version += 1

    def take(self, framework: str, demand: Demand) -> tuple[int, ...]:
        """Take `demand` (from the framework's reservation first): the ports it was given."""
        nz, nports = demand
        free = self.free
        own = self.rfree.get(framework) if self.rfree else None
        if own:
            for i, amount in nz:
                from_reservation = min(own[i], amount)
                own[i] -= from_reservation
                free[i] -= amount - from_reservation
        else:
            for i, amount in nz:
                free[i] -= amount
        self.version += 1  # self.util is stale now: current_util() refreshes it
        if not nports:
            return ()
        ports, self.ports = take_ports(self.ports, nports)
        self.nports -= nports
        return tuple(ports)


class Lane:
    """Candidate hosts for one kind of request: a cursor (binpack) or a lazy heap (spread).

    `demand`, for binpack only, says that `fits` asks no more than the host's free resources
    and ports covering it, and the host's name in `among` if that is given: next() then checks
    that itself rather than call `fits` for each host it looks at (the usual request)."""

    __slots__ = ("among", "demand", "fits", "heap", "hosts", "pos")

    def __init__(
        self,
        hosts: list[HostState],
        fits: Callable[[HostState], bool],
        spread: bool,
        demand: Demand | None = None,
        among: frozenset[str] | None = None,
    ) -> None:
        self.hosts = hosts
        self.fits = fits
        self.pos = 0
        self.demand = None if spread else demand
        self.among = among
        self.heap: list[tuple[float, str, int, HostState]] | None = None
        if spread:
            self.heap = [(h.current_util(), h.name, h.version, h) for h in hosts]
            heapq.heapify(self.heap)

    def next(self) -> HostState | None:
        heap = self.heap
        if heap is None:
            hosts, i, n = self.hosts, self.pos, len(self.hosts)
            if self.demand is not None:
                (nz, nports), among = self.demand, self.among
                while i < n:
                    host = hosts[i]
                    if among is None or host.name in among:
                        free = host.free
                        for d, amount in nz:
                            if free[d] < amount:
                                break
                        else:
                            if host.nports >= nports:
                                self.pos = i
                                return host
                    i += 1
                self.pos = n
                return None
            fits = self.fits
            while i < n:
                if fits(hosts[i]):
                    self.pos = i
                    return hosts[i]
                i += 1
            self.pos = n
            return None
        fits = self.fits
        while heap:
            _, _, version, host = heap[0]
            if version != host.version:
                heapq.heapreplace(heap, (host.current_util(), host.name, host.version, host))
            elif not fits(host):
                heapq.heappop(heap)
            else:
                return host
        return None


class SpreadLane:
    """Instances spread over an attribute: the value with the fewest instances goes next."""

    __slots__ = ("counts", "heap", "lanes")

    def __init__(self, lanes: dict[str, Lane], counts: Counter[str]) -> None:
        self.lanes = lanes
        self.counts = counts
        self.heap = [(counts[v], v) for v in lanes]
        heapq.heapify(self.heap)

    def next(self) -> HostState | None:
        heap = self.heap
        while heap:
            count, value = heap[0]
            if count != self.counts[value]:
                heapq.heapreplace(heap, (self.counts[value], value))
                continue
            host = self.lanes[value].next()
            if host is not None:
                return host
            heapq.heappop(heap)
        return None


class GroupCounts:
    """Where a task group's instances are, for unique_host, max_per and spread."""

    __slots__ = ("attributes", "per_host", "per_value")

    def __init__(self, group: TaskGroup, hosts: Mapping[str, HostState]) -> None:
        self.attributes = sorted({c.attribute for c in group.constraints if not c.is_static})
        self.per_host: Counter[str] = Counter(group.running)
        self.per_value: dict[str, Counter[str]] = {a: Counter() for a in self.attributes}
        for name, count in group.running.items():
            host = hosts.get(name)
            if host is not None:
                self._count(host, count)

    def record(self, host: HostState) -> None:
        self.per_host[host.name] += 1
        self._count(host, 1)

    def _count(self, host: HostState, n: int) -> None:
        for attribute, counter in self.per_value.items():
            value = host.attr(attribute)
            if value is not None:
                counter[value] += n

    def allows(self, constraint: Constraint, host: HostState) -> bool:
        if constraint.op == "unique_host":
            return self.per_host[host.name] == 0
        value = host.attr(constraint.attribute)
        if value is None:
            return False
        if constraint.op == "max_per":
            return self.per_value[constraint.attribute][value] < int(constraint.value or 0)
        return True  # spread: any host that has the attribute


def _used_fraction(cap: list[int], free: list[int]) -> float:
    """The largest used fraction of any resource of capacity `cap` with `free` free."""
    util = 0.0
    for c, f in zip(cap, free):  # noqa: B905 - as long, and this runs for every host
        if c and c - f > util * c:
            util = (c - f) / c
    return util


def static_allows(constraint: Constraint, host: HostState, pattern: re.Pattern | None) -> bool:
    return bool(static_passing(constraint, [host.attr(constraint.attribute)], pattern))


def static_passing(
    constraint: Constraint, values: list[str | None], pattern: re.Pattern | None
) -> list[int]:
    """The positions of the attribute values (None: no such attribute) that a static
    constraint lets through: a pass over all of them, for every host at once."""
    if constraint.op == "eq":
        wanted = str(constraint.value)
        return [i for i, value in enumerate(values) if value == wanted]
    if constraint.op == "ne":
        unwanted = str(constraint.value)
        return [i for i, value in enumerate(values) if value != unwanted]
    if pattern is None:
        return []
    match = pattern.fullmatch
    return [i for i, value in enumerate(values) if value is not None and match(value)]
