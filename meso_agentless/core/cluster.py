"""The allocator's per-host state, kept between cycles and updated by events.

Building every host's free resources and the binpack order costs O(hosts log hosts) per cycle;
at 50,000 hosts that is a third of a cycle. A long-running controller keeps a `ClusterState`
instead and tells it what changed: a host sampled, added, removed or drained (`put`, `remove`),
tasks placed or ended (`place`, `release`); each event rebuilds that one host's state and moves it
in the binpack order (O(log hosts)). A cycle run on the state (`allocate(state, ...)`) sees
exactly what a cycle from the same hosts built from scratch sees, and leaves the state as it
found it: the placements it decides come back as `place` events once the caller recorded them.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from itertools import chain
from operator import attrgetter
from typing import NamedTuple, Protocol

from sortedcontainers import SortedDict, SortedList

from meso_agentless.core.lanes import HostState
from meso_agentless.core.model import Host
from meso_agentless.core.resources import CPUS, DISK, MEM, PORTS, Resources, add, subtract

DIM_ORDER = (CPUS, MEM, DISK)
_CAPACITY, _RESERVATIONS = attrgetter("capacity"), attrgetter("reservations")


class StaticFilter(NamedTuple):
    """The hosts static constraints let through, and how many each constraint filtered."""

    passing: frozenset[str]
    filtered: Counter[str]


class ClusterState:
    """Every host as the allocator sees it: its `Host`, its `HostState`, and the orders,
    totals and largest capacities a cycle starts from."""

    def __init__(self, hosts: Iterable[Host] = (), extra_dims: Iterable[str] = ()) -> None:
        self._extra = frozenset(extra_dims)
        self._hosts: dict[str, Host] = {}
        self._states: SortedDict = SortedDict()  # name -> HostState, by name
        self._binpack: SortedList = SortedList()  # (-utilization, name): fullest first
        self._keys: dict[str, tuple[float, str]] = {}
        self._dim_names: Counter[str] = Counter()  # resource name -> hosts that have it
        self._reserving: Counter[str] = Counter()  # framework -> hosts reserved for it
        self.dims: tuple[str, ...] = ()
        self.index: dict[str, int] = {}
        self._total: list[int] = []
        self._largest: list[int] | None = None
        self._by_name: list[HostState] | None = None
        self._by_util: list[HostState] | None = None
        self._static: dict[Hashable, StaticFilter] = {}
        self._hosts.update((host.name, host) for host in hosts)  # given twice: the last holds
        self._dim_names.update(chain.from_iterable(map(_CAPACITY, self._hosts.values())))
        self._dim_names.pop(PORTS, None)
        self._reserving.update(chain.from_iterable(map(_RESERVATIONS, self._hosts.values())))
        self._set_dims()

    # -- events ----------------------------------------------------------------------------------

    def put(self, host: Host) -> None:
        """A host added, or sampled anew (its capacity, attributes or use changed)."""
        before = self._hosts.get(host.name)
        if before == host:
            return
        if before is not None and (before.capacity, before.attributes, before.reservations) == (
            host.capacity,
            host.attributes,
            host.reservations,
        ):
            self._swap(host)  # only what it holds changed (a task placed or ended)
            return
        before = self._drop(host.name)
        if before is None or before.attributes != host.attributes:
            self._static.clear()
        self._hosts[host.name] = host
        self._count(host, 1)
        if not self._settle_dims():
            self._add_state(HostState(host, self.dims))

    def remove(self, name: str) -> None:
        """A host gone, down or draining: no cycle sees it any more."""
        if name in self._hosts:
            self._drop(name)
            self._static.clear()
            self._settle_dims()

    def place(self, tasks: Iterable[Holding]) -> None:
        """Tasks placed on (or found running on) their hosts hold their resources and ports."""
        for name, (resources, ports) in _per_host(tasks).items():
            host = self._hosts.get(name)
            if host is not None:  # else gone: a host put again comes with what it holds
                self.put(replace(host, used=add(host.used, resources),
                                 used_ports=host.used_ports | ports))  # fmt: skip

    def release(self, tasks: Iterable[Holding]) -> None:
        """Tasks ended: what they held on their hosts is free again."""
        for name, (resources, ports) in _per_host(tasks).items():
            host = self._hosts.get(name)
            if host is not None:
                used = {n: a for n, a in subtract(host.used, resources).items() if a}
                self.put(replace(host, used=used, used_ports=host.used_ports - ports))

    def sync(self, hosts: Iterable[Host]) -> None:
        """Make the state hold exactly `hosts`: only those that differ are rebuilt."""
        wanted = {h.name: h for h in hosts}
        for name in [n for n in self._hosts if n not in wanted]:
            self.remove(name)
        for host in wanted.values():
            self.put(host)

    # -- what a cycle starts from ----------------------------------------------------------------

    def host(self, name: str) -> Host | None:
        return self._hosts.get(name)

    def hosts(self) -> list[Host]:
        """The hosts held, by name (what a cycle from scratch would be given)."""
        return [self._hosts[name] for name in self._states]

    @property
    def by_name(self) -> Mapping[str, HostState]:
        return self._states

    @property
    def states(self) -> list[HostState]:
        """Each host's free resources, by name. A cycle may change them; it puts them back."""
        if self._by_name is None:
            states = self._states  # not .values(): a view that yields in Python
            self._by_name = list(map(states.__getitem__, states))
        return self._by_name

    @property
    def binpack_order(self) -> list[HostState]:
        """Fullest host first (dominant utilization), ties by name: where binpack looks first."""
        if self._by_util is None:
            states = self._states
            self._by_util = [states[name] for _, name in self._binpack]
        return self._by_util

    @property
    def total(self) -> dict[str, int]:
        return dict(zip(self.dims, self._total, strict=True))

    @property
    def largest(self) -> list[int]:
        """The largest capacity of any host, per dimension."""
        if self._largest is None:
            self._largest = _per_dim(max, [s.cap for s in self.states], len(self.dims))
        return self._largest

    @property
    def reserving(self) -> set[str]:
        """Frameworks with a reservation on some host."""
        return set(self._reserving)

    def static_filter(
        self, static: Hashable, sift: Callable[[list[HostState]], StaticFilter]
    ) -> StaticFilter:
        """Which hosts pass the static constraints `static`, and why each other one does not,
        as `sift` finds over every host. That depends on the hosts' names and attributes
        alone: it is remembered until a host is added or removed or its attributes change."""
        found = self._static.get(static)
        if found is None:
            found = self._static[static] = sift(self.states)
        return found

    # -- bookkeeping -----------------------------------------------------------------------------

    def _count(self, host: Host, n: int) -> None:
        """Count (n = 1) or uncount (n = -1) the host's resource names and reservations."""
        for name in host.capacity:
            if name != PORTS:
                _bump(self._dim_names, name, n)
        for framework in host.reservations:
            _bump(self._reserving, framework, n)

    def _add_state(self, state: HostState) -> None:
        self._states[state.name] = state
        key = self._keys[state.name] = (-state.util, state.name)
        self._binpack.add(key)
        for i, cap in enumerate(state.cap):
            self._total[i] += cap
        if self._largest is not None:
            self._largest = [max(a, b) for a, b in zip(self._largest, state.cap, strict=True)]
        self._by_name = self._by_util = None

    def _swap(self, host: Host) -> None:
        """Rebuild the state of a host whose capacity, attributes and reservations stay."""
        self._hosts[host.name] = host
        state = self._states[host.name] = HostState(host, self.dims)
        self._binpack.remove(self._keys[host.name])
        key = self._keys[host.name] = (-state.util, state.name)
        self._binpack.add(key)
        self._by_name = self._by_util = None

    def _drop(self, name: str) -> Host | None:
        host = self._hosts.pop(name, None)
        if host is None:
            return None
        self._count(host, -1)
        state = self._states.pop(name)
        self._binpack.remove(self._keys.pop(name))
        for i, cap in enumerate(state.cap):
            self._total[i] -= cap
        if self._largest is not None and any(
            c and c == big for c, big in zip(state.cap, self._largest, strict=True)
        ):
            self._largest = None  # it was the largest: find the next one when asked
        self._by_name = self._by_util = None
        return host

    def _settle_dims(self) -> bool:
        """Rebuild every host's state if the set of resource names changed (True if so)."""
        names = set(self._dim_names) | self._extra
        if set(self.dims) == names:
            return False
        self._set_dims()
        return True

    def _set_dims(self) -> None:
        """Order the dimensions and build every host's state for them (a new resource name)."""
        names = set(self._dim_names) | self._extra
        self.dims = tuple(d for d in DIM_ORDER if d in names) + tuple(
            sorted(names - set(DIM_ORDER))
        )
        self.index = {d: i for i, d in enumerate(self.dims)}
        states = [HostState(host, self.dims) for host in self._hosts.values()]
        self._states = SortedDict((state.name, state) for state in states)
        self._keys = {state.name: (-state.util, state.name) for state in states}
        self._binpack = SortedList(self._keys.values())
        caps = [state.cap for state in states]
        self._total = _per_dim(sum, caps, len(self.dims))
        self._largest = _per_dim(max, caps, len(self.dims))
        self._by_name = self._by_util = None


class Holding(Protocol):
    """A task as far as its host's free resources go (a Placement, a stored task row)."""

    @property
    def host(self) -> str: ...
    @property
    def resources(self) -> Resources: ...
    @property
    def ports(self) -> Iterable[int]: ...


def _per_host(tasks: Iterable[Holding]) -> dict[str, tuple[dict[str, int], set[int]]]:
    """What the tasks hold, summed per host (ports are ranges of the host, not an amount)."""
    out: dict[str, tuple[dict[str, int], set[int]]] = {}
    for task in tasks:
        held = out.get(task.host)
        if held is None:
            held = out[task.host] = ({}, set())
        resources, ports = held
        for name, amount in task.resources.items():
            if name != PORTS:
                resources[name] = resources.get(name, 0) + amount
        ports.update(task.ports)
    return out


def _per_dim(fold: Callable[[Iterable[int]], int], caps: list[list[int]], n: int) -> list[int]:
    """`fold` (sum, max) of each of the `n` dimensions over the hosts' capacities."""
    return [fold(col) for col in zip(*caps, strict=True)] if caps else [0] * n


def _bump(counter: Counter[str], key: str, n: int) -> None:
    counter[key] += n
    if counter[key] <= 0:
        del counter[key]
