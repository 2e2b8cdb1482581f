"""Revocation: give a framework below its guarantee the room that others borrowed (pure).

After a cycle's offers, a framework below its guarantee may still have tasks that fit nowhere
because others run revocable (borrowed) tasks where they would go. For each such task, in the
framework's placing order and only while it stays within its guarantee (and its limit), a host
is chosen where it fits in what is free, plus what tasks already being revoked will free, plus
what stopping the fewest borrowed tasks frees: the youngest first, then any of those found not
to be needed after all is kept. The chosen tasks are the plan's revocations; the owner's task
is placed by a later cycle, once they have stopped (it goes first then: it is below its
guarantee). Whatever cannot be made to fit this way (another framework's guaranteed tasks hold
the room) is left alone: nothing is revoked for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from meso_agentless.core.model import RevocableTask, Revocation, TaskGroup
from meso_agentless.core.resources import PORTS

if TYPE_CHECKING:
    from meso_agentless.core.allocator import Cycle
    from meso_agentless.core.lanes import HostState

MAX_CANDIDATES = 8  # hosts weighed for one task's revocations, at most
MAX_BATCH = 4  # tasks of one group a host's revocations are weighed for, at most
Wanting = tuple[str, Sequence[tuple[TaskGroup, int]]]  # framework, (group, first index left)


class _Room:
    """Per host: what borrowed tasks freed (or will) and what the owners' tasks took, virtually."""

    def __init__(self, cycle: Cycle, running: Iterable[RevocableTask]) -> None:
        self.cycle = cycle
        self.extra: dict[str, list[int]] = {}  # freed by revocations, per host
        self.extra_ports: dict[str, int] = {}
        self._running: dict[str, list[RevocableTask]] = {}
        self._victims: dict[str, list[RevocableTask]] = {}  # youngest first, made when asked
        self._potential: dict[str, list[int]] = {}  # what all of a host's victims hold
        self._vectors: dict[int, list[int]] = {}
        self.held: dict[str, dict[str, int]] = {}  # what guaranteed victims' frameworks keep
        by_host = self._running
        for task in running:
            if task.stopping:
                if task.host in cycle.by_name:
                    self.free_up(task)
                continue
            tasks = by_host.get(task.host)
            if tasks is None:
                by_host[task.host] = [task]
            else:
                tasks.append(task)

    def may_revoke(self, task: RevocableTask) -> bool:
        """Whether revoking `task` leaves its framework at or above its own guarantee (below
        it, the framework would only be owed in turn: the room would change hands for nothing)."""
        cycle = self.cycle
        guarantee = cycle.frameworks[task.framework].guarantee if (
            task.framework in cycle.frameworks) else None  # fmt: skip
        if not guarantee:
            return True
        held = self.held.get(task.framework)
        if held is None:
            sorter = cycle.sorter
            held = self.held[task.framework] = dict(
                sorter.allocated(task.framework) if sorter is not None else {}
            )
        return all(held.get(name, 0) - task.resources.get(name, 0) >= amount
                   for name, amount in guarantee.items()
                   if task.resources.get(name, 0))  # fmt: skip

    def revoked(self, task: RevocableTask) -> None:
        held = self.held.get(task.framework)
        if held is not None:
            for name, amount in task.resources.items():
                held[name] = held.get(name, 0) - amount

    def save(self) -> tuple:
        return ({k: list(v) for k, v in self.extra.items()}, dict(self.extra_ports),
                {k: list(v) for k, v in self._potential.items()},
                {k: dict(v) for k, v in self.held.items()})  # fmt: skip

    def restore(self, saved: tuple) -> None:
        self.extra, self.extra_ports, self._potential, self.held = saved

    def has_victims(self, host: str) -> bool:
        return host in self._running

    def victims(self, host: str) -> list[RevocableTask]:
        found = self._victims.get(host)
        if found is None:
            found = sorted(self._running.get(host, ()),
                           key=lambda t: (t.since, t.job, t.task, t.index),
                           reverse=True)  # fmt: skip
            self._victims[host] = found
        return found

    def potential(self, host: str) -> list[int]:
        """What all of a host's victims hold (not revoked yet), ports last."""
        held = self._potential.get(host)
        if held is None:
            held = [0] * (len(self.cycle.dims) + 1)
            for task in self._running.get(host, ()):
                for i, amount in enumerate(self.task_vector(task)):
                    held[i] += amount
                held[-1] += int(task.resources.get(PORTS, 0))
            self._potential[host] = held
        return held

    def task_vector(self, task: RevocableTask) -> list[int]:
        vec = self._vectors.get(id(task))
        if vec is None:
            vec = self._vectors[id(task)] = self.vector(task.resources)
        return vec

    def vector(self, resources: dict[str, int] | object) -> list[int]:
        get = resources.get  # type: ignore[attr-defined]
        return [get(d, 0) for d in self.cycle.dims]

    def free_up(self, task: RevocableTask, victim: bool = False) -> None:
        extra = self.extra.setdefault(task.host, [0] * len(self.cycle.dims))
        held = self.potential(task.host) if victim else None
        for i, amount in enumerate(self.task_vector(task)):
            extra[i] += amount
            if held is not None:
                held[i] -= amount
        if held is not None:
            held[-1] -= int(task.resources.get(PORTS, 0))
        self.extra_ports[task.host] = self.extra_ports.get(task.host, 0) + int(
            task.resources.get(PORTS, 0)
        )

    def available(self, host: HostState, framework: str) -> tuple[list[int], int]:
        amounts = host.available(framework)
        extra = self.extra.get(host.name)
        if extra:
            amounts = [a + e for a, e in zip(amounts, extra, strict=True)]
        return amounts, host.nports + self.extra_ports.get(host.name, 0)

    def take(self, host: str, need: list[int], ports: int) -> None:
        extra = self.extra.setdefault(host, [0] * len(need))
        for i, amount in enumerate(need):
            extra[i] -= amount
        self.extra_ports[host] = self.extra_ports.get(host, 0) - ports


def _fits(avail: list[int], ports: int, need: list[int], nports: int) -> bool:
    if ports < nports:
        return False
    for a, n in zip(avail, need):  # noqa: B905, SIM110 - the same dimensions (hot path)
        if a < n:
            return False
    return True


def _victims_for(
    avail: list[int], ports: int, need: list[int], nports: int,
    candidates: list[RevocableTask], room: _Room,
) -> list[RevocableTask] | None:  # fmt: skip
    """The fewest of `candidates` (youngest first) whose stopping makes `need` fit, or None."""
    chosen: list[tuple[RevocableTask, list[int], int]] = []
    freed, freed_ports = list(avail), ports
    for task in candidates:
        if _fits(freed, freed_ports, need, nports):
            break
        vec = room.task_vector(task)
        tports = int(task.resources.get(PORTS, 0))
        chosen.append((task, vec, tports))
        freed = [f + v for f, v in zip(freed, vec, strict=True)]
        freed_ports += tports
    if not _fits(freed, freed_ports, need, nports):
        return None
    for item in list(reversed(chosen)):  # the oldest chosen first: keep it if not needed
        _, vec, tports = item
        without = [f - v for f, v in zip(freed, vec, strict=True)]
        if _fits(without, freed_ports - tports, need, nports):
            chosen.remove(item)
            freed, freed_ports = without, freed_ports - tports
    return [task for task, _, _ in chosen]


def revoke_for_guarantees(
    cycle: Cycle,
    wanting: Sequence[Wanting],
    running: Iterable[RevocableTask],
) -> tuple[list[Revocation], dict[tuple[str, str, int], str]]:
    """Revocations that make room for the owners' waiting tasks within their guarantees, and
    for each task that will then fit, (job, task, index) -> why it waits."""
    running = list(running)
    sorter = cycle.sorter
    if sorter is None or not running or not wanting:
        return [], {}
    room = _Room(cycle, running)
    ranks: dict[tuple, dict[str, int]] = {}
    revoked: dict[tuple[str, str, int], Revocation] = {}
    waits: dict[tuple[str, str, int], str] = {}
    owners = sorted(wanting, key=lambda w: (sorter.guarantee_share(w[0]) or 0.0, w[0]))
    for framework, groups in owners:
        guarantee = cycle.frameworks[framework].guarantee or {}
        held = dict(room.held.get(framework) or sorter.allocated(framework))
        quota = cycle.frameworks[framework].quota
        used = dict(cycle.quota_used.get(framework, {}))
        for group, start in groups:
            if quota is not None and not _within(used, group.resources, quota):
                continue  # at its limit: it waits for its own tasks to end
            demand = cycle.demand(group.resources)
            if demand is None:
                continue
            need, nports = room.vector(group.resources), demand[1]
            static = tuple(c for c in group.constraints if c.is_static)
            dynamic = tuple(c for c in group.constraints if not c.is_static)
            if dynamic:
                counts = cycle.group_counts(group)
                hosts = [h for h in cycle.candidates(static)
                         if all(counts.allows(c, h) for c in dynamic)]  # fmt: skip
                rank = {h.name: i for i, h in enumerate(hosts)}
            else:
                hosts = cycle.candidates(static)
                rank = ranks.get(static) or ranks.setdefault(
                    static, {h.name: i for i, h in enumerate(hosts)}
                )
            end = group.first_index + group.count
            if not _within(held, group.resources, guarantee):
                # beyond its guarantee: nothing is revoked for it, but it takes what the
                # revocations free before the tasks they are for (as the next cycle will)
                for index in range(start, end):
                    if quota is not None and not _within(used, group.resources, quota):
                        break
                    host = _fit_freed(room, framework, need, nports, rank)
                    if host is None:
                        break
                    room.take(host, need, nports)
                    for name, amount in group.resources.items():
                        held[name] = held.get(name, 0) + amount
                        used[name] = used.get(name, 0) + amount
                    waits[(group.job, group.task, index)] = (
                        f"waiting for revocation: borrowed tasks on {host} are being stopped"
                    )
                continue
            plan: list[tuple[int, str, list[RevocableTask]]] = []
            snapshot = None
            if group.gang:  # all of a gang, or nothing for it: what to put back
                snapshot = (dict(held), dict(used), dict(revoked), dict(waits), room.save())
            for index in range(start, end):
                if not _within(held, group.resources, guarantee) or (
                    quota is not None and not _within(used, group.resources, quota)
                ):
                    break
                left = min(end - index, _times(held, group.resources, guarantee),
                           _times(used, group.resources, quota or {}))  # fmt: skip
                choice = _choose(room, hosts, framework, need, nports, revoked, left, rank)
                if choice is None:
                    break
                host, victims = choice
                for task in victims:
                    key = (task.job, task.task, task.index)
                    revoked[key] = Revocation(
                        task.job,
                        task.task,
                        task.index,
                        task.framework,
                        task.host,
                        framework,
                        f"revoked: {framework} needs its guarantee back "
                        f"(for {group.job}/{group.task}[{index}])",
                    )
                    room.free_up(task, victim=True)
                    room.revoked(task)
                room.take(host, need, nports)
                for name, amount in group.resources.items():
                    held[name] = held.get(name, 0) + amount
                    used[name] = used.get(name, 0) + amount
                plan.append((index, host, victims))
                waits[(group.job, group.task, index)] = (
                    f"waiting for revocation: borrowed tasks on {host} are being stopped"
                )
            if snapshot is not None and len(plan) < end - start:
                held, used, revoked, waits, saved = snapshot
                room.restore(saved)
    return sorted(revoked.values(), key=lambda r: (r.host, r.job, r.task, r.index)), waits


def _times(held: dict[str, int], need: object, bound: object) -> int:
    """How many times `need` fits between `held` and `bound` (in every resource it names)."""
    times = [
        (limit - held.get(name, 0)) // need.get(name, 0)  # type: ignore[attr-defined]
        for name, limit in bound.items()  # type: ignore[attr-defined]
        if need.get(name, 0)  # type: ignore[attr-defined]
    ]
    return max(0, min(times, default=1 << 30))


def _within(held: dict[str, int], need: object, bound: object) -> bool:
    """Whether `held` + `need` stays within `bound` in every resource `bound` names."""
    return all(
        held.get(name, 0) + need.get(name, 0) <= limit  # type: ignore[attr-defined]
        for name, limit in bound.items()  # type: ignore[attr-defined]
        if need.get(name, 0)  # type: ignore[attr-defined]
    )


def _fit_freed(
    room: _Room, framework: str, need: list[int], nports: int, rank: dict[str, int]
) -> str | None:
    """The first host (in the lane's order) where the task fits in what revocations free."""
    by_name = room.cycle.by_name
    for _, name in sorted((rank[n], n) for n in room.extra if n in rank):
        avail, ports = room.available(by_name[name], framework)
        if _fits(avail, ports, need, nports):
            return name
    return None


def _choose(
    room: _Room,
    hosts: list[HostState],
    framework: str,
    need: list[int],
    nports: int,
    revoked: dict[tuple[str, str, int], Revocation],
    left: int,
    rank: dict[str, int],
) -> tuple[str, list[RevocableTask]] | None:
    """A host that takes the task: one where it fits in what revocations already freed, else
    the one needing the fewest revocations per task, weighing room for 1 to MAX_BATCH of the
    `left` tasks at once (then the most tasks, the youngest victims, the binpack order; the
    search ends at a host where one revocation makes room for all, or after MAX_CANDIDATES
    hosts that could do), and those revocations."""
    found = _fit_freed(room, framework, need, nports, rank)
    if found is not None:  # room freed already (by tasks being revoked): nothing more to revoke
        return found, []
    best: tuple[tuple, str, tuple] | None = None
    seen = 0
    for rank, host in enumerate(hosts):
        if not room.has_victims(host.name):
            continue
        potential = room.potential(host.name)
        avail, ports = room.available(host, framework)
        upper = [a + p for a, p in zip(avail, potential, strict=False)]
        if not _fits(upper, ports + potential[-1], need, nports):
            continue  # even revoking all of it would not do
        candidates = [
            t for t in room.victims(host.name)
            if t.framework != framework and (t.job, t.task, t.index) not in revoked
            and room.may_revoke(t)
        ]  # fmt: skip
        if not candidates:
            continue
        seen += 1
        # the youngest-first prefix that makes room for k of the tasks, k = 1, 2, ...
        freed, freed_ports, length = list(avail), ports, 0
        for k in range(1, min(left, MAX_BATCH) + 1):
            wanted, wanted_ports = [n * k for n in need], nports * k
            while not _fits(freed, freed_ports, wanted, wanted_ports) and length < len(candidates):
                task = candidates[length]
                freed = [f + v for f, v in zip(freed, room.task_vector(task), strict=True)]
                freed_ports += int(task.resources.get(PORTS, 0))
                length += 1
            if not _fits(freed, freed_ports, wanted, wanted_ports):
                break
            if length:
                score = (length / k, -k, -candidates[length - 1].since, rank)
                if best is None or score < best[0]:
                    best = (score, host.name, (avail, ports, wanted, wanted_ports,
                                               candidates[:length]))  # fmt: skip
        if (best is not None and best[0][0] * min(left, MAX_BATCH) <= 1) or seen >= MAX_CANDIDATES:
            break
    if best is None:
        return None
    avail, ports, wanted, wanted_ports, prefix = best[2]
    victims = _victims_for(avail, ports, wanted, wanted_ports, prefix, room)
    return best[1], victims or []
