"""Mesos-style offers: the interface a framework's own scheduler implements.

In each round of the allocation cycle the framework furthest below its weighted fair share is
offered what every host can give it (its reservations included, its quota respected). Its
scheduler answers with one task launch, or declines (optionally refusing hosts for a while).
Launching one task per round is what keeps the cycle fair: no framework can hoard a host.
A scheduler that wants nothing says so with `wants_offers()` (suppress) until it wants again
(revive).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from meso_agentless.core.model import Filter, Placement, TaskGroup, Unplaced
from meso_agentless.core.resources import (
    CPUS,
    MEM,
    PORTS,
    PortRanges,
    Resources,
    count_ports,
    format_quantity,
    remove_ports,
    take_ports,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Offer:
    """What one host can give one framework right now."""

    host: str
    attributes: Mapping[str, str]
    resources: Resources  # free unreserved + the framework's own reservation, within its quota
    ports: PortRanges


@dataclass(frozen=True, slots=True)
class Launch:
    """Run one task on one offered host. `group`, when set, is the task group it belongs to."""

    host: str
    job: str
    task: str
    index: int
    resources: Resources
    group: TaskGroup | None = None


@dataclass(frozen=True, slots=True)
class GangLaunch:
    """Run every one of `launches` (instances of one gang task group) at once, or none."""

    launches: tuple[Launch, ...]

    @property
    def group(self) -> TaskGroup | None:
        return self.launches[0].group if self.launches else None


@dataclass(frozen=True, slots=True)
class Decline:
    """Take nothing more this cycle; refuse `hosts` (None: all) for `refuse_seconds`."""

    refuse_seconds: float = 0.0
    hosts: tuple[str, ...] | None = None


class Offers(Protocol):
    """The offers made to one framework in one round."""

    framework: str

    def __iter__(self) -> Iterator[Offer]: ...

    @property
    def headroom(self) -> Resources | None:
        """What the framework may take before another framework's turn (DRF: up to the next
        lowest weighted share); None: no other framework wants any."""
        ...

    def find(self, group: TaskGroup) -> Offer | None:
        """The offer of the host the cycle's strategy picks for one instance of `group`."""
        ...

    def pick(self, group: TaskGroup) -> str | None:
        """Like find, but only the host's name (cheaper: no offer is built)."""
        ...

    def pick_all(self, group: TaskGroup, count: int) -> list[str] | str:
        """Hosts for `count` instances of `group` at once (a gang), or why they do not fit."""
        ...


def revive(filters: Iterable[Filter], framework: str) -> tuple[Filter, ...]:
    """What a framework's revive does: its refusals are forgotten, it is offered everything."""
    return tuple(f for f in filters if f.framework != framework)


class Scheduler(ABC):
    """A framework's scheduler. Subclass it to bring your own; JobScheduler runs meso jobs."""

    framework: str

    def wants_offers(self) -> bool:
        """False suppresses offers to this framework (nothing pending)."""
        return True

    @abstractmethod
    def resource_offers(self, offers: Offers) -> Launch | GangLaunch | Decline:
        """Answer one round of offers with one launch (or one gang of launches), or decline."""

    def launched(self, placement: Placement) -> None:  # noqa: B027 - optional hook
        """The cycle accepted a launch."""

    def rejected(self, launch: Launch | GangLaunch, reason: str) -> None:  # noqa: B027
        """The cycle refused a launch (the host could not give what it asked)."""

    def unplaced(self, explain: Callable[[TaskGroup], str]) -> list[Unplaced]:
        """At the end of the cycle: the tasks it could not place, each with the reason."""
        return []

    def waiting(self) -> list[tuple[TaskGroup, int]]:
        """Groups with instances left unplaced for want of room: (group, first index left).
        For a framework below its guarantee, the cycle revokes borrowed tasks to make room."""
        return []


class JobScheduler(Scheduler):
    """The built-in scheduler for batch and service jobs: place every instance of every group.

    Groups go by priority, then submission order. When one instance of a group fits nowhere,
    neither does any later one of that group in this cycle (free resources only shrink), so the
    rest of the group is reported unplaced with the reason and the next group is tried. A gang
    group's pending instances are launched together in one round, or none of them (with the
    reason). A group or job at its `max_running` cap waits, with the reason.
    """

    def __init__(self, framework: str, groups: list[TaskGroup]) -> None:
        self.framework = framework
        self._groups = sorted(groups, key=lambda g: g.sort_key)
        self._count = len(self._groups)
        self._current = 0
        # the index of the instance of next_group() to place next
        self.next_index = self._groups[0].first_index if self._groups else 0
        # (group, first index left, reason or None: explain it, whether a revocation can help)
        self._failed: list[tuple[TaskGroup, int, str | None, bool]] = []
        # placed in this cycle per group and per job, counted only for the caps
        self._placed_group: dict[tuple[str, str], int] = {}
        self._placed_job: dict[str, int] = {}
        self._capped = any(
            g.max_running is not None or g.job_max_running is not None for g in self._groups
        )

    def wants_offers(self) -> bool:
        return self._current < self._count

    def resource_offers(self, offers: Offers) -> Launch | GangLaunch | Decline:
        while (group := self.next_group()) is not None:
            start, end = self.next_index, group.first_index + group.count
            if group.gang:
                hosts = offers.pick_all(group, end - start)
                if not isinstance(hosts, str):
                    return GangLaunch(tuple(
                        Launch(host, group.job, group.task, start + i, group.resources, group)
                        for i, host in enumerate(hosts)
                    ))  # fmt: skip
                self._failed.append((group, start, hosts, True))
                self._advance()
                continue
            host = offers.pick(group)
            if host is not None:
                return Launch(host, group.job, group.task, start, group.resources, group)
            self.no_room(group)
        return Decline()

    def next_group(self) -> TaskGroup | None:
        """The group whose next instance (`next_index`) this round tries to place: past the
        groups placed in full and those at their caps (reported with the reason); None: all
        done."""
        while self._current < self._count:
            group = self._groups[self._current]
            start, end = self.next_index, group.first_index + group.count
            if start >= end:
                self._advance()
                continue
            if group.max_running is not None or group.job_max_running is not None:
                capped = self.cap_reason(group, end - start if group.gang else 1)
                if capped is not None:
                    self._failed.append((group, start, capped, False))
                    self._advance()
                    continue
            return group
        return None

    def no_room(self, group: TaskGroup) -> None:
        """No host takes the group's next instance: neither does any later one in this cycle
        (free resources only shrink); they are reported unplaced, explained at the end."""
        self._failed.append((group, self.next_index, None, True))
        self._advance()

    def cap_reason(self, group: TaskGroup, wanted: int = 1) -> str | None:
        """Why `wanted` more instances of `group` may not start now (its caps), or None."""
        if group.max_running is not None:
            running = group.running_count + self._placed_group.get((group.job, group.task), 0)
            if running + wanted > group.max_running:
                return (f"cap reached: {group.job}/{group.task} runs at most "
                        f"{group.max_running} at once ({running} running)")  # fmt: skip
        if group.job_max_running is not None:
            running = group.job_running + self._placed_job.get(group.job, 0)
            if running + wanted > group.job_max_running:
                return (f"cap reached: job {group.job} runs at most {group.job_max_running} "
                        f"at once ({running} running)")  # fmt: skip
        return None

    def launched(self, placement: Placement) -> None:
        self.placed(placement)

    def placed(self, placement: Placement) -> bool:
        """launched(), and whether it still wants offers (wants_offers())."""
        self.next_index += 1
        if self._capped:
            key = (placement.job, placement.task)
            self._placed_group[key] = self._placed_group.get(key, 0) + 1
            self._placed_job[placement.job] = self._placed_job.get(placement.job, 0) + 1
        group = self._groups[self._current]
        if self.next_index >= group.first_index + group.count:
            self._advance()  # its last instance: wants_offers() can say at once if that was all
        return self._current < self._count

    def rejected(self, launch: Launch | GangLaunch, reason: str) -> None:
        if isinstance(launch, GangLaunch):
            if launch.group is not None:
                self._failed.append((launch.group, launch.launches[0].index, reason, True))
                self._advance()
        elif launch.group is not None:
            self._failed.append((launch.group, launch.index, None, True))
            self._advance()

    def unplaced(self, explain: Callable[[TaskGroup], str]) -> list[Unplaced]:
        out = []
        for group, start, why, _ in self._failed:
            reason = why or explain(group)
            end = group.first_index + group.count
            out += [
                Unplaced(group.job, group.task, i, self.framework, reason)
                for i in range(start, end)
            ]
        return out

    def waiting(self) -> list[tuple[TaskGroup, int]]:
        """Groups with instances left unplaced for want of room (not caps), in placing order:
        (group, first index left). What a revocation could make room for."""
        return [(group, start) for group, start, _, room in self._failed if room]

    def _advance(self) -> None:
        self._current += 1
        if self._current < self._count:
            self.next_index = self._groups[self._current].first_index


# -- frameworks that schedule their own tasks (over the API) --------------------------------------

MIN_OFFER = {CPUS: 10, MEM: 32 << 20}  # Mesos' smallest offer: 0.01 CPUs and 32 MiB
QUANTUM = {CPUS: 250, MEM: 256 << 20}  # a slice before a framework has launched anything
WHOLE_OFFER = ""  # the job name of an OfferTaker's placements: a whole offer, no task yet


class OfferTaker(Scheduler):
    """A framework outside the controller. Each round it takes from one host (one it holds no
    offer on yet) what DRF lets it have before another framework's turn, but at least a
    `quantum` (the size of its own tasks, so that its share can follow the others' to within
    one task); alone, it takes whole hosts, as Mesos offers whole agents. What it took on each
    host becomes one offer, which the controller sends; the framework launches on it what it
    chooses and the rest goes back to the pool. Held offers count in its DRF share."""

    def __init__(
        self, framework: str, holding: Iterable[str] = (), quantum: Resources = QUANTUM
    ) -> None:
        self.framework = framework
        self.quantum = {k: max(quantum.get(k, 0), least) for k, least in MIN_OFFER.items()}
        self.quantum.update({k: a for k, a in quantum.items() if k not in MIN_OFFER and a})
        self.taken: dict[str, Offer] = {}  # host -> all it took there in this cycle
        self._holding = set(holding)
        self._wants = True
        self._pending: Offer | None = None

    def wants_offers(self) -> bool:
        return self._wants

    def resource_offers(self, offers: Offers) -> Launch | Decline:
        limit = offers.headroom
        for offer in offers:
            if offer.host in self._holding or not _at_least(offer.resources, MIN_OFFER):
                continue
            take = dict(offer.resources) if limit is None else self._slice(offer, limit)
            self._pending = offer
            return Launch(offer.host, WHOLE_OFFER, WHOLE_OFFER, len(self.taken), take)
        self._wants = False
        return Decline()

    def _slice(self, offer: Offer, limit: Resources) -> dict[str, int]:
        """Whole quanta (at least one) up to what DRF lets it take now."""
        quantum = self.quantum
        times = min(limit.get(k, 0) // a for k, a in quantum.items() if a)
        return {k: min(offer.resources[k], max(1, times) * a)
                for k, a in quantum.items() if k in offer.resources}  # fmt: skip

    def launched(self, placement: Placement) -> None:
        offer = self._pending
        assert offer is not None  # noqa: S101 - launched() follows our own Launch
        before = self.taken[offer.host].resources if offer.host in self.taken else {}
        merged = dict(before)
        for name, amount in placement.resources.items():
            merged[name] = merged.get(name, 0) + amount
        self.taken[offer.host] = Offer(offer.host, offer.attributes, merged, offer.ports)


def _at_least(resources: Resources, least: Resources) -> bool:
    return all(resources.get(name, 0) >= amount for name, amount in least.items())


def over_offer(offered: Resources, asked: Iterable[Resources]) -> str | None:
    """Why tasks asking `asked` do not fit in what the offers hold (None: they fit)."""
    total: dict[str, int] = {}
    for resources in asked:
        for name, amount in resources.items():
            if name != PORTS:
                total[name] = total.get(name, 0) + amount
    for name, amount in sorted(total.items()):
        if amount > offered.get(name, 0):
            return (f"{name}: the tasks ask {format_quantity(name, amount)}, the offers hold "
                    f"{format_quantity(name, offered.get(name, 0))}")  # fmt: skip
    return None


def choose_ports(
    offered: PortRanges, wanted: Iterable[tuple[list[int] | None, int]]
) -> list[list[int]] | str:
    """Ports for each task from the offered ranges: the ones it names, or its count of the
    lowest left; or why not."""
    wanted = list(wanted)
    named = [p for ports, _ in wanted for p in ports or ()]
    duplicate = next((p for p in named if named.count(p) > 1), None)
    if duplicate is not None:
        return f"port {duplicate} is asked for twice"
    left = offered
    for port in named:
        if not any(begin <= port <= end for begin, end in left):
            return f"port {port} is not in the offers"
    left = remove_ports(left, named)
    out = []
    for ports, count in wanted:
        if ports is not None:
            out.append(list(ports))
            continue
        if count > count_ports(left):
            return f"ports: the tasks ask {count} more, the offers hold {count_ports(left)}"
        taken, left = take_ports(left, count)
        out.append(taken)
    return out
