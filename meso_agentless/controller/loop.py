"""The controller loop, embedded in the CLI: sample, allocate, launch, watch, restart, finish.

Every step goes through the store first: the intent of an attempt (host, unit) is written before
it is launched, and what the hosts say is written as it is learnt. A controller killed at any
point loses nothing; the next command reconciles the store with the hosts' own units, and since
an attempt's unit name is its idempotency key, nothing runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from meso_agentless.core import jobs as jobcore
from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Constraint, Framework, Placement, TaskGroup, Unplaced
from meso_agentless.core.offers import JobScheduler
from meso_agentless.core.tasks import unit_name
from meso_agentless.errors import MesoError
from meso_agentless.hosts.launching import launch_request
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.sampling import hosts_from_samples, sample_all
from meso_agentless.inventory import Inventory
from meso_agentless.spec import Job
from meso_agentless.state.sqlite import Store, TaskRow

WATCHED = jobcore.WAITING  # staging, running, unreachable: asked about on every sync
TRACKED = WATCHED | {"missing"}  # may hold resources and ports on their host
POLL_SECONDS = 0.5

Report = Callable[[str], None]


@dataclass
class Outcome:
    """How a `meso run` ended: its exit code and the line that says why."""

    code: int
    message: str
    unplaced: list[Unplaced] = field(default_factory=list)


def policies(job: Job) -> list[jobcore.TaskPolicy]:
    return [jobcore.TaskPolicy(t.name, t.count, t.restart.policy, t.restart.attempts)
            for t in job.tasks]  # fmt: skip


class Controller:
    def __init__(self, store: Store, inventory: Inventory, report: Report | None = None) -> None:
        self.store = store
        self.inventory = inventory
        self.plane = ExecutionPlane(inventory.nodes)
        self.report = report or (lambda _line: None)

    def close(self) -> None:
        self.plane.close()

    # -- watching ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Bring the store up to date with the hosts' own units (reconcile), and clean up units
        whose end has been stored. Only this inventory's hosts are asked: attempts on hosts of
        another inventory are left to a controller of that one."""
        mine = self.plane.connections
        rows = [r for r in self.store.tasks() if r.state in TRACKED and r.host in mine]
        if not rows:
            return
        result = self.plane.reconcile({r.unit: r.host for r in rows}, self.store.host_boots())
        for host, boot in result.boots.items():
            self.store.set_host_boot(host, boot)
        for row in rows:
            status = dict(result.states[row.unit])
            if status["state"] in ("unknown", "missing"):
                # never acknowledged: the launch may not have reached the host; launching the
                # same unit again is safe. Acknowledged and vanished: lost.
                status["state"] = "missing" if row.state in ("staging", "missing") else "lost"
            if status["state"] != row.state:
                self.report(f"{row.job}/{row.task}[{row.index}] on {row.host}: {_describe(status)}")
            self.store.update_task(row.unit, status)
            if status["state"] in ("finished", "failed", "killed"):
                self._forget(row)

    def _forget(self, row: TaskRow) -> None:
        try:
            self.plane.forget(row.host, row.unit)
        except MesoError as exc:
            self.report(f"{row.unit}: could not clean up on {row.host}: {exc}")

    # -- one cycle -----------------------------------------------------------------------------

    def step(self, job: Job, now: float | None = None) -> tuple[jobcore.Decisions, list[Unplaced]]:
        """Decide what the job needs, place and launch it. Returns the decisions and what could
        not be placed."""
        rows = self.store.tasks(job.job)
        decisions = jobcore.decide(job.type, policies(job), rows, now or time.time(),
                                   numbered_from=self.store.last_attempts(job.job))  # fmt: skip
        for row in decisions.lost:
            self.store.update_task(row.unit, {"state": "lost"})
        for row in decisions.stop:
            self.report(f"{row.job}/{row.task}[{row.index}]: scaled away, stopping")
            self.store.update_task(row.unit, self.plane.stop(row.host, row.unit))
        again = [launch for launch in decisions.launch if launch.again]
        fresh = [launch for launch in decisions.launch if not launch.again]
        for launch in again:
            row = next(r for r in rows if (r.task, r.index, r.attempt) ==
                       (launch.task, launch.index, launch.attempt))  # fmt: skip
            placement = Placement(job.job, row.task, row.index, job.framework, row.host,
                                  row.resources, tuple(row.ports))  # fmt: skip
            self._launch(job, placement, row.attempt, capacity=None)
        unplaced: list[Unplaced] = []
        if fresh:
            unplaced = self._place_and_launch(job, fresh, rows)
        return decisions, unplaced

    def _place_and_launch(
        self, job: Job, launches: list[jobcore.Launch], rows: list[TaskRow]
    ) -> list[Unplaced]:
        samples, failed = sample_all(self.inventory.nodes, self.plane.connections)
        for host, reason in sorted(failed.items()):
            self.report(f"{host}: not sampled, not placed on: {reason}")
        every = self.store.tasks()
        taken_ports: dict[str, set[int]] = {}
        for row in every:  # ports are the store's to know: hosts do not track them
            if row.state in TRACKED:
                taken_ports.setdefault(row.host, set()).update(row.ports)
        hosts = [replace(h, used_ports=frozenset(taken_ports.get(h.name, ())))
                 for h in hosts_from_samples(self.inventory.nodes, samples)]  # fmt: skip
        capacity = {h.name: h.capacity for h in hosts}
        running: dict[str, dict[str, int]] = {}
        for row in rows:
            if row.state in WATCHED:
                per_host = running.setdefault(row.task, {})
                per_host[row.host] = per_host.get(row.host, 0) + 1
        groups = []
        attempts = {}
        base_groups = {g.task: g for g in job.groups()}
        for launch in launches:
            base = base_groups[launch.task]
            constraints = base.constraints
            if launch.avoid:
                constraints = (*constraints, Constraint("ne", "hostname", launch.avoid))
            groups.append(TaskGroup(job.job, launch.task, job.framework, 1, base.resources,
                                    constraints, base.strategy, launch.index,
                                    running.get(launch.task, {})))  # fmt: skip
            attempts[(launch.task, launch.index)] = launch.attempt
        plan = allocate(hosts, self._frameworks(every), [JobScheduler(job.framework, groups)])
        for placement in plan.placements:
            attempt = attempts[(placement.task, placement.index)]
            unit = unit_name(job.job, placement.task, placement.index, attempt)
            self.store.add_intent(job.job, placement.task, placement.index, attempt,
                                  placement.host, unit, dict(placement.resources),
                                  list(placement.ports))  # fmt: skip
            self.report(f"{job.job}/{placement.task}[{placement.index}] placed on "
                        f"{placement.host} (attempt {attempt})")  # fmt: skip
            self._launch(job, placement, attempt, capacity[placement.host])
        return plan.unplaced

    def _launch(
        self, job: Job, placement: Placement, attempt: int, capacity: Mapping[str, int] | None
    ) -> None:
        task = next(t for t in job.tasks if t.name == placement.task)
        request = launch_request(task, placement, attempt, capacity, job.type == "service")
        try:
            status = self.plane.launch(placement.host, request)
        except MesoError as exc:
            status = {"state": "failed", "reason": f"launch refused: {exc}"}
        if status["state"] == "unreachable":
            self.report(f"{request['unit']}: {placement.host} unreachable; will reconcile")
        self.store.update_task(request["unit"], status)

    def _frameworks(self, rows: list[TaskRow]) -> list[Framework]:
        """The inventory's frameworks, each holding what its running tasks (of `rows`, every
        job's attempts) were given."""
        held: dict[str, dict[str, int]] = {}
        frameworks = {j.name: j.framework for j in self.store.jobs()}
        for row in rows:
            if row.state in WATCHED:
                fw = held.setdefault(frameworks[row.job], {})
                for name, amount in row.resources.items():
                    fw[name] = fw.get(name, 0) + amount
        known = {f.name: f for f in self.inventory.frameworks}
        names = set(known) | set(held)
        return [Framework(n, known[n].weight if n in known else 1.0,
                          known[n].quota if n in known else None, held.get(n, {}))
                for n in sorted(names)]  # fmt: skip

    # -- running a job to its end --------------------------------------------------------------

    def run(
        self,
        job: Job,
        detach: bool = False,
        timeout: float | None = None,
        on_cycle: Callable[[], None] | None = None,
    ) -> Outcome:
        """Submit `job` and drive it: a batch job to its end, a service until it is up.
        `on_cycle` is called after every cycle (a live display redraws there)."""
        self.store.put_job(job.job, job.framework, job.type, job.model_dump(mode="json"),
                           self.inventory.source)  # fmt: skip
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.sync()
            decisions, unplaced = self.step(job)
            if on_cycle is not None:
                on_cycle()
            # a batch job may wait for its own running tasks to free room; a service's do not end
            if unplaced and (job.type == "service" or not decisions.waiting):
                return Outcome(3, "cannot be placed: " + unplaced[0].reason, unplaced)
            if detach:
                return Outcome(0, "submitted")
            if not decisions.launch and not decisions.waiting:
                return self._outcome(job, decisions)
            # nothing was launched this cycle, so the decisions still describe every instance
            total = sum(t.count for t in job.tasks)
            if job.type == "service" and not decisions.launch and decisions.running == total:
                return Outcome(0, f"service up: {total} instances running")
            if deadline is not None and time.monotonic() > deadline:
                return Outcome(1, "timed out waiting for the job")
            time.sleep(POLL_SECONDS)

    def _outcome(self, job: Job, decisions: jobcore.Decisions) -> Outcome:
        if decisions.failed:
            first = decisions.failed[0]
            how = (
                first.state if first.exit_code is None else f"{first.state} exit {first.exit_code}"
            )
            return Outcome(
                1,
                f"{len(decisions.failed)} task(s) failed; first {first.task}[{first.index}]: {how}",
            )
        self.store.set_job_state(job.job, "done")
        return Outcome(0, f"all {decisions.succeeded} task(s) finished")

    def kill(self, name: str) -> list[dict]:
        """Stop every running attempt of the job; it will not be restarted."""
        self.store.set_job_state(name, "killed")
        stopped = []
        for row in self.store.tasks(name):
            if row.state in TRACKED:
                try:
                    status = self.plane.stop(row.host, row.unit)
                except MesoError as exc:
                    status = {"state": "unreachable", "reason": str(exc)}
                self.store.update_task(row.unit, status)
                stopped.append({"unit": row.unit, "host": row.host, **status})
        return stopped


def _describe(status: dict) -> str:
    text = status["state"]
    if status.get("exit_code") is not None and status["state"] != "running":
        text += f" (exit {status['exit_code']})"
    if status.get("reason"):
        text += f" ({status['reason']})"
    return text
