"""Deployments in the controller: a service's new version rolled out, promoted, failed or
reverted (the I/O around core.deployments, which decides each step).

Each cycle, for every job with a deployment under way, the store's attempts (each with the
version it runs) go through `core.deployments.step`; its slots to replace become moves for
`core.jobs.decide` (a new attempt beside the old one), its old attempts to retire are stopped,
and the deployment's state is stored. Everything lives in the store, so a controller killed
mid-deployment resumes it where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from meso_agentless.controller.views import (
    DeploymentView,
    FieldChangeView,
    VersionList,
    VersionView,
)
from meso_agentless.core import deployments as core
from meso_agentless.core import jobdiff
from meso_agentless.core import jobs as jobcore
from meso_agentless.core.jobs import REPLACED, ROLLED_BACK
from meso_agentless.core.tasks import TaskState, TaskStatus
from meso_agentless.errors import Unplaceable
from meso_agentless.spec import Job, Update
from meso_agentless.state.deployments import CANCELLED, FAILED, SUCCESSFUL, DeploymentRow
from meso_agentless.state.store import JobRow, StateStore, TaskRow

if TYPE_CHECKING:
    from meso_agentless.controller.loop import Controller


def policy_of(spec: Job) -> core.Policy:
    update = spec.update or Update()
    return core.Policy(update.max_parallel, update.min_healthy_time, update.healthy_deadline,
                       update.canary, update.auto_promote)  # fmt: skip


def check_of(spec: Job) -> dict[str, str]:
    """Each task's health check, as a deployment's failure names it."""
    out = {}
    for t in spec.tasks:
        h = t.health
        if h is None:
            continue
        if h.http is not None:
            out[t.name] = f"http {h.http} on port {h.port}"
        elif h.tcp:
            out[t.name] = f"tcp on port {h.port}"
        else:
            out[t.name] = "command " + " ".join(h.argv)
    return out


def _task_spec(spec: Mapping, task: str) -> dict | None:
    """A task of a spec without its count (a count alone is a scale, not a new version)."""
    for t in spec.get("tasks", []):
        if t.get("name") == task:
            return {k: v for k, v in t.items() if k != "count"}
    return None


def replaced_tasks(running: Mapping, spec: Mapping) -> set[str]:
    """The tasks whose instances a new spec replaces: in both, and changed beyond counts."""
    names = {t.get("name") for t in spec.get("tasks", [])}
    return {n for n in names if _task_spec(running, n) not in (None, _task_spec(spec, n))}


class Deployer:
    """The controller's deployments (it calls in at a few points of its cycle)."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.moves: dict[str, dict[tuple[str, int], str]] = {}  # job -> slots to replace

    @property
    def _store(self) -> StateStore:
        return self.c.store

    def under_way(self) -> set[str]:
        """Jobs with a deployment running or waiting: their old attempts are the deployment's
        to stop, and their outcome is the deployment's."""
        return {d.job for d in self._store.active_deployments()}

    def holds_outcome(self, job: JobRow, code: int) -> bool:
        """Whether the job's outcome is its deployment's rather than `code`: one under way,
        one that failed and left the job at its version, or one that succeeded while the
        service is still up."""
        if job.type != "service":
            return False
        deployment = self._store.deployment(job.name)
        if deployment is None or deployment.to_version != job.spec_version:
            return deployment is not None and deployment.active
        return (
            deployment.active
            or deployment.state == FAILED
            or (deployment.state == SUCCESSFUL and code == 0)
        )

    # -- commands ------------------------------------------------------------------------------

    def update(self, existing: JobRow, job: Job, spec: dict, submitter: str | None) -> JobRow:
        """An active job submitted with another spec: a scale (counts alone), a deployment (a
        service), or JobConflict."""
        from meso_agentless.controller.loop import JobConflict

        same_inventory = existing.inventory == self.c.inventory.source
        current = jobdiff.Current(existing.state, existing.run, existing.spec, same_inventory)
        decision = jobdiff.decide(job.job, current, spec)
        if existing.type != "service" or decision.action not in (jobdiff.SCALE, jobdiff.UPDATE):
            raise JobConflict(f"job {job.job!r} is active with another spec: kill it first, "
                              "or scale it")  # fmt: skip
        never = self.c.never_placeable(job)
        if never:
            raise Unplaceable(f"cannot be placed: {never[0].reason}",
                              [{"task": u.task, "index": u.index, "reason": u.reason}
                               for u in never])  # fmt: skip
        if decision.action == jobdiff.SCALE:
            row = self._store.update_job(existing, spec=spec, submitter=submitter)
            self.c.mark_dirty()
            steps = ", ".join(f"{s.task} {s.before} -> {s.after}" for s in decision.scale)
            self.c.events.publish("job", f"{job.job}: scaled ({steps}), version "
                                  f"{row.spec_version}", job.job)  # fmt: skip
            return row
        return self._start(existing, spec, submitter, revert=False)

    def _start(self, existing: JobRow, spec: dict, submitter: str | None, revert: bool) -> JobRow:
        from meso_agentless.controller.loop import JobState

        with self._store.transaction():
            row = self._store.update_job(existing, spec=spec, submitter=submitter)
            deployment = self._store.put_deployment(existing.name, existing.spec_version,
                                                    row.spec_version, revert)  # fmt: skip
        self.c.jobs[existing.name] = JobState()
        self.c.mark_dirty()
        target = Job.model_validate(spec)
        policy = policy_of(target)
        total = sum(t.count for t in target.tasks)
        how = f"{policy.max_parallel} at a time" + (
            f", {policy.canary} canary(ies) first" if policy.canary else ""
        )
        what = "revert" if revert else "deployment"
        self._publish(deployment, f"{what} {deployment.id} started: version "
                      f"{deployment.from_version} -> {deployment.to_version}, up to {total} "
                      f"instance(s) replaced {how}")  # fmt: skip
        return row

    def promote(self, name: str) -> DeploymentRow:
        from meso_agentless.controller.loop import JobConflict

        deployment = self._active(name)
        spec = Job.model_validate(self._store.job(name).spec)  # type: ignore[union-attr]
        if deployment.promoted or not policy_of(spec).canary:
            raise JobConflict(f"job {name!r}: deployment {deployment.id} has no canary to promote")
        promoted = self._store.update_deployment(deployment, promoted=True)
        if promoted is None:
            raise JobConflict(f"job {name!r}: deployment {deployment.id} changed meanwhile")
        self.c.mark_dirty()
        self._publish(promoted, f"deployment {promoted.id} promoted")
        return promoted

    def fail(self, name: str) -> DeploymentRow:
        """An operator fails the deployment (auto_revert then applies)."""
        deployment = self._active(name)
        job = self._store.job(name)
        assert job is not None  # noqa: S101 - a deployment's job exists
        return self._fail(job, deployment, "failed by an operator")

    def revert(self, name: str, version: int, submitter: str | None) -> JobRow:
        """Run an earlier version again (as the job's next version), by a deployment."""
        from meso_agentless.controller.loop import JobConflict, NotFound

        job = self._store.job(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        found = self._store.job_version(name, version)
        if found is None:
            raise NotFound(f"job {name!r} has no version {version}")
        if job.state != "active" or job.type != "service":
            raise JobConflict(f"job {name!r} is not an active service: run it instead")
        if found.spec == job.spec:
            raise JobConflict(f"job {name!r} runs version {version}'s spec already "
                              f"(version {job.spec_version})")  # fmt: skip
        self._roll_back(job)
        return self._start(job, found.spec, submitter, revert=True)

    def cancel(self, name: str, why: str) -> None:
        """End the job's deployment under way, if any (its job was killed)."""
        deployment = self._store.deployment(name)
        if deployment is not None and deployment.active:
            cancelled = self._store.update_deployment(deployment, state=CANCELLED, reason=why)
            if cancelled is not None:
                self._publish(cancelled, f"deployment {cancelled.id} cancelled: {why}")

    def _active(self, name: str) -> DeploymentRow:
        from meso_agentless.controller.loop import JobConflict, NotFound

        deployment = self._store.deployment(name)
        if deployment is None:
            raise NotFound(f"job {name!r} has no deployment")
        if not deployment.active:
            raise JobConflict(f"job {name!r}: deployment {deployment.id} is {deployment.state}")
        return deployment

    # -- the cycle -----------------------------------------------------------------------------

    def tick(self, jobs: list[JobRow]) -> None:
        """Step every deployment under way: store its state, stop the old attempts it retires,
        and leave the slots to replace in `moves` (for this cycle's decisions)."""
        self.moves = {}
        by_name = {j.name: j for j in jobs}
        for deployment in self._store.active_deployments():
            job = by_name.get(deployment.job)
            if job is None or job.spec_version != deployment.to_version:
                continue  # killed meanwhile: nothing to roll out
            self._step(job, deployment)

    def _instances(self, job: JobRow) -> tuple[list[core.Instance], dict[str, TaskRow]]:
        versions = {v.version: v.spec for v in self._store.versions(job.name)}
        rows = self._store.tasks(job.name)
        out = []
        for r in rows:
            spec = versions.get(r.job_version, {})
            current = _task_spec(spec, r.task) == _task_spec(job.spec, r.task)
            out.append(core.Instance(r.task, r.index, r.attempt, r.unit, r.host, current,
                                     r.state.value, r.health, r.healthy_since, r.since,
                                     r.created, r.reason))  # fmt: skip
        return out, {r.unit: r for r in rows}

    def _step(self, job: JobRow, deployment: DeploymentRow) -> None:
        spec = Job.model_validate(job.spec)
        instances, rows = self._instances(job)
        counts = {t.name: t.count for t in spec.tasks}
        step = core.step(policy_of(spec), counts, instances, promoted=deployment.promoted,
                         started=deployment.started, now=self.c.clock.time(),
                         checks=check_of(spec))  # fmt: skip
        if step.state == FAILED:
            self._fail(job, deployment, step.reason)
            return
        if step.promote:
            promoted = self._store.update_deployment(deployment, promoted=True)
            if promoted is None:
                return
            deployment = promoted
            self._publish(deployment, f"deployment {deployment.id}: {step.reason}")
        if step.replace:
            self.moves[job.name] = {(task, index): host for task, index, host in step.replace}
            for task, index, host in step.replace:
                self._publish(deployment, f"deployment {deployment.id}: replacing "
                              f"{task}[{index}] (was on {host})")  # fmt: skip
        if step.retire:
            why = f"{REPLACED} {deployment.to_version}"
            retired = [rows[a.unit] for a in step.retire]
            self.c._stop_rows(retired, {r.unit: TaskStatus(TaskState.KILLED, reason=why)
                                        for r in retired})  # fmt: skip
            for r in retired:
                self._publish(deployment, f"deployment {deployment.id}: {r.task}[{r.index}] "
                              f"attempt {r.attempt} (version {r.job_version}) on {r.host} "
                              "stopped: replaced")  # fmt: skip
        if step.state == SUCCESSFUL or (step.state, step.reason) != (
            deployment.state,
            deployment.reason,
        ):
            changed = self._store.update_deployment(deployment, state=step.state,
                                                    reason=step.reason)  # fmt: skip
            if changed is None:
                return
            if step.state != deployment.state or step.state == SUCCESSFUL:
                self._publish(changed, f"deployment {changed.id} {step.state}: {step.reason}")
            if step.state == SUCCESSFUL:
                what = "revert to" if changed.revert else "deployment of"
                message = f"{what} version {changed.to_version} successful: {step.reason}"
                self.c._outcome(job, jobcore.Outcome(0, message))

    def _fail(self, job: JobRow, deployment: DeploymentRow, why: str) -> DeploymentRow:
        failed = self._store.update_deployment(deployment, state=FAILED, reason=why)
        if failed is None:
            return deployment
        self._publish(failed, f"deployment {failed.id} failed: {why}")
        spec = Job.model_validate(job.spec)
        message = f"deployment of version {failed.to_version} failed: {why}"
        revert = spec.update is not None and spec.update.auto_revert and not failed.revert
        if revert:
            row = self.revert(job.name, failed.from_version, None)
            message += (f"; reverted to version {failed.from_version} (as version "
                        f"{row.spec_version})")  # fmt: skip
        else:
            hint = "" if failed.revert else f" (`meso revert {job.name} VERSION` does)"
            message += "; nothing reverted" + hint
        self.c._outcome(job, jobcore.Outcome(1, message))
        return failed

    def _roll_back(self, job: JobRow) -> None:
        """Take back the new attempts of slots where an old attempt still runs: stopped if
        they run, marked either way, so the old attempt stands again."""
        instances, rows = self._instances(job)
        back = [rows[a.unit] for a in core.rollback(instances)]
        live = [r for r in back if r.state.value in core.LIVE]
        if live:
            self.c._stop_rows(live, {r.unit: TaskStatus(TaskState.KILLED, reason=ROLLED_BACK)
                                     for r in live})  # fmt: skip
        for r in back:
            fresh = self._store.task_by_unit(r.unit)
            if fresh is not None and fresh.reason != ROLLED_BACK:
                self._store.update_task(fresh, replace(fresh.status, reason=ROLLED_BACK))
        self.c.mark_dirty()

    # -- views -------------------------------------------------------------------------------

    def versions_view(self, name: str) -> VersionList:
        """Every version of the job's spec, each with its changes against the one before."""
        from meso_agentless.controller.loop import NotFound

        with self._store.snapshot():
            job = self._store.job(name)
            versions = self._store.versions(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        out, before = [], None
        for v in versions:
            found = [] if before is None else jobdiff.changes(before, v.spec)
            changes = [FieldChangeView(**asdict(c)) for c in found]
            out.append(
                VersionView(version=v.version, submitted=v.submitted, submitter=v.submitter,
                            spec=v.spec, changes=changes)
            )  # fmt: skip
            before = v.spec
        return VersionList(job=name, current=job.spec_version, versions=out)

    def deployment_view(self, name: str) -> DeploymentView:
        """The job's latest deployment, with its progress now."""
        from meso_agentless.controller.loop import NotFound

        with self._store.snapshot():
            job = self._store.job(name)
            deployment = self._store.deployment(name)
            if job is None:
                raise NotFound(f"no job {name!r}")
            if deployment is None:
                raise NotFound(f"job {name!r} has no deployment")
            instances, _ = self._instances(job)
        spec = Job.model_validate(job.spec)
        counts = {t.name: t.count for t in spec.tasks}
        step = core.step(policy_of(spec), counts, instances, promoted=deployment.promoted,
                         started=deployment.started, now=self.c.clock.time())  # fmt: skip
        fields = {k: v for k, v in asdict(deployment).items() if k != "version"}
        return DeploymentView(**fields, progress=step.progress)

    def _publish(self, deployment: DeploymentRow, message: str) -> None:
        self.c.events.publish("deployment", f"{deployment.job}: {message}", deployment.job,
                              deployment=deployment.id, state=deployment.state,
                              from_version=deployment.from_version,
                              to_version=deployment.to_version)  # fmt: skip
