"""What the store holds, as plain rows, and the interface every store keeps (SQLite today).

The controller is the only writer; every change of a row is a compare-and-set on its version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from meso_agentless.core.pinning import Pins
from meso_agentless.core.tasks import TaskState, TaskStatus
from meso_agentless.state.deployments import DeploymentRow, VersionRow


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One attempt of one task instance, as stored."""

    id: int
    job: str
    run: int
    task: str
    index: int
    attempt: int
    host: str
    unit: str
    state: TaskState
    exit_code: int | None
    signal: int | None
    reason: str | None
    resources: dict
    ports: list[int]
    restarts: int
    since: float
    version: int
    health: str | None = None  # starting, healthy, unhealthy; None: no health checks
    created: float = 0.0  # when its intent was written
    pins: Pins | None = None  # the dedicated cores, NUMA node and devices it was given
    job_version: int = 1  # the version of the job's spec it runs
    healthy_since: float | None = None  # when its checks last turned healthy (None: not)

    def __post_init__(self) -> None:
        if type(self.state) is not TaskState:
            object.__setattr__(self, "state", TaskState(self.state))

    @property
    def status(self) -> TaskStatus:
        return TaskStatus(self.state, self.exit_code, self.signal, self.reason, self.restarts)


@dataclass(frozen=True, slots=True)
class JobRow:
    name: str
    framework: str
    type: str
    spec: dict
    inventory: str
    state: str  # active, done, failed, killed
    submitted: float
    run: int
    seq: int  # submission order
    version: int
    spec_version: int = 1  # the latest version of its spec (job_versions)


@dataclass(frozen=True, slots=True)
class Intent:
    """An attempt about to be launched: written before the launch."""

    job: str
    task: str
    index: int
    attempt: int
    host: str
    unit: str
    resources: Mapping[str, int]
    ports: tuple[int, ...] = ()
    pins: Pins | None = None
    job_version: int = 1


@dataclass(frozen=True, slots=True)
class RunRow:
    """One firing of a cron job's timer on a host: started (and how it ended) or skipped."""

    id: int
    job: str
    run: int  # the job's run (a job run again starts anew)
    task: str
    index: int
    timer: str  # the timer's unit (the attempt holding it)
    host: str
    unit: str  # the run's own unit, meso-JOB_TASK_INDEX_ATTEMPT-r<SCHEDULED> (or -t<ms>)
    seq: int  # the host's record number
    kind: str  # schedule or trigger
    scheduled: float | None  # the scheduled time it fired for (a trigger has none)
    fired: float
    state: str  # running, finished, failed, killed, skipped, lost
    exit_code: int | None
    signal: int | None
    reason: str | None
    ended: float | None
    version: int

    def to_json(self) -> dict:
        return {"unit": self.unit, "task": self.task, "index": self.index, "host": self.host,
                "timer": self.timer, "kind": self.kind, "scheduled": self.scheduled,
                "fired": self.fired, "state": self.state, "exit_code": self.exit_code,
                "signal": self.signal, "reason": self.reason, "ended": self.ended}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SchedulerRow:
    """A framework that schedules its own tasks through the API, from its offers."""

    name: str
    id: str
    failover: float  # seconds its tasks outlive its stream


class StateStore(Protocol):
    """The store's interface (state.sqlite.Store implements it)."""

    changes: int  # counts this object's writes of tasks and jobs (a read is stale once it moves)

    @property
    def identity(self) -> str: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def snapshot(self) -> AbstractContextManager[None]: ...
    def outside_writes(self) -> tuple[int, int] | None: ...
    def put_job(
        self,
        name: str,
        framework: str,
        type_: str,
        spec: dict,
        inventory: str,
        submitter: str | None = None,
    ) -> JobRow: ...
    def job(self, name: str) -> JobRow | None: ...
    def jobs(self) -> list[JobRow]: ...
    def update_job(
        self,
        job: JobRow,
        *,
        state: str | None = None,
        spec: dict | None = None,
        submitter: str | None = None,
    ) -> JobRow: ...
    def add_intents(self, intents: Iterable[Intent]) -> None: ...
    def update_task(self, row: TaskRow, status: TaskStatus) -> TaskRow | None: ...
    def drop_intent(self, row: TaskRow) -> bool: ...
    def set_health(self, row: TaskRow, health: str | None) -> TaskRow | None: ...
    def tasks(self, job: str | None = None) -> list[TaskRow]: ...
    def tasks_in(self, states: Iterable[str]) -> list[TaskRow]: ...
    def tasks_with_active(
        self, states: Iterable[str]
    ) -> tuple[list[TaskRow], dict[str, list[TaskRow]]]: ...
    def task_by_unit(self, unit: str) -> TaskRow | None: ...
    def last_attempts(self, job: str) -> dict[tuple[str, int], int]: ...
    def host_boots(self) -> dict[str, str]: ...
    def set_host_boot(self, name: str, boot: str) -> None: ...
    def drains(self) -> dict[str, float]: ...
    def set_drain(self, name: str, deadline: float | None) -> None: ...
    def framework_settings(self) -> dict[str, tuple[float | None, dict[str, int] | None]]: ...
    def set_framework(
        self, name: str, weight: float | None, quota: Mapping[str, int] | None
    ) -> None: ...
    def schedulers(self) -> dict[str, SchedulerRow]: ...
    def put_scheduler(self, row: SchedulerRow) -> None: ...
    def drop_scheduler(self, name: str) -> None: ...
    def put_run(self, run: RunRow) -> tuple[RunRow, bool]: ...
    def runs(self, job: str, limit: int = 20) -> list[RunRow]: ...
    def runs_in(self, states: Iterable[str]) -> list[RunRow]: ...
    def last_seqs(self) -> dict[str, dict[str, int]]: ...
    def run_by_unit(self, unit: str) -> RunRow | None: ...
    def record_version(self, job: str, spec: dict, submitter: str | None = None) -> int: ...
    def versions(self, job: str) -> list[VersionRow]: ...
    def job_version(self, job: str, version: int) -> VersionRow | None: ...
    def put_deployment(
        self, job: str, from_version: int, to_version: int, revert: bool = False
    ) -> DeploymentRow: ...
    def deployment(self, job: str) -> DeploymentRow | None: ...
    def active_deployments(self) -> list[DeploymentRow]: ...
    def update_deployment(
        self,
        row: DeploymentRow,
        *,
        state: str | None = None,
        promoted: bool | None = None,
        reason: str | None = None,
    ) -> DeploymentRow | None: ...
    def close(self) -> None: ...
