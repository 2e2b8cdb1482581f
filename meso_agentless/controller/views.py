"""What the API answers and the CLI prints: one set of pydantic models for both.

cpus are in CPUs, sizes in bytes, times are Unix seconds. The embedded CLI builds the same
models from the same service calls, so its output is the controller's, field for field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when first used


Amounts = dict[str, float | int]


class TaskView(View):
    task: str
    index: int
    attempt: int
    host: str
    unit: str
    state: str
    exit_code: int | None
    signal: int | None
    reason: str | None
    restarts: int
    since: float
    resources: Amounts
    ports: list[int]
    health: str | None  # starting, healthy, unhealthy; None: no health checks
    revocable: bool = False  # on capacity borrowed from another framework's guarantee
    job_version: int = 1  # the version of the job's spec it runs


class UnplacedView(View):
    task: str
    index: int
    reason: str


class OutcomeView(View):
    """How the job stands for `meso run`: 0 done or up, 1 failed or killed, 3 cannot be placed;
    `version` is the job version it was worked out for."""

    code: int
    message: str
    version: int


class RunView(View):
    """One firing of a cron job's timer: started (and how it ended) or skipped, and why."""

    unit: str  # the run's own unit (`meso logs JOB --run UNIT`)
    task: str
    index: int
    host: str
    timer: str
    kind: str  # schedule, trigger
    scheduled: float | None
    fired: float
    state: str  # running, finished, failed, killed, skipped, lost
    exit_code: int | None
    signal: int | None
    reason: str | None
    ended: float | None


class TimerView(View):
    task: str
    index: int
    host: str  # the host holding the timer
    unit: str
    state: str
    next: float | None  # its next fire time as its host says (Unix time)


class CronView(View):
    schedule: str
    timezone: str
    calendars: list[str]  # the OnCalendar= expressions the hosts' timers have
    concurrency: str
    catch_up: int
    timers: list[TimerView]
    next_shown: str  # the next fire time in the job's time zone and in UTC


class JobView(View):
    job: str
    framework: str
    type: str
    state: str  # active, done, failed, killed
    run: int
    version: int
    submitted: float
    counts: dict[str, int]  # latest attempt of each instance, by state
    tasks: list[TaskView]
    unplaced: list[UnplacedView]
    outcome: OutcomeView | None
    spec: dict[str, Any]
    spec_version: int = 1  # the latest version of its spec (GET /v1/jobs/NAME/versions)
    next: float | None = None  # a cron job's next fire time (Unix time)
    runs: list[RunView] = []  # a cron job's latest runs, newest first
    cron: CronView | None = None


class JobList(View):
    jobs: list[JobView]


class HostInfo(View):
    host: str
    state: str  # up, suspect, unreachable, gone, stopping, draining, drained, unknown
    reachable: bool
    stale: bool  # what is shown is the last known, not fresh
    age: float | None  # seconds since it last answered
    last_seen: float | None
    boot: str | None
    error: str | None
    capacity: Amounts
    reserved: Amounts
    allocated: Amounts
    free: Amounts
    by_framework: dict[str, Amounts]
    load: list[float]
    usage: Amounts  # what the host says is really in use (memory, disk)
    tasks: int  # attempts the controller watches there
    unclaimed: list[str]  # meso units there that nobody launched (never adopted)
    drain_deadline: float | None  # when a drain's batch tasks are stopped (Unix time)
    attributes: dict[str, str] = {}  # the inventory's meso_attributes (for constraints)
    booted: float | None = None  # when the host (its PID 1) started, Unix time


class HostList(View):
    hosts: list[HostInfo]


class Cluster(View):
    """The controller's view of the whole: hosts by state, and whether it replaces tasks of
    unreachable hosts (paused while more than a third went unreachable at once)."""

    version: str
    hosts: dict[str, int]
    replacements: str  # active, paused, allowed (an operator overrode the pause)


class FrameworkInfo(View):
    name: str
    weight: float
    quota: Amounts | None
    allocated: Amounts
    share: float  # dominant share of the cluster
    weighted_share: float  # share / weight: what DRF evens out
    tasks: int


class FrameworkList(View):
    frameworks: list[FrameworkInfo]


class KillResult(View):
    job: str
    stopped: list[dict[str, Any]]


class TriggerResult(View):
    job: str
    runs: list[dict[str, Any]]  # per timer: the run it started, or why it was skipped


class Health(View):
    ok: bool
    version: str
    role: str = "leader"  # leader or standby (several controllers on PostgreSQL)
    epoch: int | None = None  # the lease's epoch this leader acts under; None: one controller
    leader: str | None = None  # a standby: the leader's address, if there is one


class SharePointView(View):
    """The cluster at one time (see controller/history.py): per framework share,
    weighted_share, fair (None: no work), cpus, mem, tasks; the cluster's cpus_total,
    cpus_allocated, cpus_used (load, at most the total), mem_total, mem_allocated, mem_used."""

    time: float
    frameworks: dict[str, dict[str, float | None]]
    cluster: dict[str, float]


class ShareHistoryView(View):
    """The last hour of sharing: full resolution for the last minutes, averaged before."""

    interval: float
    window: float
    points: list[SharePointView]


class TaskEventView(View):
    time: float
    kind: str
    message: str


class TaskDetail(View):
    """One task instance: its latest attempt, its unit on the host (limits as set there, from
    the host's last sample; None when the host did not report it), every attempt, and what the
    controller said about it (the events it still holds)."""

    job: str
    task: TaskView
    unit: dict[str, Any] | None
    unit_seen: float | None  # when the host reported it (Unix time)
    attempts: list[TaskView]
    events: list[TaskEventView]


class FieldChangeView(View):
    path: str  # as in error messages: tasks[0].resources.cpus
    kind: str  # changed, added, removed
    before: Any = None
    after: Any = None


class VersionView(View):
    version: int
    submitted: float
    submitter: str | None  # the token's name, if it has one
    spec: dict[str, Any]
    changes: list[FieldChangeView]  # against the version before


class VersionList(View):
    job: str
    current: int
    versions: list[VersionView]


class DeploymentView(View):
    """A deployment: `progress` per task (desired, new, healthy new, old still running)."""

    id: int
    job: str
    from_version: int
    to_version: int
    state: str  # running, waiting (for a promote), successful, failed, cancelled
    promoted: bool
    revert: bool
    reason: str | None
    started: float
    updated: float
    progress: dict[str, dict[str, int]]
