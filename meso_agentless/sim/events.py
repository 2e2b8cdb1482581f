"""The discrete-event engine: submissions and task ends in simulated time, allocation cycles by
the real `meso_agentless.core.allocator.allocate` between them. No clock, no sleep, no I/O.

At each instant something happens (or at each tick of `interval_ms`, when given, as the
controller's loop does), tasks that end give back their resources, new rows join their
framework's queue in submission order, and one allocation cycle places what it can. A task
placed runs for exactly its duration; a service runs until the end of the trace (the last
instant anything else happens). What is still waiting when nothing is left to happen is
unplaced, with the allocator's reason.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import (
    HOSTNAME,
    Constraint,
    Framework,
    Host,
    TaskGroup,
    Unplaced,
)
from meso_agentless.core.offers import JobScheduler
from meso_agentless.core.resources import PORTS
from meso_agentless.sim import partition
from meso_agentless.sim.trace import TraceRow


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One instance that ran: row (index into Run.rows), instance index, host, start, end."""

    row: int
    index: int
    host: str
    start_ms: int
    end_ms: int


@dataclass
class Run:
    """What happened in one simulation.

    `times` are the instants the allocation changed; `used[d][i]` is what tasks held of
    dimension d from times[i] to times[i + 1] (or to end_ms); `held[f][i]` the same per
    framework (its dominant share is computed from it and `capacity`).
    """

    mode: str
    rows: Sequence[TraceRow]
    capacity: dict[str, int]
    hosts: int
    start_ms: int
    end_ms: int
    tasks: list[TaskRun]
    unplaced: list[tuple[int, int, str]]  # (row, instances, reason)
    times: list[int] = field(default_factory=list)
    used: dict[str, list[int]] = field(default_factory=dict)
    held: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    cycles: int = 0
    owners: dict[str, str] | None = None  # static: host -> framework


def simulate(
    rows: Sequence[TraceRow],
    hosts: Sequence[Host],
    frameworks: Sequence[Framework] = (),
    *,
    mode: str = "shared",
    interval_ms: int = 0,
) -> Run:
    """Replay `rows` (sorted by TraceRow.key) on `hosts`; mode "shared" or "static"."""
    return _Engine(rows, hosts, frameworks, mode, interval_ms).run()


class _Queue(JobScheduler):
    """The built-in scheduler; what waits is not explained each cycle (only at the end)."""

    def unplaced(self, explain: Callable[[TaskGroup], str]) -> list[Unplaced]:
        return []


class _Engine:
    def __init__(
        self,
        rows: Sequence[TraceRow],
        hosts: Sequence[Host],
        frameworks: Sequence[Framework],
        mode: str,
        interval_ms: int,
    ) -> None:
        self.rows = list(rows)
        self.interval = interval_ms
        self.mode = mode
        self.frameworks = {f.name: f for f in frameworks}
        names = sorted({r.framework for r in self.rows})
        for name in names:
            self.frameworks.setdefault(name, Framework(name))
        self.owners: dict[str, str] | None = None
        extra: dict[str, tuple[Constraint, ...]] = {}
        if mode == "static":
            self.owners = partition.assign(hosts, names, self.frameworks)
            hosts = partition.mark(hosts, self.owners)
            extra = {n: (Constraint("eq", partition.PARTITION, n),) for n in names}
        self.uses_ports = any(PORTS in r.resources for r in self.rows)
        self.hosts = {h.name: h if self.uses_ports else replace(h, ports=()) for h in hosts}
        self.used = {name: dict(h.used) for name, h in self.hosts.items()}
        self.used_ports: dict[str, set[int]] = {name: set() for name in self.hosts}
        self.ports_of: dict[tuple[int, str], list[tuple[int, ...]]] = {}
        self.by_fw_on: dict[str, dict[str, dict[str, int]]] = {}  # reserving hosts only
        self.dirty = set(self.hosts)
        self.capacity: dict[str, int] = Counter()
        for h in hosts:
            for d, amount in h.capacity.items():
                if d != PORTS:
                    self.capacity[d] += amount
        self.capacity = dict(self.capacity)
        self.groups = [
            TaskGroup(
                job=r.job,
                task=r.task,
                framework=r.framework,
                count=r.count,
                resources=r.resources,
                constraints=r.constraints + extra.get(r.framework, ()),
                order=i,
                gang=r.gang,
            )
            for i, r in enumerate(self.rows)
        ]
        self.row_of = {(r.framework, r.job, r.task): i for i, r in enumerate(self.rows)}
        dynamic = [any(not c.is_static for c in g.constraints) for g in self.groups]
        self.dynamic = dynamic
        self.per_attr = [
            any(not c.is_static and c.attribute != HOSTNAME for c in g.constraints)
            for g in self.groups
        ]
        self.running: dict[int, Counter[str]] = {i: Counter() for i, d in enumerate(dynamic) if d}
        self.held = {n: Counter() for n in names}
        self.pending: dict[str, list[int]] = {n: [] for n in names}  # rows, submission order
        self.next_index = [0] * len(self.rows)
        self.ends: list[tuple[int, int, int, int, str]] = []  # (end, seq, row, index, host)
        self.started: dict[tuple[int, int], tuple[str, int]] = {}  # services: -> (host, start)
        self.tasks: list[TaskRun] = []
        self.seq = 0
        self.cycles = 0
        dims = sorted(self.capacity)
        self.series_t: list[int] = []
        self.series_used: dict[str, list[int]] = {d: [] for d in dims}
        self.series_held: dict[str, dict[str, list[int]]] = {
            n: {d: [] for d in dims} for n in names
        }
        self.total_used = Counter()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Run:
        rows, n = self.rows, len(self.rows)
        start = rows[0].submit_ms if rows else 0
        t, i = start, 0
        changed = False  # since the last cycle
        while True:
            while self.ends and self.ends[0][0] <= t:
                end, _, row, index, host = heapq.heappop(self.ends)
                self._release(row, host)
                self.tasks.append(TaskRun(row, index, host, end - rows[row].duration_ms, end))  # type: ignore[operator]
                changed = True
            while i < n and rows[i].submit_ms <= t:
                self.pending[rows[i].framework].append(i)
                changed = True
                i += 1
            waiting = any(self.pending.values())
            if waiting and changed and (not self.interval or t % self.interval == 0):
                self._cycle(t)
                changed = False
            self._record(t)
            later = []
            if self.ends:
                later.append(self.ends[0][0])
            if i < n:
                later.append(rows[i].submit_ms)
            if waiting and changed and self.interval:
                later.append((t // self.interval + 1) * self.interval)
            if not later:
                break
            t = min(later)
        end = t
        unplaced = self._unplaced()  # while the services still hold what they hold
        for (row, index), (host, began) in sorted(self.started.items()):
            self.tasks.append(TaskRun(row, index, host, began, end))
            self._release(row, host)
        self._record(end)
        return Run(
            mode=self.mode,
            rows=rows,
            capacity=self.capacity,
            hosts=len(self.hosts),
            start_ms=start,
            end_ms=end,
            tasks=sorted(self.tasks, key=lambda r: (r.start_ms, r.row, r.index)),
            unplaced=unplaced,
            times=self.series_t,
            used=self.series_used,
            held=self.series_held,
            cycles=self.cycles,
            owners=self.owners,
        )

    def _record(self, t: int) -> None:
        if self.series_t and self.series_t[-1] == t:
            for series in self.series_used.values():
                series.pop()
            for per in self.series_held.values():
                for series in per.values():
                    series.pop()
            self.series_t.pop()
        self.series_t.append(t)
        for d, series in self.series_used.items():
            series.append(self.total_used[d])
        for name, per in self.series_held.items():
            held = self.held[name]
            for d, series in per.items():
                series.append(held[d])

    # -- one allocation cycle ------------------------------------------------------------------

    def _cycle(self, t: int) -> None:
        self.cycles += 1
        groups: dict[str, list[TaskGroup]] = {}
        smallest: dict[str, int] | None = None
        exact = False  # every host must be given (counts per attribute value)
        for name, queue in self.pending.items():
            if not queue:
                continue
            out = groups[name] = []
            for row in queue:
                group, first = self.groups[row], self.next_index[row]
                if first or self.dynamic[row]:
                    group = replace(
                        group,
                        count=group.count - first,
                        first_index=first,
                        running=self.running.get(row, {}),
                    )
                out.append(group)
                exact = exact or self.per_attr[row]
                need = group.resources
                if smallest is None:
                    smallest = {d: need.get(d, 0) for d in self.capacity}
                else:
                    for d in smallest:
                        smallest[d] = min(smallest[d], need.get(d, 0))
        hosts = self._hosts(None if exact else smallest)
        frameworks = [
            replace(fw, allocated=dict(self.held[name])) if name in self.held else fw
            for name, fw in self.frameworks.items()
        ]
        schedulers = [_Queue(name, gs) for name, gs in sorted(groups.items())]
        plan = allocate(hosts, frameworks, schedulers, total=self.capacity)
        for p in plan.placements:
            row = self.row_of[(p.framework, p.job, p.task)]
            self._take(row, p.host, p.ports)
            self.next_index[row] = max(self.next_index[row], p.index + 1)
            duration = self.rows[row].duration_ms
            if duration is None:
                self.started[(row, p.index)] = (p.host, t)
            else:
                heapq.heappush(self.ends, (t + duration, self.seq, row, p.index, p.host))
                self.seq += 1
        for queue in self.pending.values():
            queue[:] = [r for r in queue if self.next_index[r] < self.rows[r].count]

    def _hosts(self, smallest: Mapping[str, int] | None) -> list[Host]:
        """The hosts as the allocator sees them now; only those with room for the smallest
        pending task when `smallest` is given (the others could take nothing)."""
        for name in self.dirty:
            base = self.hosts[name]
            used = {d: a for d, a in self.used[name].items() if a}
            used_reserved = {}
            if base.reservations:
                mine = self.by_fw_on.get(name, {})
                for fw, amounts in base.reservations.items():
                    taken = {d: min(a, mine.get(fw, {}).get(d, 0)) for d, a in amounts.items()}
                    used_reserved[fw] = taken
            self.hosts[name] = replace(
                base, used=used, used_reserved=used_reserved,
                used_ports=frozenset(self.used_ports[name]),
            )  # fmt: skip
        self.dirty.clear()
        if smallest is None:
            return list(self.hosts.values())
        out = []
        for name, host in self.hosts.items():
            used = self.used[name]
            capacity = host.capacity
            if all(capacity.get(d, 0) - used.get(d, 0) >= need for d, need in smallest.items()):
                out.append(host)
        return out

    def _take(self, row: int, host: str, ports: Sequence[int]) -> None:
        self._change(row, host, 1)
        if ports:
            self.used_ports[host].update(ports)
            self.ports_of.setdefault((row, host), []).append(tuple(ports))

    def _release(self, row: int, host: str) -> None:
        self._change(row, host, -1)
        if self.uses_ports:
            taken = self.ports_of.get((row, host))
            if taken:
                self.used_ports[host].difference_update(taken.pop())

    def _change(self, row: int, host: str, sign: int) -> None:
        r = self.rows[row]
        used, held = self.used[host], self.held[r.framework]
        for d, amount in r.resources.items():
            if d == PORTS:
                continue
            used[d] = used.get(d, 0) + sign * amount
            held[d] += sign * amount
            self.total_used[d] += sign * amount
        if self.hosts[host].reservations:
            mine = self.by_fw_on.setdefault(host, {}).setdefault(r.framework, Counter())
            for d, amount in r.resources.items():
                mine[d] += sign * amount
        if row in self.running:
            self.running[row][host] += sign
            if not self.running[row][host]:
                del self.running[row][host]
        self.dirty.add(host)

    def _unplaced(self) -> list[tuple[int, int, str]]:
        """What still waits, with the reason a cycle on every host gives now."""
        left = [r for queue in self.pending.values() for r in queue]
        if not left:
            return []
        hosts = self._hosts(None)
        groups: dict[str, list[TaskGroup]] = {}
        for row in sorted(left):
            first = self.next_index[row]
            group = replace(self.groups[row], count=self.rows[row].count - first,
                            first_index=first, running=self.running.get(row, {}))  # fmt: skip
            groups.setdefault(group.framework, []).append(group)
        frameworks = [replace(fw, allocated=dict(self.held.get(name, {})))
                      for name, fw in self.frameworks.items()]  # fmt: skip
        plan = allocate(hosts, frameworks, [JobScheduler(n, g) for n, g in sorted(groups.items())],
                        total=self.capacity)  # fmt: skip
        reasons = {self.row_of[(u.framework, u.job, u.task)]: u.reason for u in plan.unplaced}
        out = []
        for row in sorted(left):
            reason = reasons.get(row, "still waiting when the trace ended")
            out.append((row, self.rows[row].count - self.next_index[row], reason))
        return out
