"""One job file against the job the controller holds: what submitting it would do (the field
diff and the action, from core.jobdiff) and where what it starts would go. Reads only; nothing
is stored or launched (the imperative shell of `POST /v1/plan/job`)."""

from __future__ import annotations

from dataclasses import asdict

from meso_agentless.controller.deployments import policy_of, replaced_tasks
from meso_agentless.controller.planning import plan_jobs, plan_json
from meso_agentless.controller.service import Service
from meso_agentless.core import jobdiff
from meso_agentless.core.tasks import TRACKED
from meso_agentless.spec import Job


def plan_job(service: Service, job: Job) -> dict:
    """The decision (action, reason, changes, scaling), the spec as the controller stores it,
    the one it holds, and the placements of what would start (a replacement's on the cluster
    without the job's own tasks; a scaling's only for the added instances)."""
    controller = service.controller
    spec = job.model_dump(mode="json")
    with service.store.snapshot():
        row = service.store.job(job.job)
        tracked = [r for r in service.store.tasks_in(TRACKED) if r.host in controller.nodes]
    current = None
    if row is not None:
        same_inventory = row.inventory == controller.inventory.source
        current = jobdiff.Current(row.state, row.run, row.spec, same_inventory)
    decision = jobdiff.decide(job.job, current, spec)
    starts: Job | None = job
    offset: dict[str, int] = {}
    if decision.action == jobdiff.NONE:
        starts = None
    elif decision.action == jobdiff.SCALE:
        added = {s.task: max(0, s.after - s.before) for s in decision.scale}
        offset = {s.task: s.before for s in decision.scale}
        data = {**spec, "tasks": [{**t, "count": added.get(t["name"], 0)} for t in spec["tasks"]]}
        starts = Job.model_validate(data) if any(added.values()) else None
    elif decision.action == jobdiff.REPLACE:
        tracked = [r for r in tracked if r.job != job.job]  # the old ones are stopped first
    elif decision.action == jobdiff.UPDATE and row is not None:
        starts = update_headroom(job, row.spec)  # beside the old ones, as many as go at once
    placed: dict = {"placements": [], "unplaced": [], "shares": {}}
    if starts is not None:
        views = controller.fleet.views()
        hosts = controller.placeable_hosts(views, tracked)
        placed = plan_json(plan_jobs([starts], controller.frameworks_holding(tracked), hosts))
        for item in placed["placements"] + placed["unplaced"]:
            item["index"] += offset.get(item["task"], 0)
    never = controller.never_placeable(job) if starts is not None else []
    views = controller.fleet.views()
    revision = None if row is None else {"state": row.state, "run": row.run, "version": row.version}
    update = None
    if decision.action == jobdiff.UPDATE and row is not None:
        update = update_summary(job, row.spec, not placed["unplaced"], row.spec_version)
    return {
        "job": job.job,
        "action": decision.action,
        "update": update,
        "reason": decision.reason,
        "current": revision,
        "changes": [asdict(c) for c in decision.changes],
        "scale": [asdict(s) for s in decision.scale],
        "spec": spec,
        "running_spec": None if row is None else row.spec,
        **placed,
        "never_placeable": [{"task": u.task, "index": u.index, "reason": u.reason} for u in never],
        "unreachable": {
            name: view.error or f"host is {view.state}"
            for name, view in sorted(views.items())
            if not view.placeable
        },
    }


def update_headroom(job: Job, running: dict) -> Job | None:
    """What a deployment starts at once beside the running instances: of each changed task,
    max(max_parallel, canary) new instances (None when no task changes)."""
    policy = policy_of(job)
    changed = replaced_tasks(running, job.model_dump(mode="json"))
    at_once = max(policy.max_parallel, policy.canary)
    data = job.model_dump(mode="json")
    data["tasks"] = [{**t, "count": min(t["count"], at_once) if t["name"] in changed else 0}
                     for t in data["tasks"]]  # fmt: skip
    return Job.model_validate(data) if changed else None


def update_summary(job: Job, running: dict, fits: bool, version: int) -> dict:
    """What the deployment will do, in numbers and in one line (as `nomad job plan` says it)."""
    policy = policy_of(job)
    changed = replaced_tasks(running, job.model_dump(mode="json"))
    old = {t["name"]: t["count"] for t in running.get("tasks", [])}
    replace = sum(min(t.count, old.get(t.name, 0)) for t in job.tasks if t.name in changed)
    text = f"replace {replace} instance(s), {policy.max_parallel} at a time"
    if policy.canary:
        text += f"; {policy.canary} canary(ies) first" + (
            ", promoted by themselves" if policy.auto_promote else ", then a promote"
        )
    at_once = max(policy.max_parallel, policy.canary)
    text += (f"; the new version fits beside the old with {at_once} at a time" if fits else
             f"; the new version does NOT fit beside the old with {at_once} at a time")  # fmt: skip
    if not replace:
        text = "no instance to replace (only the update policy or job-level fields change)"
    return {"from_version": version, "to_version": version + 1, "replace": replace,
            "max_parallel": policy.max_parallel, "canary": policy.canary, "fits": fits,
            "tasks": sorted(changed), "summary": text}  # fmt: skip
