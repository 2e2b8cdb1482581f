"""The controller: the one writer of the cluster's state, and the loop that keeps it true.

A cycle (`tick`): take what the fleet saw on the hosts and record it (a task that ended, a host
that rebooted or cannot be reached); decide what every active job needs next; place the
pending tasks of all jobs at once (weighted DRF across frameworks, jobs in submission order);
write the intents; launch, stop and clean up on the hosts, each host in parallel with its own
deadline; then say how each job stands. The same class runs inside `meso controller` (driven by
`controller.runner`) and inside an embedded CLI command; its plane, fleet, clock and store are
injected, so its paths are tested on a fake fleet with a fake clock.

Exactly once: an attempt's intent (host, unit) is stored before its launch; its unit name is the
launch's idempotency key; a host report older than our last action on a unit is not used to
judge that unit; a unit the store says was replaced or killed is stopped when it shows up; a
unit nobody launched is reported, never adopted.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from meso_agentless import schedule as schedules
from meso_agentless.controller import cron as cronctl
from meso_agentless.controller.claims import loose_units, nobodys, ours, state_mark, unclaimed_units
from meso_agentless.controller.clock import Clock
from meso_agentless.controller.deployments import Deployer
from meso_agentless.controller.events import EventBus
from meso_agentless.controller.fleet import Check, Fleet, HostView
from meso_agentless.controller.hostview import sampled_capacity
from meso_agentless.controller.quiet import QuietHosts
from meso_agentless.controller.revocation import ENV as REVOCABLE_ENV
from meso_agentless.controller.revocation import Borrowed, describe
from meso_agentless.controller.schedulers import Schedulers, holding
from meso_agentless.core import jobs as jobcore
from meso_agentless.core.allocator import allocate
from meso_agentless.core.cluster import ClusterState
from meso_agentless.core.health import ANSWERING, HostState, partitioned, task_health
from meso_agentless.core.model import Constraint, Framework, Host, Placement, TaskGroup, Unplaced
from meso_agentless.core.offers import WHOLE_OFFER, JobScheduler, OfferTaker
from meso_agentless.core.resources import CPUS, MEM, PORTS
from meso_agentless.core.tasks import (
    ENDED_ON_NODE,
    HOLDS_RESOURCES,
    TRACKED,
    WATCHED,
    TaskState,
    TaskStatus,
    judge,
    parse_unit_name,
    unit_name,
)
from meso_agentless.errors import Unplaceable, UsageError
from meso_agentless.hosts.launching import launch_request
from meso_agentless.hosts.plane import EXPIRY_MARGIN, NodeRefused, Plane, Unreachable, each_host
from meso_agentless.hosts.topology import Topologies, unknown_device_class, used_pins
from meso_agentless.inventory import Inventory, Node
from meso_agentless.node.nodecmd import NOT_STARTED
from meso_agentless.spec import Job
from meso_agentless.state.sqlite import Conflict
from meso_agentless.state.store import Intent, JobRow, RunRow, StateStore, TaskRow
from meso_agentless.taskspec import FrameworkTask

S = TaskState
OTHER_MARK = re.compile(r"\[state:[0-9a-f]+\]$")
T = TypeVar("T")
R = TypeVar("R")
REALLOCATE_EVERY = 3.0  # pending tasks are placed again at least this often
ACTIVE = "active"
OWN_DRAINED = "killed: its host was drained (its framework places it again)"
DONE = "done"


class NotFound(UsageError):
    """No such job, task, host or framework."""


class JobConflict(UsageError):
    """The request does not fit the job's current state (409)."""


@dataclass
class JobState:
    """What the controller knows of a job beyond its rows: the last allocation's unplaced tasks
    and its outcome (with the job version it was computed for)."""

    unplaced: list[Unplaced] = field(default_factory=list)
    outcome: jobcore.Outcome | None = None
    version: int = 0  # the job row version the outcome belongs to
    decisions: jobcore.Decisions | None = None


@dataclass
class TickReport:
    """What one cycle did (for tests and metrics)."""

    placed: list[Placement] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    allocated: bool = False
    allocation_seconds: float = 0.0


class Controller:
    def __init__(
        self,
        store: StateStore,
        inventory: Inventory,
        plane: Plane,
        fleet: Fleet,
        clock: Clock,
        events: EventBus,
        *,
        replace_after: float | None = None,
        launch_timeout: float = 5.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.store = store
        self.inventory = inventory
        self.plane = plane
        self.fleet = fleet
        self.clock = clock
        self.events = events
        self.replace_after = replace_after  # None: each job's own (disconnect.replace_after)
        self.launch_timeout = launch_timeout
        self.stop_timeout = stop_timeout
        self.nodes: dict[str, Node] = {n.name: n for n in inventory.nodes}
        self.mark = state_mark(store.identity)  # ends the description of every unit we launch
        self.jobs: dict[str, JobState] = defaultdict(JobState)
        self.unclaimed: dict[str, list[str]] = {}  # host -> meso units nobody launched
        self.host_states: dict[str, HostState] = {}
        self._acted: dict[str, float] = {}  # unit -> monotonic time of our last action on it
        self._started = clock.monotonic()  # a launch of an earlier run may still be on its way
        # host -> when it last refused a launch or did not answer one: not placed on again
        # until a sample asked after that answers
        self._avoid: dict[str, float] = {}
        self._unreachable_since: dict[str, float] = {}  # host -> when it became unreachable
        self.replacements_paused = False  # many hosts lost at once: the controller is cut off
        self.replacements_allowed = False  # an operator's override of that pause
        self._resumed = 0.0  # when replacements last resumed (wall time)
        self.draining: set[str] = set()
        self._dirty = True
        self._last_allocation = -math.inf
        self.schedulers = Schedulers(self)  # frameworks scheduling their own tasks (the API)
        self.borrowed = Borrowed()  # revocable tasks, and the revocations under way
        self._revoke: dict[str, tuple[TaskRow, TaskStatus]] = {}  # unit -> (row, its end)
        # each job's rows, and the attempts that may be out there (key None), read once while
        # nothing is written (store.changes), kept from cycle to cycle while nobody else writes
        self._read: tuple[int, dict[str | None, list[TaskRow]]] = (-1, {})
        self._reads = 0  # how many times the attempts that may be out there were read
        self._epoch = 0  # how many times _read was started anew (rows read since are alike)
        self._decided: dict[str, tuple[tuple, jobcore.Decisions]] = {}  # job -> its last, if
        # nothing but the rows it was made from (and the clock) could change it
        self._outside: tuple | None = None  # the store's outside_writes() at the last cycle
        self._clean = False  # the last cycle ran to its end (nothing it read was rolled back)
        self._quiet = QuietHosts()  # hosts where nothing changed since their tasks were judged
        self.deployer = Deployer(self)  # services changing version (controller.deployments)
        self.cluster = ClusterState()  # the allocator's hosts, kept between cycles
        self.topologies = Topologies()  # each host's sampled cores and devices, parsed once
        self._boots: dict[str, str] | None = None  # the stored boots, kept as _read is
        self._noted: dict[str, int] = {}  # host -> the marks of the units borrowed last noted
        self._supersedes: dict[str, tuple[list[TaskRow], list[TaskRow]]] = {}  # job -> (its
        # rows, their superseded attempts): the same while the rows are the same list

    def _owned(self, jobs: Iterable[JobRow]) -> set[str]:
        """The jobs of frameworks that schedule their own tasks: never placed or moved here."""
        registered = self.schedulers.registered()
        return {j.name for j in jobs if j.framework in registered} if registered else set()

    def mark_dirty(self) -> None:
        """Something changed that is worth an allocation in the next cycle."""
        self._dirty = True

    def close(self) -> None:
        self.fleet.stop()
        self.plane.close()

    # -- commands ------------------------------------------------------------------------------

    def submit(self, job: Job, again: bool = False, submitter: str | None = None) -> JobRow:
        """Store a job to run: new, the same one again (nothing changes), or a new run of one
        that ended. The same spec of a job that ended done is not run again (a `meso run`
        retried after its command broke must not run the job twice) unless `again`. An active
        one with another spec is scaled (counts alone) or, a service, deployed (a rolling
        update: controller.deployments); JobConflict for other types."""
        if job.framework in self.schedulers.registered():
            raise JobConflict(f"framework {job.framework!r} schedules its own tasks through "
                              "the API: run this job under another framework")  # fmt: skip
        spec = job.model_dump(mode="json")
        existing = self.store.job(job.job)
        if existing is not None and existing.framework in self.schedulers.registered():
            raise JobConflict(f"job {job.job!r} is a task of framework {existing.framework}, "
                              "which schedules its own tasks: choose another name")  # fmt: skip
        same = (
            existing is not None
            and existing.spec == spec
            and existing.inventory == self.inventory.source
        )
        if existing is not None and existing.state == ACTIVE:
            if not same:
                return self.deployer.update(existing, job, spec, submitter)
            return existing
        if existing is not None and existing.state == DONE and same and not again:
            ended = self._ended_outcome(existing)
            message = f"already done (run {existing.run}): {ended.message}; --again runs it again"
            self.jobs[job.job].outcome = jobcore.Outcome(ended.code, message)
            self.jobs[job.job].version = existing.version
            return existing
        problem = unknown_device_class(job, self.device_classes())
        if problem:
            raise UsageError(problem)
        never = self.never_placeable(job)
        if never:
            raise Unplaceable(f"cannot be placed: {never[0].reason}",
                              [{"task": u.task, "index": u.index, "reason": u.reason}
                               for u in never])  # fmt: skip
        row = self.store.put_job(job.job, job.framework, job.type, spec, self.inventory.source,
                                 submitter)  # fmt: skip
        self.jobs[job.job] = JobState()
        self._dirty = True
        self.events.publish("job", f"{job.job}: submitted (run {row.run})", job.job,
                            state=row.state, run=row.run)  # fmt: skip
        return row

    def device_classes(self) -> set[str] | None:
        """The device classes the hosts have (the inventory's, and what they sampled); None
        while some host without declared devices has not been sampled (its plugins may find
        some)."""
        views = self.fleet.views()
        known: set[str] = set()
        for name, node in self.nodes.items():
            view = views.get(name)
            topology = self.topologies.of(name, view.facts, node.devices) if view else None
            if topology is None and not node.devices:
                return None
            known |= set(node.devices) | set(topology.devices if topology else ())
        return known

    def _ended_outcome(self, job: JobRow) -> jobcore.Outcome:
        """How a job that has ended came out, from its rows (pure decide, nothing recorded)."""
        spec = Job.model_validate(job.spec)
        decisions = jobcore.decide(job.type, _policies(spec), self.store.tasks(job.name),
                                   self.clock.time(), lost_after=math.inf,
                                   numbered_from=self.store.last_attempts(job.name))  # fmt: skip
        total = sum(t.count for t in spec.tasks)
        result = jobcore.outcome(job.type, job.state == "killed", decisions, total)
        return result or jobcore.Outcome(0 if job.state == DONE else 1, job.state)

    def never_placeable(self, job: Job) -> list[Unplaced]:
        """The job's tasks that would not fit even on an empty cluster (every host the fleet
        knows a capacity of, reachable or not; each framework holding nothing): larger than
        every host, blocked by their constraints everywhere, or by their framework's quota.
        A service's instances all run at once, so they must all fit together; a batch job's
        may run one after another, so each must fit alone. Nothing is judged while no host's
        capacity is known."""
        views = self.fleet.views()
        hosts = []
        for name, node in self.nodes.items():
            view = views.get(name)
            sampled = sampled_capacity(view.facts) if view is not None else {}
            if sampled or {CPUS, MEM} <= set(node.declared):
                topology = self.topologies.of(name, view.facts, node.devices) if view else None
                hosts.append(replace(node.to_host(sampled), topology=topology))
        if not hosts:
            return []
        if all(h.topology is None for h in hosts):  # no host said what it can pin yet
            job = job.model_copy(update={"tasks": [t for t in job.tasks
                                                   if t.resources.pin() is None]})  # fmt: skip
        empty = [replace(f, allocated={}) for f in self.frameworks()]
        uncapped = [replace(g, max_running=None, job_max_running=None) for g in job.groups()]
        if job.type == "service":
            return allocate(hosts, empty, [JobScheduler(job.framework, uncapped)]).unplaced
        never = []
        for group in uncapped:
            alone = allocate(hosts, empty, [JobScheduler(job.framework, [replace(group, count=1)])])
            never += [
                replace(u, index=i)
                for u in alone.unplaced
                for i in range(group.first_index, group.first_index + group.count)
            ]
        return never

    def scale(self, name: str, task: str, count: int) -> JobRow:
        """Set `task` of an active job to `count` instances."""
        job = self._job(name)
        if job.framework in self.schedulers.registered():
            raise JobConflict(f"job {name!r} is a task of framework {job.framework}, which "
                              "schedules its own tasks: it cannot be scaled")  # fmt: skip
        if job.state != ACTIVE:
            raise JobConflict(f"job {name!r} is {job.state}, not active: run it again first")
        spec = Job.model_validate(job.spec)
        if task not in {t.name for t in spec.tasks}:
            raise NotFound(f"job {name!r} has no task {task!r}")
        data = spec.model_dump(mode="json")
        for t in data["tasks"]:
            if t["name"] == task:
                t["count"] = count
        scaled = Job.model_validate(data)  # the same bounds as a job file
        never = self.never_placeable(scaled)
        if never:
            raise Unplaceable(f"cannot be placed: {never[0].reason}",
                              [{"task": u.task, "index": u.index, "reason": u.reason}
                               for u in never])  # fmt: skip
        row = self.store.update_job(job, spec=scaled.model_dump(mode="json"))
        self._dirty = True
        self.events.publish("job", f"{name}/{task}: scaled to {count}", name, task=task,
                            count=count)  # fmt: skip
        return row

    def kill(self, name: str) -> list[dict]:
        """Stop every unit of the job on every host it can reach (lost ones included: they may
        have come back); nothing of it is restarted. A host that cannot be reached now has its
        units stopped when it returns."""
        job = self._job(name)
        if job.state == ACTIVE:
            job = self.store.update_job(job, state="killed")
        self.deployer.cancel(name, "the job was killed")
        rows = [r for r in self.store.tasks(name) if r.state in TRACKED | {S.LOST}]
        results = self._stop_rows(rows)
        self._cron_leases()  # no sample renews a killed job's timers, wherever they are
        self._outcome(job, jobcore.Outcome(1, "killed"))
        # a lost attempt counts only if it was found running (it had come back)
        stopped = [{"unit": r.unit, "host": r.host, **status.to_json()} for r, status in results
                   if r.state != S.LOST or status.state == S.KILLED]  # fmt: skip
        return stopped + self.gc(job=name)

    def gc(self, job: str | None = None) -> list[dict]:
        """Stop the units of meso's form that nobody claims (of one job's name, or all): they
        were reported, never adopted; this is the operator saying they must go."""
        views = self.fleet.views()
        targets = [(host, unit) for host, units in sorted(self.unclaimed.items())
                   for unit in units if (parsed := parse_unit_name(unit)) is not None
                   and (job is None or parsed[0] == job)
                   and not self._someone_elses(views[host].units.get(unit))]  # fmt: skip

        def stop(target: tuple[str, str]) -> dict:
            host, unit = target
            try:
                status = TaskStatus.of(
                    self.plane.stop(host, unit, timeout=self.stop_timeout, wait=False)
                )
            except (Unreachable, NodeRefused, ValueError) as exc:
                return {"unit": unit, "host": host, "state": "unreachable", "reason": _short(exc)}
            self._acted[unit] = self.clock.monotonic()
            self.events.publish("host", f"{host}: unit {unit}, claimed by nobody, stopped",
                                host=host, unit=unit)  # fmt: skip
            return {"unit": unit, "host": host, **status.to_json()}

        return per_host(targets, lambda t: t[0], stop)

    def set_framework(
        self, name: str, weight: float | None, quota: Mapping[str, int] | None
    ) -> None:
        self.store.set_framework(name, weight, quota)
        self._dirty = True

    def frameworks(self) -> list[Framework]:
        """The inventory's frameworks with their run-time changes, and any that jobs name."""
        known = {f.name: f for f in self.inventory.frameworks}
        for name, (weight, quota) in self.store.framework_settings().items():
            base = known.get(name, Framework(name))
            known[name] = replace(base, weight=base.weight if weight is None else weight,
                                  quota=base.quota if quota is None else quota)  # fmt: skip
        for job in self.store.jobs():
            known.setdefault(job.framework, Framework(job.framework))
        for name in self.schedulers.registered():
            known.setdefault(name, Framework(name))
        return [known[n] for n in sorted(known)]

    # -- the cycle -----------------------------------------------------------------------------

    def _rows(self) -> dict[str | None, list[TaskRow]]:
        changes, rows = self._read
        if changes != self.store.changes:
            rows = {}
            self._read = (self.store.changes, rows)
            self._epoch += 1
        return rows

    def _job_rows(self, job: str) -> list[TaskRow]:
        """The attempts of the job's current run (store.tasks), read again only after a write:
        a cycle's steps look at the same rows several times, and cycles with no write between
        them the same rows."""
        rows = self._rows()
        if job not in rows:
            rows[job] = self.store.tasks(job)
        return rows[job]

    def _out_there(self) -> list[TaskRow]:
        """Attempts that may be out there on the hosts (tracked or lost), read like _job_rows."""
        rows = self._rows()
        if None not in rows:  # with every active job's rows: a restart reads each row once
            rows[None], active = self.store.tasks_with_active(TRACKED | {S.LOST})
            rows.update({name: found for name, found in active.items() if name not in rows})
            self._reads += 1
        return rows[None]

    def _host_boots(self) -> dict[str, str]:
        """The hosts' stored boot identities, read again only after we write one (or as _read
        is, after another connection's write)."""
        if self._boots is None:
            self._boots = self.store.host_boots()
        return self._boots

    def _trust_reads(self) -> None:
        """At a cycle's start: rows read by an earlier cycle are kept only if it ran to its end
        and no other connection (another controller, a command) has written since."""
        outside = self.store.outside_writes()
        if not self._clean or outside is None or outside != self._outside:
            self._read = (-1, {})
            self._boots = None
            self._quiet.clear()
        self._outside, self._clean = outside, False

    def tick(
        self, allocate_now: bool | None = None, on_placed: Callable[[], None] | None = None
    ) -> TickReport:
        """One cycle. `allocate_now`: force (True) or skip (False) placing pending tasks; by
        default they are placed when something changed, and every few seconds while some
        wait. `on_placed` is called once this cycle's placements are stored, before its
        launches."""
        report = TickReport()
        self._trust_reads()
        views = self.fleet.views()
        self._note_hosts(views)
        for name, view in views.items():  # a host's units as last noted: nothing new to learn
            if self._noted.get(name) != view.marks:
                self.borrowed.note_host(view.units, self.mark)
                self._noted[name] = view.marks
        self._check_partition()
        forget, strays = self._observe(views)
        run_forget = self._collect_runs(views)
        jobs = [j for j in self.store.jobs() if j.state == ACTIVE
                and j.inventory == self.inventory.source]  # fmt: skip
        endings = self._health(jobs, views)
        endings.update(self._drain(jobs, views))
        if endings:  # unhealthy, or past its drain's deadline: stopped before deciding
            self._stop_rows([row for row, _ in endings.values()],
                            {unit: status for unit, (_, status) in endings.items()})  # fmt: skip
        self.deployer.tick(jobs)  # rolling updates: old attempts retired, slots to replace
        decided = {j.name: self._decide(j) for j in jobs}
        stops = [r for d in decided.values() for r in d.stop] + strays  # type: ignore[misc]
        deploying = self.deployer.under_way()  # their old attempts are the deployment's
        stops += self._superseded([j for j in jobs if j.name not in deploying])
        again = [(j, r) for j in jobs for r in self._again(j, decided[j.name], views)]
        owned = self._owned(jobs)
        fresh = [(j, launch) for j in jobs for launch in decided[j.name].launch
                 if not launch.again and j.name not in owned]  # fmt: skip
        for job in jobs:
            if not any(launch for launch in decided[job.name].launch if not launch.again):
                self.jobs[job.name].unplaced = []
        self.schedulers.tick({n for n, v in views.items() if v.placeable} - self.draining)
        takers = self.schedulers.takers()
        now = self.clock.monotonic()
        wanted = fresh or takers
        due = self._dirty or (wanted and now - self._last_allocation >= REALLOCATE_EVERY)
        placed: list[tuple[JobRow, TaskRow]] = []
        if wanted and (allocate_now if allocate_now is not None else due):
            placed = self._place(fresh, views, report, takers)
        self._dirty = False
        if on_placed is not None:
            on_placed()
        self._launch_all(again + placed, report)
        revoke, self._revoke = self._revoke, {}
        if revoke:  # borrowed tasks whose owner needs its guarantee back: stopped, requeued
            self._stop_rows([row for row, _ in revoke.values()],
                            {unit: status for unit, (_, status) in revoke.items()})  # fmt: skip
            report.stopped.extend(revoke)
            self._dirty = True
        for row, _status in self._stop_rows(stops):
            report.stopped.append(row.unit)
        self._forget(forget)
        self._forget_runs(run_forget)
        self._cron_leases()
        for job in jobs:
            self._settle(job)
        cutoff = self.clock.monotonic() - 60.0
        self._acted = {u: t for u, t in self._acted.items() if t > cutoff}
        self._clean = True
        return report

    def sync(self) -> None:
        """Record what the hosts say (states, ends, reboots) and nothing else: no launch, no
        stop. What an embedded `meso status` does."""
        self._trust_reads()
        views = self.fleet.views()
        self._note_hosts(views)
        self._observe(views)
        self._collect_runs(views)
        self._clean = True

    def scan(self, views: Mapping[str, HostView]) -> None:
        """Find the units nobody claims, writing nothing (read-only commands)."""
        self.unclaimed = unclaimed_units(views, self.store, self.mark, self.unclaimed)

    def _note_hosts(self, views: Mapping[str, HostView]) -> None:
        """Publish host state changes; a host that went unreachable or came back changes what
        can be placed."""
        boots = self._host_boots()
        for name, view in views.items():
            state = view.state
            if view.boot and boots.get(name) not in (None, view.boot):
                state = HostState.GONE
            before = self.host_states.get(name)
            if state == HostState.UP and name in self.draining:
                continue  # draining or drained: _drain says which
            if state == HostState.UNREACHABLE:
                self._unreachable_since.setdefault(name, self.clock.monotonic())
            else:
                self._unreachable_since.pop(name, None)
            if state != before:
                self.host_states[name] = state
                self._dirty = True
                if state != HostState.UNKNOWN and (before is not None or state != HostState.UP):
                    why = f" ({view.error})" if view.error and state != HostState.UP else ""
                    message = "rebooted: its tasks are gone" if state == HostState.GONE else state
                    self.events.publish("host", f"{name}: {message}{why}", host=name,
                                        state=state.value)  # fmt: skip

    def _ours(self, status: Mapping | None) -> bool:
        """Whether a unit on a host is one this state's controllers launched (claims.ours)."""
        return ours(status, self.mark)

    def _someone_elses(self, status: Mapping | None) -> bool:
        """Whether a unit carries another state's mark (another controller's: never touched)."""
        description = str((status or {}).get("description") or "")
        return bool(OTHER_MARK.search(description)) and not description.endswith(self.mark)

    def _check_partition(self) -> None:
        """Pause replacements while the controller looks cut off; resume when hosts return."""
        paused = partitioned(self._unreachable_since, len(self.nodes), self.clock.monotonic())
        if paused and not self.replacements_paused:
            lost = len(self._unreachable_since)
            self.events.publish("host", f"{lost} of {len(self.nodes)} hosts unreachable at once: "
                                "replacing nothing until they return or an operator allows it",
                                unreachable=lost, paused=True)  # fmt: skip
        elif not paused and self.replacements_paused:
            self.replacements_allowed = False
            self._resumed = self.clock.time()  # a host still away is given its full time again
            self.events.publish("host", "hosts are back: replacements resume", paused=False)
        self.replacements_paused = paused

    def _observe(self, views: Mapping[str, HostView]) -> tuple[list[TaskRow], list[TaskRow]]:
        """Record what the hosts say of every attempt that may be out there. Returns the rows
        whose units ended (to clean up on their hosts) and stray ones (to stop). Hosts where
        nothing changed since their last look found nothing to do are skipped (QuietHosts)."""
        boots = self._host_boots()
        rows = self._out_there()
        active = frozenset((j.name, j.run) for j in self.store.jobs() if j.state == ACTIVE)
        quiet = self._quiet.quiet((self._reads, active), views, boots, self._acted,
                                  self.clock.monotonic())  # fmt: skip
        busy: set[str] = set()  # hosts with something to do: looked at again next cycle
        forget: list[TaskRow] = []
        strays: list[TaskRow] = []
        claimed: dict[str, set[str]] = defaultdict(set)
        with self.store.transaction():
            for row in rows:
                if row.host in quiet:
                    continue
                view = views.get(row.host)
                if view is None or row.host not in self.nodes:
                    continue
                raw = view.units.get(row.unit)
                if raw is not None and not self._ours(raw):
                    raw = None  # a unit of that name that someone else launched: not ours
                else:
                    claimed[row.host].add(row.unit)
                trusted = view.asked is not None and view.asked > self._acted.get(row.unit, 0.0)
                if view.state in ANSWERING and not trusted:
                    busy.add(row.host)
                    continue  # the report was asked for before our last action on the unit
                answering = view.state in ANSWERING
                seen = _status(raw) if answering else None
                rebooted = boots.get(row.host) not in (None, view.boot)
                if (
                    seen is not None
                    and seen.state in HOLDS_RESOURCES
                    and (row.state == S.LOST or (row.job, row.run) not in active)
                ):
                    strays.append(row)  # replaced, killed or of an ended run: it must not run
                    busy.add(row.host)
                    continue
                if row.state == S.LOST and seen is not None and seen.state in ENDED_ON_NODE:
                    forget.append(row)
                    busy.add(row.host)
                    continue
                status = judge(row.state, view.state, seen, rebooted)
                if status is not None and status != row.status:
                    updated = self._record(row, status)
                    row = updated or row
                    busy.add(row.host)
                if row.state in ENDED_ON_NODE and seen is not None:
                    forget.append(row)
                    busy.add(row.host)
            for name, view in views.items():
                if view.boot and view.state == HostState.UP and boots.get(name) != view.boot:
                    self.store.set_host_boot(name, view.boot)
                    self._boots = None
                    busy.add(name)
        self._find_unclaimed(views, claimed, forget, strays, skip=quiet, busy=busy)
        self._quiet.judged({n: v for n, v in views.items() if n not in quiet}, boots, busy)
        return forget, strays

    def _find_unclaimed(
        self,
        views: Mapping[str, HostView],
        claimed: Mapping[str, set[str]],
        forget: list[TaskRow],
        strays: list[TaskRow],
        skip: set[str] | frozenset[str] = frozenset(),
        busy: set[str] | None = None,
    ) -> None:
        """Units on the hosts that no watched attempt claims. One nobody launched is reported,
        never adopted; one of an attempt that ended is cleaned up, or stopped if it runs (its
        host added to `busy`). Hosts in `skip` keep what was found there last."""
        unclaimed = {
            name: self.unclaimed[name]
            for name, view in views.items()  # last known
            if (view.state not in ANSWERING or name in skip) and name in self.unclaimed
        }
        holding = {s.value for s in HOLDS_RESOURCES}
        busy = set() if busy is None else busy
        for name, unit in loose_units(views, claimed, skip):
            view = views[name]
            row = self.store.task_by_unit(unit)
            if nobodys(name, view.units[unit], row, self.mark):
                unclaimed.setdefault(name, []).append(unit)
                if unit not in self.unclaimed.get(name, ()):
                    self.events.publish("host", f"{name}: unit {unit} was not launched by "
                                        "this controller; left alone", host=name,
                                        unit=unit)  # fmt: skip
            elif view.asked is None or view.asked <= self._acted.get(unit, 0.0):
                busy.add(name)  # asked for before our last action on it: look again
            elif view.units[unit].get("state") in holding:
                strays.append(row)
                busy.add(name)
            else:
                forget.append(row)
                busy.add(name)
        self.unclaimed = unclaimed

    def _decide(self, job: JobRow) -> jobcore.Decisions:
        spec = Job.model_validate(job.spec)
        rows = self._job_rows(job.name)
        hold = self.replacements_paused and not self.replacements_allowed
        after = self._window(spec)
        move = {**self._moves(job, rows), **self.deployer.moves.get(job.name, {})}
        # the same rows decide the same, but for the clock: unreachable ones become lost
        key = (self._epoch, job.version, hold, after, tuple(sorted(move.items())), self._resumed)
        memo = self._decided.get(job.name)
        if memo is not None and memo[0] == key:
            self.jobs[job.name].decisions = memo[1]
            return memo[1]
        decisions = jobcore.decide(job.type, _policies(spec), rows, self.clock.time(),
                                   lost_after=math.inf if hold else after,
                                   numbered_from=self.store.last_attempts(job.name),
                                   move=move, replace_batch=spec.disconnect.batch == "replace",
                                   unreachable_from=self._resumed)  # fmt: skip
        self._decided.pop(job.name, None)
        if not decisions.lost and all(r.state != S.UNREACHABLE for r in rows):
            self._decided[job.name] = (key, decisions)
        for row in decisions.lost:
            assert isinstance(row, TaskRow)  # noqa: S101 - decide() returns what it was given
            self._record(row, TaskStatus(S.LOST, reason=f"{row.host} unreachable; replaced"))
        self.jobs[job.name].decisions = decisions
        return decisions

    # -- health checks and drains --------------------------------------------------------------

    def _health(
        self, jobs: list[JobRow], views: Mapping[str, HostView]
    ) -> dict[str, tuple[TaskRow, TaskStatus]]:
        """Keep the fleet checking every running attempt that has health checks, record what
        they say, and return the attempts that failed `failures` checks in a row (to stop:
        their restart policy then decides)."""
        checks: dict[str, dict[str, Check]] = defaultdict(dict)
        endings: dict[str, tuple[TaskRow, TaskStatus]] = {}
        now, wall = self.clock.monotonic(), self.clock.time()
        for job in jobs:
            spec = Job.model_validate(job.spec)
            checked = {t.name: t.health for t in spec.tasks if t.health is not None}
            if not checked:
                continue
            for row in self._job_rows(job.name):
                health = checked.get(row.task)
                view = views.get(row.host)
                if health is None or row.state != S.RUNNING or view is None:
                    continue
                grace_until = now + max(0.0, health.grace - (wall - row.since))
                checks[row.host][row.unit] = Check(health.request(row.unit), health.interval,
                                                   grace_until)  # fmt: skip
                result = view.health.get(row.unit)
                if result is None:
                    continue
                verdict = task_health(result.healthy, result.failures)
                if verdict != row.health and self.store.set_health(row, verdict) is not None:
                    self._dirty = True
                    self.events.publish("task", f"{row.job}/{row.task}[{row.index}] on {row.host}:"
                                        f" {verdict} ({result.detail})", row.job, unit=row.unit,
                                        health=verdict, detail=result.detail)  # fmt: skip
                if result.failures >= health.failures:
                    reason = (f"unhealthy: {result.failures} checks failed in a row "
                              f"({result.detail})")  # fmt: skip
                    endings[row.unit] = (row, TaskStatus(S.FAILED, reason=reason))
        self.fleet.set_checks(checks)
        return endings

    def _drain(
        self, jobs: list[JobRow], views: Mapping[str, HostView]
    ) -> dict[str, tuple[TaskRow, TaskStatus]]:
        """Keep draining hosts' states current; return the batch attempts still on a host whose
        drain's deadline has passed (to stop: they are placed again elsewhere)."""
        drains = self.store.drains()
        self.draining = set(drains)
        wall = self.clock.time()
        tracked = [r for r in self.store.tasks_in(TRACKED) if r.host in drains] if drains else []
        endings: dict[str, tuple[TaskRow, TaskStatus]] = {}
        batch = {j.name for j in jobs if j.type == "batch"}
        timers = {j.name for j in jobs if j.type == "cron"}
        owned = self._owned(jobs)
        for row in tracked:
            if row.job in batch and wall >= drains[row.host] and row.state in HOLDS_RESOURCES:
                # a framework's own task is stopped, not moved: its framework decides
                why = OWN_DRAINED if row.job in owned else jobcore.DRAINED
                endings[row.unit] = (row, TaskStatus(S.KILLED, reason=why))
            elif row.job in timers and row.state in HOLDS_RESOURCES:
                # a timer moves at once: removed here first, then placed elsewhere (never two)
                endings[row.unit] = (row, TaskStatus(S.KILLED, reason=jobcore.DRAINED))
        for host in sorted(drains):
            left = sum(r.host == host for r in tracked)
            state = HostState.DRAINING if left else HostState.DRAINED
            view = views.get(host)
            up = view is not None and view.state == HostState.UP
            if up and self.host_states.get(host) != state:
                self.host_states[host] = state
                self.events.publish("host", f"{host}: {state}" + (f" ({left} task(s) left)"
                                    if left else ""), host=host, state=state.value)  # fmt: skip
        return endings

    def _moves(self, job: JobRow, rows: list[TaskRow]) -> dict[tuple[str, int], str]:
        """A service's next instance to move off a draining host: one at a time, so the
        service never has fewer than its count running (the new one starts beside the old)."""
        if job.type != "service" or not self.draining:
            return {}
        latest: dict[tuple[str, int], TaskRow] = {}
        live: dict[tuple[str, int], int] = defaultdict(int)
        for row in rows:
            latest[(row.task, row.index)] = row
            live[(row.task, row.index)] += row.state in TRACKED
        if any(n > 1 for n in live.values()):
            return {}  # a move is under way
        for key, row in sorted(latest.items()):
            if row.host in self.draining and row.state == S.RUNNING:
                return {key: row.host}
        return {}

    def _superseded(self, jobs: list[JobRow]) -> list[TaskRow]:
        """Earlier attempts still running beside a newer one that is up (and healthy, where it
        is checked): a move off a draining host is done, the old one goes."""
        out = []
        for job in jobs:
            rows = self._job_rows(job.name)
            kept = self._supersedes.get(job.name)
            if kept is None or kept[0] is not rows:
                kept = self._supersedes[job.name] = (rows, _superseded_of(rows))
            out.extend(kept[1])
        self._supersedes = {j.name: self._supersedes[j.name] for j in jobs}
        return out

    def drain(self, host: str, deadline: float) -> None:
        """Move everything off `host`: nothing new is placed there; service instances move one
        at a time (the new one up before the old one stops); batch tasks may finish until
        `deadline` seconds from now, then are stopped and placed elsewhere."""
        if host not in self.nodes:
            raise NotFound(f"no host {host!r}")
        self.store.set_drain(host, self.clock.time() + deadline)
        self._dirty = True
        self.events.publish("host", f"{host}: draining (deadline in {deadline:.0f} s)",
                            host=host, state="draining")  # fmt: skip

    def allow_replacements(self) -> None:
        """An operator says the lost hosts are really gone: replace their tasks (until the
        hosts return; a new mass loss pauses again)."""
        if self.replacements_paused and not self.replacements_allowed:
            self.replacements_allowed = True
            self._dirty = True
            self.events.publish("host", "an operator allowed replacing the tasks of unreachable "
                                "hosts", paused=False)  # fmt: skip

    def undrain(self, host: str) -> None:
        if host not in self.nodes:
            raise NotFound(f"no host {host!r}")
        self.store.set_drain(host, None)
        self.host_states.pop(host, None)
        self._dirty = True
        self.events.publish("host", f"{host}: drain undone", host=host, state="up")

    def _again(
        self, job: JobRow, decisions: jobcore.Decisions, views: Mapping[str, HostView]
    ) -> list[TaskRow]:
        """Attempts whose launch never reached their host: launched again there, once it is up
        and the first launch can no longer start (expired on the host: it may still be on its
        way, held in a cut connection; ours, or an earlier controller's before this one began)."""
        wanted = {(launch.task, launch.index, launch.attempt)
                  for launch in decisions.launch if launch.again}  # fmt: skip
        if not wanted:
            return []
        expired = self.clock.monotonic() - self.launch_timeout - EXPIRY_MARGIN
        return [row for row in self._job_rows(job.name)
                if (row.task, row.index, row.attempt) in wanted and row.host in views
                and views[row.host].placeable
                and self._acted.get(row.unit, self._started) < expired]  # fmt: skip

    def _place(
        self,
        fresh: list[tuple[JobRow, jobcore.Launch]],
        views: Mapping[str, HostView],
        report: TickReport,
        takers: Sequence[OfferTaker] = (),
    ) -> list[tuple[JobRow, TaskRow]]:
        """Place every pending task of every job in one allocation cycle, store the intents;
        what frameworks scheduling their own tasks take is sent to them as offers."""
        started = self.clock.monotonic()
        tracked = [r for r in self.store.tasks_in(TRACKED) if r.host in self.nodes]
        hosts = self.placeable_hosts(views, tracked)
        jobs_by_name = {job.name: job for job, _ in fresh}
        bases = {name: {g.task: g for g in Job.model_validate(job.spec).groups(order=job.seq)}
                 for name, job in jobs_by_name.items()}  # fmt: skip
        groups: dict[str, list[TaskGroup]] = defaultdict(list)
        attempts: dict[tuple[str, str, int], int] = {}
        running = _running_per_host(tracked)
        # instances of one task, alike (same host to avoid), with consecutive indexes: one
        # group each, so a job of thousands of pending instances is a handful of groups
        alike: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
        for job, launch in fresh:
            alike[(job.name, launch.task, launch.avoid)].append(launch.index)
            attempts[(job.name, launch.task, launch.index)] = launch.attempt
        for (name, task, avoid), indexes in alike.items():
            base, job = bases[name][task], jobs_by_name[name]
            constraints = base.constraints
            if avoid:
                constraints = (*constraints, Constraint("ne", "hostname", avoid))
            for first, last in jobcore.spans(indexes):
                groups[job.framework].append(replace(
                    base, count=last - first + 1, first_index=first, constraints=constraints,
                    running=running.get((name, task), {}),
                ))  # fmt: skip
        groups = _with_running_counts(groups, running)
        schedulers = [JobScheduler(fw, gs) for fw, gs in sorted(groups.items())]
        framework_of = {j.name: j.framework for j in self.store.jobs() if j.type != "cron"}
        self.borrowed.forget(r.unit for r in tracked)
        self.cluster.sync(hosts)  # only the hosts that changed since the last cycle are rebuilt
        plan = allocate(self.cluster, self.frameworks_holding(tracked), [*schedulers, *takers],
                        now=self.clock.time(), filters=self.schedulers.filters(),
                        revocable=self.borrowed.running(tracked, framework_of))  # fmt: skip
        self.schedulers.offered(takers, hosts)
        placed = []
        intents = []
        for p in plan.placements:
            if p.job == WHOLE_OFFER:
                continue
            attempt = attempts[(p.job, p.task, p.index)]
            unit = unit_name(p.job, p.task, p.index, attempt)
            intents.append(Intent(p.job, p.task, p.index, attempt, p.host, unit,
                                  dict(p.resources), tuple(p.ports), p.pins,
                                  jobs_by_name[p.job].spec_version))  # fmt: skip
            placed.append((jobs_by_name[p.job], p, attempt))
            self._acted[unit] = self.clock.monotonic()
            if p.revocable:
                self.borrowed.placed(unit)
        self.store.add_intents(intents)  # decide-and-record: one transaction
        self.cluster.place(plan.placements)  # as the next cycle's hosts will hold them
        self._revoke = self.borrowed.to_revoke(plan, tracked)
        for row, _ in self._revoke.values():
            owner = self.borrowed.revoking.get(row.unit, "")
            self.events.publish("revoked", f"{row.job}/{row.task}[{row.index}] on {row.host}: "
                                f"revoked, {owner} needs its guarantee back", row.job,
                                task=row.task, index=row.index, host=row.host, unit=row.unit,
                                owner=owner)  # fmt: skip
        for _job, p, attempt in placed:
            self.events.publish("placed", f"{p.job}/{p.task}[{p.index}] placed on {p.host} "
                                f"(attempt {attempt})", p.job, task=p.task, index=p.index,
                                host=p.host, attempt=attempt)  # fmt: skip
        by_job: dict[str, list[Unplaced]] = defaultdict(list)
        for u in plan.unplaced:
            by_job[u.job].append(u)
        for name in jobs_by_name:
            before = _pending_spans(self.jobs[name].unplaced)
            self.jobs[name].unplaced = by_job.get(name, [])
            for (task, reason), runs in _pending_spans(self.jobs[name].unplaced).items():
                if before.get((task, reason)) == runs:
                    continue  # said already
                which = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
                self.events.publish("unplaced", f"{name}/{task}[{which}] not placed: {reason}",
                                    name, task=task, indexes=which, reason=reason)  # fmt: skip
        self._last_allocation = self.clock.monotonic()
        report.placed = [p for _, p, _ in placed]
        report.unplaced = plan.unplaced
        report.allocated = True
        report.allocation_seconds = self._last_allocation - started
        rows = {r.unit: r for r in self.store.tasks_in([S.STAGING])}
        return [(job, rows[i.unit]) for (job, _, _), i in zip(placed, intents, strict=True)
                if i.unit in rows]  # fmt: skip

    def placeable_hosts(self, views: Mapping[str, HostView], tracked: list[TaskRow]) -> list[Host]:
        """Up hosts as the allocator sees them: capacity declared over sampled (the node's own
        admission capacity where it says one), used by what the store tracks there and by
        units nobody claims."""
        used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        ports: dict[str, set[int]] = defaultdict(set)
        timers = self._cron_jobs()
        for row in tracked:
            if row.job in timers:
                continue  # a timer holds nothing between runs; its runs count below
            for name, amount in row.resources.items():
                if name != PORTS:
                    used[row.host][name] += amount
            ports[row.host].update(row.ports)
        for host, units in self.unclaimed.items():
            view = views.get(host)
            for unit in units:
                status = (view.units.get(unit) if view else None) or {}
                if status.get("state") in {s.value for s in HOLDS_RESOURCES}:
                    used[host][CPUS] += status.get("millicpus") or 0
                    used[host][MEM] += status.get("memory_max") or 0
        for host, view in views.items():  # cron runs hold what they were given while they run
            for run in view.facts.get("runs") or ():
                if (
                    isinstance(run, dict)
                    and run.get("loaded")
                    and run.get("state") in {s.value for s in HOLDS_RESOURCES}
                ):
                    used[host][CPUS] += run.get("millicpus") or 0
                    used[host][MEM] += run.get("memory_max") or 0
        for offers in holding(self.schedulers.held()).values():
            for host, resources in offers.items():
                for name, amount in resources.items():
                    used[host][name] += amount
        hosts = []
        pinned = used_pins(tracked)
        for name, view in sorted(views.items()):
            if not view.placeable or name not in self.nodes:
                continue
            if view.asked is not None and view.asked <= self._avoid.get(name, -math.inf):
                continue  # it refused a launch since its last sample: wait for the next one
            if name in self.draining:
                continue
            host = self.nodes[name].to_host(sampled_capacity(view.facts))
            hosts.append(replace(host, used=dict(used[name]), used_ports=frozenset(ports[name]),
                                 topology=self.topologies.of(name, view.facts,
                                                             self.nodes[name].devices),
                                 used_pins=tuple(pinned.get(name, ()))))  # fmt: skip
        return hosts

    def frameworks_holding(self, tracked: list[TaskRow]) -> list[Framework]:
        """Frameworks, each holding what its watched tasks were given."""
        framework_of = {j.name: j.framework for j in self.store.jobs() if j.type != "cron"}
        held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in tracked:
            if row.state in WATCHED and row.job in framework_of:
                for name, amount in row.resources.items():
                    held[framework_of[row.job]][name] += amount
        for framework, offers in holding(self.schedulers.held()).items():
            for resources in offers.values():
                for name, amount in resources.items():
                    held[framework][name] += amount
        out = [replace(f, allocated=dict(held.get(f.name, {}))) for f in self.frameworks()]
        return self.borrowed.holding(out, tracked, framework_of)

    def launch_offered(self, launches: list[tuple[FrameworkTask, str, list[int]]]) -> list[dict]:
        """Launch a framework's tasks where its offers were (checked against them already):
        one job each, its intent stored before the launch like any other."""
        items = []
        with self.store.transaction():
            for task, host, ports in launches:
                job, spec = task.job, task.job.tasks[0]
                row = self.store.put_job(
                    job.job,
                    job.framework,
                    job.type,
                    job.model_dump(mode="json"),
                    self.inventory.source,
                )
                self.jobs[job.job] = JobState()
                attempt = self.store.last_attempts(job.job).get((spec.name, 0), 0) + 1
                unit = unit_name(job.job, spec.name, 0, attempt)
                self.store.add_intents(
                    [
                        Intent(
                            job.job,
                            spec.name,
                            0,
                            attempt,
                            host,
                            unit,
                            spec.resources.amounts(),
                            tuple(ports),
                        )
                    ]
                )
                self._acted[unit] = self.clock.monotonic()
                items.append((row, unit))
        staged = {r.unit: r for r in self.store.tasks_in([S.STAGING])}
        report = TickReport()
        self._launch_all([(job, staged[unit]) for job, unit in items], report, requeue=False)
        self._dirty = True
        out = []
        for job, unit in items:
            row = self.store.task_by_unit(unit)
            if row is None:  # defensive: its intent is never dropped (requeue=False)
                continue
            out.append({"task_id": job.name.removeprefix(f"{job.framework}-"), "job": job.name,
                        "host": row.host, "unit": unit, "state": row.state.value,
                        "reason": row.reason, "ports": row.ports})  # fmt: skip
        return out

    # -- on the hosts --------------------------------------------------------------------------

    def _launch_all(
        self, items: list[tuple[JobRow, TaskRow]], report: TickReport, requeue: bool = True
    ) -> None:
        """Launch each stored intent on its host; hosts in parallel, each with its own deadline.
        A launch refused (admission) or never sent (the host went silent) is placed again, or
        with `requeue` False (a framework's own task) recorded as lost, for its framework."""
        if not items:
            return
        specs: dict[str, Job] = {}
        capacities: dict[str, dict[str, int]] = {}
        requests = []
        for job, row in items:
            if job.name not in specs:  # validated once per job, not once per task
                specs[job.name] = Job.model_validate(job.spec)
            spec = specs[job.name]
            task = next(t for t in spec.tasks if t.name == row.task)
            placement = Placement(job.name, row.task, row.index, job.framework, row.host,
                                  row.resources, tuple(row.ports), pins=row.pins)  # fmt: skip
            if row.host not in capacities:
                capacities[row.host] = sampled_capacity(self.fleet.view(row.host).facts)
            capacity = capacities[row.host]
            request = launch_request(task, placement, row.attempt, capacity,
                                     job.type == "service", owner=self.mark)  # fmt: skip
            if self.borrowed.is_revocable(row.unit):
                request["env"][REVOCABLE_ENV] = "1"
                request["description"] = describe(request["description"], self.mark)
            cron = spec.cron
            if cron is not None:  # a timer on the host, which fires the task's runs
                request.update(schedule=list(cron.calendars),
                               concurrency=spec.concurrency or "forbid",
                               lease_sec=self._window(spec), owner=self.store.identity)  # fmt: skip
            requests.append((row, request))

        silent: set[str] = set()  # hosts that did not answer a launch in this cycle

        def launch(item: tuple[TaskRow, dict]) -> TaskStatus | str | None:
            row, request = item
            if row.host in silent:  # never sent: placed again, not one deadline per task
                return f"{row.host} did not answer an earlier launch"
            try:
                answer = self.plane.launch(row.host, request, timeout=self.launch_timeout)
                if answer.get("existed") and not self._ours(answer):
                    return TaskStatus(S.LOST, reason=f"a unit of this name that this controller "
                                      f"did not launch runs on {row.host}")  # fmt: skip
                return TaskStatus.of(answer)
            except Unreachable as exc:
                silent.add(row.host)
                self.events.publish("task", f"{row.unit}: {row.host} unreachable during the "
                                    f"launch; will reconcile ({exc})", row.job,
                                    unit=row.unit)  # fmt: skip
                return None  # it may or may not have started: the next report says
            except NodeRefused as exc:
                if "admission" in str(exc) or NOT_STARTED in str(exc):
                    return _short(exc)  # fuller than we knew, or shutting down: nothing started
                return TaskStatus(S.FAILED, reason=f"launch refused: {_short(exc)}")
            except ValueError as exc:
                return TaskStatus(S.FAILED, reason=f"launch refused: {_short(exc)}")

        results = per_host(requests, lambda item: item[0].host, launch)
        placed_timers = []
        with self.store.transaction():
            for (row, _), status in zip(requests, results, strict=True):
                self._acted[row.unit] = self.clock.monotonic()
                if row.host in silent:
                    self._avoid[row.host] = self.clock.monotonic()
                if isinstance(status, str) and requeue:
                    self._refused(row, status)
                elif isinstance(status, str):
                    self._avoid[row.host] = self.clock.monotonic()
                    self._record(row, TaskStatus(S.LOST, reason=f"not launched on {row.host}: "
                                                 f"{status}"))  # fmt: skip
                elif status is not None:
                    self._record(row, status)
                    if status.state == S.RUNNING and specs[row.job].cron is not None:
                        placed_timers.append(row)
                report.launched.append(row.unit)
        for row in placed_timers:
            self._catch_up(specs[row.job], row)

    def _refused(self, row: TaskRow, why: str) -> None:
        """A host's admission said no, or the launch was never sent (the host went silent):
        not a failure. The instance is pending again, to be placed on that host or another
        once the next sample shows what is really there."""
        self._avoid[row.host] = self.clock.monotonic()
        if self.store.drop_intent(row):
            self._dirty = True
            self.events.publish("task", f"{row.job}/{row.task}[{row.index}] not launched on "
                                f"{row.host}, placing it again: {why}", row.job,
                                task=row.task, index=row.index, host=row.host,
                                reason=why)  # fmt: skip

    def _stop_rows(
        self, rows: Iterable[TaskRow], endings: Mapping[str, TaskStatus] | None = None
    ) -> list[tuple[TaskRow, TaskStatus]]:
        """Stop these units on their hosts (in parallel), and record how each ended (as
        `endings` says for a unit that was stopped while it ran: unhealthy, drained)."""
        unique = list({r.unit: r for r in rows}.values())
        if not unique:
            return []
        views = self.fleet.views()

        def stop(row: TaskRow) -> TaskStatus:
            view = views.get(row.host)
            if view is None or view.state == HostState.UNREACHABLE:
                return TaskStatus(S.UNREACHABLE) if row.state in WATCHED else row.status
            if self._someone_elses(view.units.get(row.unit)):  # the name is taken, not by us
                return row.status if row.state not in TRACKED else TaskStatus(S.LOST)
            try:
                status = TaskStatus.of(self.plane.stop(row.host, row.unit, wait=False,
                                                       timeout=self.stop_timeout))  # fmt: skip
            except Unreachable:
                return TaskStatus(S.UNREACHABLE) if row.state in WATCHED else row.status
            except (NodeRefused, ValueError) as exc:
                return replace(row.status, reason=f"stop refused: {_short(exc)}")
            if status.state == S.UNKNOWN:  # nothing there (any more)
                if row.state in (S.STAGING, S.MISSING):
                    return TaskStatus(S.KILLED, reason="stopped before it ran")
                return TaskStatus(S.KILLED) if row.state in TRACKED else row.status
            if status.state == S.KILLED and endings and row.unit in endings:
                return replace(endings[row.unit], restarts=status.restarts)
            return status

        results = per_host(unique, lambda r: r.host, stop)
        out = []
        with self.store.transaction():
            for row, status in zip(unique, results, strict=True):
                self._acted[row.unit] = self.clock.monotonic()
                if row.state == S.LOST:
                    if status.state == S.KILLED:  # it had come back, and runs no more
                        self.events.publish("task", f"{row.job}/{row.task}[{row.index}] on "
                                            f"{row.host}: stopped (it had been replaced)",
                                            row.job, unit=row.unit)  # fmt: skip
                    out.append((row, status))
                    continue
                self._record(row, status)
                out.append((row, status))
        return out

    def _forget(self, rows: list[TaskRow]) -> None:
        """Unload units whose end is stored (best effort: the next cycle tries again)."""
        if not rows:
            return
        views = self.fleet.views()
        ours = [row for row in rows if (view := views.get(row.host)) is None
                or not self._someone_elses(view.units.get(row.unit))]  # fmt: skip
        self._unload([(row.host, row.unit) for row in ours])
        now = self.clock.monotonic()
        for row in ours:
            self._acted[row.unit] = now

    def _unload(self, units: Sequence[tuple[str, str]]) -> None:
        """forget of these (host, unit)s: one request per host, hosts at once (best effort: the
        next cycle tries again)."""
        by_host: dict[str, list[str]] = defaultdict(list)
        for host, unit in units:
            by_host[host].append(unit)

        def one_host(host: str) -> None:
            with contextlib.suppress(Unreachable, NodeRefused):
                self.plane.forget_many(host, by_host[host], timeout=self.launch_timeout)

        each_host(list(by_host), one_host)

    # -- recording -----------------------------------------------------------------------------

    def _record(self, row: TaskRow, status: TaskStatus) -> TaskRow | None:
        """Store a new status (compare-and-set) and publish it."""
        if status == row.status:
            return row
        updated = self.store.update_task(row, status)
        if updated is None:
            return None
        self._dirty = True  # something ended, started or moved: worth placing again
        if status.state != row.state or status.exit_code != row.exit_code:
            self.events.publish(
                "task", f"{row.job}/{row.task}[{row.index}] on {row.host}: {status.describe()}",
                row.job, task=row.task, index=row.index, attempt=row.attempt, host=row.host,
                unit=row.unit, **status.to_json(),
            )  # fmt: skip
        return updated

    def _settle(self, job: JobRow) -> None:
        """Work out how the job stands after this cycle; end it when it has ended."""
        state = self.jobs[job.name]
        decisions = state.decisions
        if decisions is None:
            return
        spec = Job.model_validate(job.spec)
        total = sum(t.count for t in spec.tasks)
        checked = frozenset(t.name for t in spec.tasks if t.health is not None)
        unhealthy = 0
        if checked:  # else none is unhealthy: the rows need no look
            latest: dict[tuple[str, int], TaskRow] = {}
            for row in self._job_rows(job.name):
                latest[(row.task, row.index)] = row
            unhealthy = sum(r.task in checked and r.state == S.RUNNING and r.health != "healthy"
                            for r in latest.values())  # fmt: skip
        waiting = len(state.unplaced) + unhealthy
        result = jobcore.outcome(job.type, False, decisions, total, waiting)
        if result is None or self.deployer.holds_outcome(job, result.code):
            return  # its deployment says how it comes out
        if decisions.settled and not (job.type in jobcore.KEPT and total == 0):
            # over: done, or failed for good (a service scaled to nothing stays, to scale up)
            try:
                job = self.store.update_job(job, state="done" if result.code == 0 else "failed")
            except Conflict:
                return  # changed meanwhile (scaled, killed): the next cycle looks again
        self._outcome(job, result)

    def _outcome(self, job: JobRow, result: jobcore.Outcome) -> None:
        state = self.jobs[job.name]
        if state.outcome == result and state.version == job.version:
            return
        state.outcome, state.version = result, job.version
        self.events.publish("job", f"{job.name}: {result.message}", job.name,
                            code=result.code, outcome=result.message, run=job.run,
                            version=job.version, state=job.state)  # fmt: skip

    def republish(self, name: str) -> None:
        """Say the job's outcome again (to whoever follows it after submitting it again)."""
        job, state = self.store.job(name), self.jobs.get(name)
        if job is not None and state is not None and state.outcome is not None:
            state.version = -1  # forces _outcome to publish
            self._outcome(job, state.outcome)

    def outcome(self, name: str) -> tuple[jobcore.Outcome | None, int]:
        """The job's latest outcome, and the job version it was computed for."""
        state = self.jobs.get(name)
        return (None, 0) if state is None else (state.outcome, state.version)

    def _job(self, name: str) -> JobRow:
        job = self.store.job(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return job

    # -- cron jobs -----------------------------------------------------------------------------

    def _window(self, spec: Job) -> int:
        """How long an attempt's host may stay silent before it is replaced: for a cron job
        also its timer's lease (the host fires no longer than that without our word)."""
        after = spec.disconnect.replace_after if self.replace_after is None else self.replace_after
        return max(1, math.ceil(after)) if spec.type == "cron" else after  # type: ignore[return-value]

    def _cron_jobs(self) -> set[str]:
        return {j.name for j in self.store.jobs() if j.type == "cron"}

    def _cron_leases(self) -> None:
        """Every host's samples renew the leases of the timers meant to be there, and only
        those, and say which runs are stored already."""
        jobs = [j for j in self.store.jobs() if j.type == "cron"]
        if not jobs:  # no cron job ever: samples carry nothing
            self.fleet.set_sample_fields({})
            return
        active = {(j.name, j.run) for j in jobs if j.state == ACTIVE}  # a killed one's: none
        rows = [r for r in self.store.tasks_in(WATCHED) if (r.job, r.run) in active]
        self.fleet.set_sample_fields(cronctl.sample_fields(
            self.store.identity, self.nodes, rows, self.store.last_seqs()))  # fmt: skip

    def _collect_runs(self, views: Mapping[str, HostView]) -> list[tuple[str, str]]:
        """Store the runs the hosts report (started, ended, skipped), each once; returns the
        run units that ended and can be unloaded on their hosts."""
        forget: list[tuple[str, str]] = []
        now = self.clock.time()
        with self.store.transaction():
            for host, view in sorted(views.items()):
                if view.state not in (HostState.UP, HostState.SUSPECT):
                    continue
                for report in view.facts.get("runs") or ():
                    if not isinstance(report, dict) or not cronctl.timer_unit(report.get("timer")):
                        continue
                    timer = self.store.task_by_unit(report["timer"])
                    if timer is None or timer.host != host:
                        continue
                    stored = self.store.run_by_unit(str(report.get("run")))
                    seen = cronctl.observe_run(report, timer, host, stored, now)
                    if seen.forget:
                        forget.append((host, str(report["run"])))
                    if seen.row is None:
                        continue
                    row, changed = self.store.put_run(seen.row)
                    if changed:
                        self._publish_run(row, stored)
                    if row.state in ("finished", "failed", "killed") and report.get("loaded"):
                        forget.append((host, row.unit))
        return forget

    def _publish_run(self, row: RunRow, before: RunRow | None) -> None:
        if before is not None and before.state == row.state:
            return
        self.events.publish("run", cronctl.describe(row), row.job, task=row.task,
                            index=row.index, host=row.host, unit=row.unit, firing=row.kind,
                            scheduled=row.scheduled, fired=row.fired, state=row.state,
                            exit_code=row.exit_code, reason=row.reason)  # fmt: skip

    def _forget_runs(self, runs: list[tuple[str, str]]) -> None:
        """Unload cron runs whose end is stored (best effort: the next cycle tries again)."""
        self._unload(sorted(set(runs)))

    def _catch_up(self, spec: Job, row: TaskRow) -> None:
        """A timer placed anew after its holder was lost, rebooted or drained: run the
        scheduled times that no host can have run meanwhile (the last `catch_up` of them) on
        the new holder at once. A lost holder fired at most until its lease lapsed (its last
        sample plus the lease), a rebooted one until its last recorded run."""
        limit = 1 if spec.catch_up is None else spec.catch_up
        schedule = spec.cron
        same = (row.task, row.index)
        earlier = [r for r in self.store.tasks(row.job)
                   if (r.task, r.index) == same and r.attempt < row.attempt]  # fmt: skip
        if not limit or schedule is None or not earlier:
            return
        before = earlier[-1]
        if before.state not in (S.LOST, S.GONE, S.KILLED):
            return
        start = before.since  # killed (drained): when it was removed
        if before.state == S.LOST:
            seen = self.fleet.view(before.host).seen if before.host in self.nodes else None
            if seen is not None:
                start = min(start, seen + self._window(spec) + 1.0)
        elif before.state == S.GONE:  # what it ran before the reboot is collected: after that
            start = before.created
        ran = [r.scheduled for r in self.store.runs(row.job, limit=1000)
               if (r.task, r.index) == same and r.scheduled is not None]  # fmt: skip
        start = max([start, *ran])
        missed = schedules.between(schedule, start, self.clock.time(), limit)
        for when in missed:
            try:
                answer = self.plane.trigger(row.host, row.unit, timeout=self.stop_timeout,
                                            scheduled=int(when))  # fmt: skip
            except (Unreachable, NodeRefused):
                return  # the next cycle's sample tells what happened there
            self._store_fired(row, answer)
        if missed:
            self.events.publish("job", f"{row.job}/{row.task}[{row.index}]: caught up "
                                f"{len(missed)} missed run(s) on {row.host}", row.job,
                                task=row.task, index=row.index, host=row.host,
                                caught_up=len(missed))  # fmt: skip

    def _store_fired(self, row: TaskRow, answer: Mapping) -> dict:
        """Store what a host said of a firing the controller asked for (trigger, catch-up)."""
        stored = self.store.run_by_unit(str(answer.get("run")))
        seen = cronctl.observe_run({**answer, "loaded": False}, row, row.host, stored,
                                   self.clock.time())  # fmt: skip
        if seen.row is None:
            return {"task": row.task, "index": row.index, "host": row.host,
                    "unit": answer.get("run"), "state": str(answer.get("state"))}  # fmt: skip
        saved, changed = self.store.put_run(seen.row)
        if changed:
            self._publish_run(saved, stored)
        return saved.to_json()

    def trigger(self, name: str) -> list[dict]:
        """Fire every timer of an active cron job now, on the host holding it (its concurrency
        rule and the host's admission apply); what each host said, stored like any run."""
        job = self._job(name)
        if job.type != "cron":
            raise JobConflict(f"job {name!r} is a {job.type} job, not cron: nothing to trigger")
        if job.state != ACTIVE:
            raise JobConflict(f"job {name!r} is {job.state}, not active: run it again first")
        rows = [r for r in self.store.tasks(name) if r.state == S.RUNNING]
        if not rows:
            raise JobConflict(f"job {name!r} has no timer placed yet: try again shortly")

        def fire(row: TaskRow) -> dict:
            try:
                answer = self.plane.trigger(row.host, row.unit, timeout=self.stop_timeout)
            except (Unreachable, NodeRefused) as exc:
                return {"task": row.task, "index": row.index, "host": row.host,
                        "state": "unreachable", "reason": _short(exc)}  # fmt: skip
            return self._store_fired(row, answer)

        return per_host(rows, lambda r: r.host, fire)


def per_host(items: list[T], host_of: Callable[[T], str], call: Callable[[T], R]) -> list[R]:
    """`call` on every item; items of one host one after another, hosts at once."""
    by_host: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_host[host_of(item)].append(i)
    results: list[R | None] = [None] * len(items)

    def one_host(host: str) -> None:
        for i in by_host[host]:
            results[i] = call(items[i])

    each_host(list(by_host), one_host)
    return results  # type: ignore[return-value]


def _superseded_of(rows: list[TaskRow]) -> list[TaskRow]:
    """The rows of one job's run superseded by a newer attempt of their slot that is up."""
    latest: dict[tuple[str, int], TaskRow] = {}
    for row in rows:
        latest[(row.task, row.index)] = row
    out = []
    for row in rows:
        new = latest[(row.task, row.index)]
        up = new.state == S.RUNNING and new.health in (None, "healthy")
        if new is not row and up and row.state in TRACKED:
            out.append(row)
    return out


def _pending_spans(unplaced: Iterable[Unplaced]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    by: dict[tuple[str, str], list[int]] = defaultdict(list)
    for u in unplaced:
        by[(u.task, u.reason)].append(u.index)
    return {key: jobcore.spans(indexes) for key, indexes in by.items()}


def _policies(job: Job) -> list[jobcore.TaskPolicy]:
    return [jobcore.TaskPolicy(t.name, t.count, t.restart.policy, t.restart.attempts)
            for t in job.tasks]  # fmt: skip


def _with_running_counts(
    groups: Mapping[str, list[TaskGroup]], running: Mapping[tuple[str, str], Mapping[str, int]]
) -> dict[str, list[TaskGroup]]:
    """Groups with how many of their task's and their job's instances run now (for caps)."""
    per_job: dict[str, int] = defaultdict(int)
    for (job, _), hosts in running.items():
        per_job[job] += sum(hosts.values())
    return {
        fw: [replace(g, running_count=sum(running.get((g.job, g.task), {}).values()),
                     job_running=per_job[g.job]) if g.max_running or g.job_max_running else g
             for g in gs]
        for fw, gs in groups.items()
    }  # fmt: skip


def _running_per_host(rows: Iterable[TaskRow]) -> dict[tuple[str, str], dict[str, int]]:
    """(job, task) -> host -> instances watched there (for the dynamic constraints)."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.state in WATCHED:
            out[(row.job, row.task)][row.host] += 1
    return {k: dict(v) for k, v in out.items()}


def _status(raw: Mapping | None) -> TaskStatus | None:
    """A unit's status as a host reports it (None if it reports none we know); most units
    report the same few, made once each."""
    if raw is None:
        return None
    fields = [raw.get(k) for k in STATUS_FIELDS]
    try:
        return _status_of(*fields)
    except TypeError:  # a field that cannot be a key (a node's bug): judged alone
        return _status_of.__wrapped__(*fields)


STATUS_FIELDS = ("state", "exit_code", "signal", "reason", "restarts")


@functools.lru_cache(maxsize=1024, typed=True)  # typed: exit code True is not 1
def _status_of(*fields: object) -> TaskStatus | None:
    try:
        return TaskStatus.of({k: v for k, v in zip(STATUS_FIELDS, fields, strict=True)
                              if v is not None})  # fmt: skip
    except (KeyError, ValueError):
        return None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
