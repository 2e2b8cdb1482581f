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

Wanting = tuple[str, Sequence[tuple[TaskGroup, int]]]  # framework, (group, first index left)


class _Room:
    """Per host: what borrowed tasks freed (or will) and what the owners' tasks took, virtually."""

    def __init__(self, cycle: Cycle, running: Iterable[RevocableTask]) -> None:
        self.cycle = cycle
        self.extra: dict[str, list[int]] = {}  # freed by revocations, per host
        self.extra_ports: dict[str, int] = {}
        self.victims: dict[str, list[RevocableTask]] = {}  # youngest first
        for task in running:
            if task.host not in cycle.by_name:
                continue
            if task.stopping:
                self.free_up(task)
            else:
                self.victims.setdefault(task.host, []).append(task)
        for tasks in self.victims.values():
            tasks.sort(key=lambda t: (-t.since, t.job, t.task, t.index))

    def vector(self, resources: dict[str, int] | object) -> list[int]:
        get = resources.get  # type: ignore[attr-defined]
        return [get(d, 0) for d in self.cycle.dims]

    def free_up(self, task: RevocableTask) -> None:
        extra = self.extra.setdefault(task.host, [0] * len(self.cycle.dims))
        for i, amount in enumerate(self.vector(task.resources)):
            extra[i] += amount
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
    return ports >= nports and all(a >= n for a, n in zip(avail, need, strict=True))


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
        vec = room.vector(task.resources)
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
    revoked: dict[tuple[str, str, int], Revocation] = {}
    waits: dict[tuple[str, str, int], str] = {}
    owners = sorted(wanting, key=lambda w: (sorter.guarantee_share(w[0]) or 0.0, w[0]))
    for framework, groups in owners:
        guarantee = cycle.frameworks[framework].guarantee or {}
        held = dict(sorter.allocated(framework))
        quota = cycle.frameworks[framework].quota
        used = dict(cycle.quota_used.get(framework, {}))
        for group, start in groups:
            if not _within(held, group.resources, guarantee) or (
                quota is not None and not _within(used, group.resources, quota)
            ):
                break  # beyond its guarantee (or limit): nothing is revoked for it
            demand = cycle.demand(group.resources)
            if demand is None:
                continue
            need, nports = room.vector(group.resources), demand[1]
            static = tuple(c for c in group.constraints if c.is_static)
            dynamic = tuple(c for c in group.constraints if not c.is_static)
            counts = cycle.group_counts(group) if dynamic else None
            hosts = [
                h for h in cycle.candidates(static)
                if counts is None or all(counts.allows(c, h) for c in dynamic)
            ]  # fmt: skip
            plan: list[tuple[int, str, list[RevocableTask]]] = []
            snapshot = (dict(held), dict(used), {k: list(v) for k, v in room.extra.items()},
                        dict(room.extra_ports), dict(revoked), dict(waits))  # fmt: skip
            end = group.first_index + group.count
            for index in range(start, end):
                if not _within(held, group.resources, guarantee) or (
                    quota is not None and not _within(used, group.resources, quota)
                ):
                    break
                choice = _choose(room, hosts, framework, need, nports, revoked, end - index)
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
                    room.free_up(task)
                room.take(host, need, nports)
                for name, amount in group.resources.items():
                    held[name] = held.get(name, 0) + amount
                    used[name] = used.get(name, 0) + amount
                plan.append((index, host, victims))
                waits[(group.job, group.task, index)] = (
                    f"waiting for revocation: borrowed tasks on {host} are being stopped"
                )
            if group.gang and len(plan) < end - start:  # all of a gang, or nothing for it
                held, used, extra, ports, revoked, waits = snapshot
                room.extra, room.extra_ports = extra, ports
    return sorted(revoked.values(), key=lambda r: (r.host, r.job, r.task, r.index)), waits


def _within(held: dict[str, int], need: object, bound: object) -> bool:
    """Whether `held` + `need` stays within `bound` in every resource `bound` names."""
    return all(
        held.get(name, 0) + need.get(name, 0) <= limit  # type: ignore[attr-defined]
        for name, limit in bound.items()  # type: ignore[attr-defined]
        if need.get(name, 0)  # type: ignore[attr-defined]
    )


def _choose(
    room: _Room,
    hosts: list[HostState],
    framework: str,
    need: list[int],
    nports: int,
    revoked: dict[tuple[str, str, int], Revocation],
    left: int,
) -> tuple[str, list[RevocableTask]] | None:
    """The host that takes the task with the fewest revocations per task of the `left` ones it
    then has room for (then the youngest victims, then the binpack order), and those."""
    best: tuple[tuple, str, list[RevocableTask]] | None = None
    for rank, host in enumerate(hosts):
        avail, ports = room.available(host, framework)
        if _fits(avail, ports, need, nports):
            return host.name, []
        candidates = [
            t for t in room.victims.get(host.name, ())
            if t.framework != framework and (t.job, t.task, t.index) not in revoked
        ]  # fmt: skip
        if not candidates:
            continue
        victims = _victims_for(avail, ports, need, nports, candidates, room)
        if victims:
            freed = list(avail)
            for task in victims:
                freed = [f + v for f, v in zip(freed, room.vector(task.resources), strict=True)]
            room_for = min([left] + [f // n for f, n in zip(freed, need, strict=True) if n])
            score = (len(victims) / max(1, room_for), -min(t.since for t in victims), rank)
            if best is None or score < best[0]:
                best = (score, host.name, victims)
    return None if best is None else (best[1], best[2])
