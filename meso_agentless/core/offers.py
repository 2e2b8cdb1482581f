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
from meso_agentless.core.resources import PortRanges, Resources

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


class JobScheduler(Scheduler):
    """The built-in scheduler for batch and service jobs: place every instance of every group.

    Groups go in submission order. When one instance of a group fits nowhere, neither does any
    later one of that group in this cycle (free resources only shrink), so the rest of the group
    is reported unplaced with the reason and the next group is tried. A gang group's pending
    instances are launched together in one round, or none of them (with the reason).
    """

    def __init__(self, framework: str, groups: list[TaskGroup]) -> None:
        self.framework = framework
        self._groups = sorted(groups, key=lambda g: g.sort_key)
        self._current = 0
        self._next_index = self._groups[0].first_index if self._groups else 0
        self._failed: list[tuple[TaskGroup, int, str | None]] = []

    def wants_offers(self) -> bool:
        return self._current < len(self._groups)

    def resource_offers(self, offers: Offers) -> Launch | GangLaunch | Decline:
        while self._current < len(self._groups):
            group = self._groups[self._current]
            start, end = self._next_index, group.first_index + group.count
            if start >= end:
                self._advance()
                continue
            if group.gang:
                hosts = offers.pick_all(group, end - start)
                if not isinstance(hosts, str):
                    return GangLaunch(tuple(
                        Launch(host, group.job, group.task, start + i, group.resources, group)
                        for i, host in enumerate(hosts)
                    ))  # fmt: skip
                self._failed.append((group, start, hosts))
                self._advance()
                continue
            host = offers.pick(group)
            if host is not None:
                return Launch(host, group.job, group.task, start, group.resources, group)
            self._failed.append((group, start, None))
            self._advance()
        return Decline()

    def launched(self, placement: Placement) -> None:
        self._next_index += 1

    def rejected(self, launch: Launch | GangLaunch, reason: str) -> None:
        if isinstance(launch, GangLaunch):
            if launch.group is not None:
                self._failed.append((launch.group, launch.launches[0].index, reason))
                self._advance()
        elif launch.group is not None:
            self._failed.append((launch.group, launch.index, None))
            self._advance()

    def unplaced(self, explain: Callable[[TaskGroup], str]) -> list[Unplaced]:
        out = []
        for group, start, why in self._failed:
            reason = why or explain(group)
            end = group.first_index + group.count
            out += [
                Unplaced(group.job, group.task, i, self.framework, reason)
                for i in range(start, end)
            ]
        return out

    def _advance(self) -> None:
        self._current += 1
        if self._current < len(self._groups):
            self._next_index = self._groups[self._current].first_index
