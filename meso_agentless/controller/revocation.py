"""The controller's side of borrowing: which running tasks are revocable, and revoking them.

A task placed on capacity guaranteed to another framework is revocable for its whole life. The
controller remembers it, and the host does too: the unit's description says "revocable" (before
the controller's mark) and the task sees MESO_REVOCABLE=1, so a restarted controller knows from
its first samples which tasks it may revoke. When a plan revokes tasks, they are stopped with
their grace period (the unit's stop timeout) and end as killed with the reason "revoked": a batch
task gets a new attempt (pending again), a service instance is replaced, neither counts as a
failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace

from meso_agentless.core import jobs as jobcore
from meso_agentless.core.model import Framework, Plan, RevocableTask
from meso_agentless.core.tasks import WATCHED, TaskState, TaskStatus
from meso_agentless.state.store import TaskRow

REVOCABLE_WORD = "revocable"  # in a revocable unit's description, before the controller's mark
ENV = "MESO_REVOCABLE"


def describe(description: str, mark: str) -> str:
    """A launch request's description, marked revocable (before the controller's mark)."""
    if mark and description.endswith(" " + mark):
        return f"{description[: -len(mark) - 1]} {REVOCABLE_WORD} {mark}"
    return f"{description} {REVOCABLE_WORD}"


class Borrowed:
    """The revocable tasks the controller knows of, and the revocations it is carrying out."""

    def __init__(self) -> None:
        self.units: set[str] = set()  # revocable units (placed so, or said so by their host)
        self.revoking: dict[str, str] = {}  # unit -> the framework it is revoked for

    def note_host(self, units: Mapping[str, Mapping | None], mark: str) -> None:
        """Learn from a host's sample which of our units are revocable."""
        ending = f" {REVOCABLE_WORD} {mark}"
        for unit, status in units.items():
            description = str((status or {}).get("description") or "")
            if description.endswith(ending):
                self.units.add(unit)

    def placed(self, unit: str) -> None:
        self.units.add(unit)

    def is_revocable(self, unit: str) -> bool:
        return unit in self.units

    def holding(
        self, frameworks: Iterable[Framework], tracked: Iterable[TaskRow],
        framework_of: Mapping[str, str],
    ) -> list[Framework]:  # fmt: skip
        """The frameworks, each with the part of its allocation held by revocable tasks."""
        held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in tracked:
            if row.state in WATCHED and row.unit in self.units and row.job in framework_of:
                for name, amount in row.resources.items():
                    held[framework_of[row.job]][name] += amount
        return [replace(f, revocable=dict(held[f.name])) if f.name in held else f
                for f in frameworks]  # fmt: skip

    def running(
        self, tracked: Iterable[TaskRow], framework_of: Mapping[str, str]
    ) -> list[RevocableTask]:
        """The revocable tasks running now, for the allocator (those being revoked marked)."""
        out = []
        for row in tracked:
            if row.state in WATCHED and row.unit in self.units and row.job in framework_of:
                out.append(RevocableTask(
                    row.job, row.task, row.index, framework_of[row.job], row.host,
                    dict(row.resources), since=row.created, stopping=row.unit in self.revoking,
                ))  # fmt: skip
        return out

    def to_revoke(
        self, plan: Plan, tracked: Iterable[TaskRow]
    ) -> dict[str, tuple[TaskRow, TaskStatus]]:
        """The plan's revocations as the rows to stop, each with how it will have ended."""
        wanted = {(r.job, r.task, r.index): r for r in plan.revocations}
        out: dict[str, tuple[TaskRow, TaskStatus]] = {}
        for row in tracked:
            revocation = wanted.get((row.job, row.task, row.index))
            if revocation is None or row.state not in WATCHED or row.unit not in self.units:
                continue
            self.revoking[row.unit] = revocation.owner
            out[row.unit] = (row, TaskStatus(TaskState.KILLED, reason=jobcore.REVOKED))
        return out

    def forget(self, live: Iterable[str]) -> None:
        """Drop what no longer runs."""
        live = set(live)
        self.units &= live
        self.revoking = {u: o for u, o in self.revoking.items() if u in live}
