"""The operations users call, shared by the HTTP API and the CLI's embedded mode.

Reads (jobs, hosts, frameworks, plan, logs) only read: the store, the fleet's latest samples,
the controller's memory. Changes (submit, scale, kill, frameworks) go to the controller, which
in `meso controller` runs them on its own thread, one at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from meso_agentless import __version__
from meso_agentless import schedule as schedules
from meso_agentless.controller.hostview import (
    cluster_info,
    host_infos,
    resources_json,
    sampled_capacity,
)
from meso_agentless.controller.loop import Controller, NotFound
from meso_agentless.controller.planning import plan_jobs, plan_json
from meso_agentless.controller.views import (
    Cluster,
    CronView,
    FrameworkInfo,
    FrameworkList,
    Health,
    HostInfo,
    HostList,
    JobList,
    JobView,
    OutcomeView,
    RunView,
    TaskView,
    TimerView,
    TriggerResult,
    UnplacedView,
)
from meso_agentless.core.health import HostState
from meso_agentless.core.model import Framework
from meso_agentless.core.resources import PORTS
from meso_agentless.core.tasks import TRACKED, WATCHED
from meso_agentless.errors import MesoError
from meso_agentless.spec import Job
from meso_agentless.state.store import JobRow, TaskRow

RUNS_SHOWN = 50  # a cron job's latest runs in its view


class HostUnreachable(MesoError):
    """What was asked needs a host that cannot be reached now."""


class Service:
    def __init__(self, controller: Controller, leadership: Any = None) -> None:
        """`leadership`: controller.leadership's standing (None: a controller on its own)."""
        self.controller = controller
        self.store = controller.store
        self.leadership = leadership

    def health(self) -> Health:
        leadership = self.leadership
        if leadership is None or leadership.kind == "sole":
            return Health(ok=True, version=__version__)
        leading, epoch = leadership.state()
        if leading:
            return Health(ok=True, version=__version__, role="leader", epoch=epoch)
        return Health(ok=True, version=__version__, role="standby",
                      leader=leadership.leader_addr())  # fmt: skip

    # -- jobs ----------------------------------------------------------------------------------

    def jobs(self, names: Sequence[str] | None = None) -> JobList:
        with self.store.snapshot():
            rows = self.store.jobs()
            found = {j.name: j for j in rows}
            wanted = list(names) if names else [j.name for j in rows]
            missing = [n for n in wanted if n not in found]
            if missing:
                raise NotFound(f"no job {missing[0]!r}")
            tasks = self.store.tasks()
        by_job: dict[str, list[TaskRow]] = defaultdict(list)
        for row in tasks:
            by_job[row.job].append(row)
        return JobList(jobs=[self._job_view(found[n], by_job.get(n, [])) for n in wanted])

    def job(self, name: str) -> JobView:
        return self.jobs([name]).jobs[0]

    def _job_view(self, job: JobRow, rows: list[TaskRow]) -> JobView:
        latest: dict[tuple[str, int], TaskRow] = {}
        for row in rows:
            latest[(row.task, row.index)] = row
        state = self.controller.jobs.get(job.name)
        outcome = None
        if state is not None and state.outcome is not None:
            outcome = OutcomeView(code=state.outcome.code, message=state.outcome.message,
                                  version=state.version)  # fmt: skip
        unplaced = list(state.unplaced) if state is not None and job.state == "active" else []
        return JobView(
            job=job.name, framework=job.framework, type=job.type, state=job.state, run=job.run,
            version=job.version, submitted=job.submitted,
            counts=dict(Counter(r.state.value for r in latest.values())),
            tasks=[task_view(r, self.controller.borrowed.is_revocable(r.unit)) for r in rows],
            unplaced=[UnplacedView(task=u.task, index=u.index, reason=u.reason)
                      for u in unplaced],
            outcome=outcome, spec=job.spec, spec_version=job.spec_version,
            **self._cron(job, latest),
        )  # fmt: skip

    def _cron(self, job: JobRow, latest: dict[tuple[str, int], TaskRow]) -> dict:
        """A cron job's timers (host, next fire time as the host says), its next fire time
        (else worked out from its schedule) and its latest runs."""
        if job.type != "cron":
            return {}
        spec = Job.model_validate(job.spec)
        schedule = spec.cron
        assert schedule is not None  # noqa: S101 - a cron job's spec has one
        views = self.controller.fleet.views()
        timers = []
        for row in latest.values():
            if row.state.value not in ("staging", "running", "unreachable"):
                continue
            view = views.get(row.host)
            unit = view.units.get(row.unit, {}) if view is not None else {}
            when = unit.get("next")
            timers.append(
                TimerView(
                    task=row.task,
                    index=row.index,
                    host=row.host,
                    unit=row.unit,
                    state=row.state.value,
                    next=float(when) if isinstance(when, int | float) else None,
                )
            )
        known = [t.next for t in timers if t.next is not None]
        if known:
            upcoming: float | None = min(known)
        elif job.state == "active":
            fires = schedule.next_fires(self.controller.clock.time(), 1)
            upcoming = fires[0] if fires else None
        else:
            upcoming = None
        cron = CronView(schedule=schedule.text, timezone=schedule.timezone,
                        calendars=list(schedule.calendars),
                        concurrency=spec.concurrency or "forbid",
                        catch_up=1 if spec.catch_up is None else spec.catch_up, timers=timers,
                        next_shown=schedules.show(upcoming, schedule.timezone))  # fmt: skip
        runs = [RunView(**r.to_json()) for r in self.store.runs(job.name, limit=RUNS_SHOWN)]
        return {"next": upcoming, "runs": runs, "cron": cron}

    def trigger(self, name: str) -> TriggerResult:
        return TriggerResult(job=name, runs=self.controller.trigger(name))

    def latest_attempts(self, name: str, task: str | None, index: int | None) -> list[TaskRow]:
        """The latest attempt of each instance of the job (of one task, or one instance)."""
        if self.store.job(name) is None:
            raise NotFound(f"no job {name!r}")
        latest: dict[tuple[str, int], TaskRow] = {}
        for row in self.store.tasks(name):
            if (task is None or row.task == task) and (index is None or row.index == index):
                latest[(row.task, row.index)] = row
        if not latest:
            which = task if index is None else f"{task}/{index}"
            raise NotFound(f"job {name!r} has no task {which!r}")
        return list(latest.values())

    def readable(self, rows: Sequence[TaskRow]) -> None:
        """HostUnreachable if a host of these attempts cannot be asked now (its journal is
        there, out of reach: say so at once rather than after a connection's deadline)."""
        views = self.controller.fleet.views()
        for row in rows:
            view = views.get(row.host)
            if view is None or view.state in (HostState.UNREACHABLE, HostState.UNKNOWN):
                raise HostUnreachable(f"{row.host} is unreachable: the journal of {row.unit} "
                                      "cannot be read now")  # fmt: skip

    def run_unit(self, name: str, run: str) -> tuple[str, str]:
        """(host, unit) of one run of a cron job (NotFound if the job has no such run)."""
        found = self.store.run_by_unit(run)
        if found is None or found.job != name:
            raise NotFound(f"job {name!r} has no run {run!r}")
        if found.state == "skipped":
            raise NotFound(f"run {run!r} of job {name!r} was skipped: it has no log")
        return found.host, found.unit

    def logs(
        self,
        name: str,
        task: str | None,
        index: int | None,
        follow: bool,
        lines: int,
        run: str | None = None,
    ) -> Iterator[bytes]:
        """The journal of the job's latest attempts (headed by instance when there are several;
        follow only with one), or of one run of a cron job."""
        if run is not None:
            host, unit = self.run_unit(name, run)
            yield from self.controller.plane.logs(host, unit, follow=follow, lines=lines)
            return
        rows = self.latest_attempts(name, task, index)
        self.readable(rows)
        for row in rows:
            if len(rows) > 1:
                yield f"==> {row.task}[{row.index}] on {row.host} ({row.unit}) <==\n".encode()
            yield from self.controller.plane.logs(
                row.host, row.unit, follow=follow and len(rows) == 1, lines=lines
            )

    # -- hosts and frameworks ------------------------------------------------------------------

    def hosts(self) -> HostList:
        return HostList(hosts=[HostInfo(**info) for info in self._host_infos()])

    def _host_infos(self) -> list[dict[str, Any]]:
        controller = self.controller
        return host_infos(controller.fleet.views(), controller.nodes, self.store,
                          controller.clock.time(), controller.unclaimed,
                          controller.host_states)  # fmt: skip

    def host(self, name: str) -> HostInfo:
        for info in self.hosts().hosts:
            if info.host == name:
                return info
        raise NotFound(f"no host {name!r}")

    def cluster(self) -> Cluster:
        controller = self.controller
        if not controller.replacements_paused:
            replacements = "active"
        else:
            replacements = "allowed" if controller.replacements_allowed else "paused"
        return Cluster(**cluster_info(self._host_infos(), replacements))

    def frameworks(self) -> FrameworkList:
        controller = self.controller
        views = controller.fleet.views()
        total: Counter[str] = Counter()
        for name, view in views.items():
            if view.facts:
                total.update(controller.nodes[name].to_host(sampled_capacity(view.facts)).capacity)
        framework_of = {j.name: j.framework for j in self.store.jobs()}
        held: dict[str, Counter[str]] = defaultdict(Counter)
        tasks: Counter[str] = Counter()
        for row in self.store.tasks_in(WATCHED):
            fw = framework_of.get(row.job)
            if fw is not None:
                held[fw].update({k: v for k, v in row.resources.items() if k != PORTS})
                tasks[fw] += 1
        out = []
        for fw in controller.frameworks():
            allocated = dict(held.get(fw.name, {}))
            share = max((a / total[k] for k, a in allocated.items() if total.get(k)), default=0.0)
            out.append(FrameworkInfo(
                name=fw.name, weight=fw.weight,
                quota=None if fw.quota is None else resources_json(dict(fw.quota)),
                allocated=resources_json(allocated), share=round(share, 6),
                weighted_share=round(share / fw.weight, 6), tasks=tasks[fw.name],
            ))  # fmt: skip
        return FrameworkList(frameworks=out)

    def framework(self, name: str) -> FrameworkInfo:
        found = [f for f in self.frameworks().frameworks if f.name == name]
        if not found:
            raise NotFound(f"no framework {name!r}")
        return found[0]

    def known_framework(self, name: str) -> Framework:
        for fw in self.controller.frameworks():
            if fw.name == name:
                return fw
        raise NotFound(f"no framework {name!r}")

    # -- the queue -----------------------------------------------------------------------------

    def queue(self, framework: str | None = None) -> dict:
        """Pending task groups in placing order with why each waits; each framework's share."""
        from meso_agentless.controller.queue import queue_view

        return queue_view(self.controller, framework)

    def explain(self, job: str, task: str | None = None) -> dict:
        """For each task of the job (or one): every host, fits or the first reason not."""
        from meso_agentless.controller.queue import explain_view

        return explain_view(self.controller, job, task)

    # -- plan ----------------------------------------------------------------------------------

    def plan(self, jobs: Sequence[Job]) -> dict:
        """`meso plan` on the cluster as the controller sees it now: running tasks count as
        used; hosts that are not up offer nothing and are listed with the reason."""
        controller = self.controller
        views = controller.fleet.views()
        tracked = [r for r in self.store.tasks_in(TRACKED) if r.host in controller.nodes]
        hosts = controller.placeable_hosts(views, tracked)
        framework_of = {j.name: j.framework for j in self.store.jobs() if j.type != "cron"}
        result = plan_jobs(jobs, controller.frameworks_holding(tracked), hosts,
                           controller.borrowed.running(tracked, framework_of))  # fmt: skip
        unreachable = {name: view.error or f"host is {view.state}"
                       for name, view in sorted(views.items()) if not view.placeable}  # fmt: skip
        return {**plan_json(result), "unreachable": unreachable}


def task_view(r: TaskRow, revocable: bool = False) -> TaskView:
    return TaskView(
        task=r.task, index=r.index, attempt=r.attempt, host=r.host, unit=r.unit,
        state=r.state.value, exit_code=r.exit_code, signal=r.signal, reason=r.reason,
        restarts=r.restarts, since=r.since,
        resources=resources_json({k: v for k, v in r.resources.items() if k != PORTS}),
        ports=list(r.ports), health=r.health, revocable=revocable, job_version=r.job_version,
    )  # fmt: skip
