"""One job file against the job the controller holds: what submitting it would do (the field
diff and the action, from core.jobdiff) and where what it starts would go. Reads only; nothing
is stored or launched (the imperative shell of `POST /v1/plan/job`)."""

from __future__ import annotations

from dataclasses import asdict

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
    return {
        "job": job.job,
        "action": decision.action,
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
