"""The queue as users read it (`meso queue`, GET /v1/queue) and `meso explain`'s answer per
host (GET /v1/jobs/NAME/explain), from the controller's state. Reads only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from meso_agentless.controller.loop import (
    Controller,
    NotFound,
    _pending_spans,
    _running_per_host,
    _with_running_counts,
    sampled_capacity,
)
from meso_agentless.controller.planning import resources_json
from meso_agentless.core.drf import dominant_share
from meso_agentless.core.explain import explain_hosts
from meso_agentless.core.model import Framework
from meso_agentless.core.offers import JobScheduler
from meso_agentless.core.resources import PORTS
from meso_agentless.core.tasks import TRACKED
from meso_agentless.spec import Job


def _total(controller: Controller) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for name, view in controller.fleet.views().items():
        if view.facts and name in controller.nodes:
            host = controller.nodes[name].to_host(sampled_capacity(view.facts))
            for resource, amount in host.capacity.items():
                if resource != PORTS:
                    total[resource] += amount
    return dict(total)


def _framework_row(fw: Framework, total: dict[str, int], lent: dict[str, int]) -> dict:
    guarantee = dict(fw.guarantee or {})
    share = dominant_share(fw.allocated, total)
    below = any(fw.allocated.get(n, 0) < a for n, a in guarantee.items())
    return {
        "name": fw.name,
        "weight": fw.weight,
        "guarantee": resources_json(guarantee) if guarantee else None,
        "limit": None if fw.quota is None else resources_json(dict(fw.quota)),
        "allocated": resources_json(dict(fw.allocated)),
        "borrowed": resources_json({k: v for k, v in fw.revocable.items() if v}),
        "lent": resources_json({k: v for k, v in lent.items() if v}),
        "share": round(share, 6),
        "weighted_share": round(share / fw.weight, 6),
        "below_guarantee": below,
    }


def _lent(frameworks: list[Framework]) -> dict[str, dict[str, int]]:
    """What of each framework's unused guarantee others' borrowed tasks hold (the borrowed
    total shared out in proportion to the unused guarantees)."""
    borrowed: dict[str, int] = defaultdict(int)
    unused: dict[str, dict[str, int]] = {}
    for fw in frameworks:
        for name, amount in fw.revocable.items():
            borrowed[name] += amount
        unused[fw.name] = {
            name: max(0, amount - (fw.allocated.get(name, 0) - fw.revocable.get(name, 0)))
            for name, amount in (fw.guarantee or {}).items()
        }
    out: dict[str, dict[str, int]] = {}
    for fw in frameworks:
        out[fw.name] = {}
        for name, amount in unused[fw.name].items():
            whole = sum(u.get(name, 0) for u in unused.values())
            if whole and borrowed.get(name):
                out[fw.name][name] = min(amount, borrowed[name] * amount // whole)
    return out


def queue_view(controller: Controller, framework: str | None = None) -> dict:
    """Pending task groups in the order they will be placed (frameworks below their guarantee
    first, then by weighted dominant share; within one, by priority, then submission), each
    with its position, waiting time and reason; and per framework its guarantee, limit,
    allocation, what it borrows and lends, its share."""
    store = controller.store
    tracked = [r for r in store.tasks_in(TRACKED) if r.host in controller.nodes]
    frameworks = controller.frameworks_holding(tracked)
    if framework is not None and framework not in {f.name for f in frameworks}:
        raise NotFound(f"no framework {framework!r}")
    total = _total(controller)
    lent = _lent(frameworks)
    rows = {f.name: _framework_row(f, total, lent[f.name]) for f in frameworks}

    def framework_key(name: str) -> tuple:
        fw = next((f for f in frameworks if f.name == name), Framework(name))
        g = fw.guarantee or {}
        gshare = max((fw.allocated.get(n, 0) / a for n, a in g.items() if a), default=1.0)
        if gshare < 1.0:
            return (0, gshare, name)
        return (1, rows.get(name, {}).get("weighted_share", 0.0), name)

    now = controller.clock.time()
    pending = []
    for job in store.jobs():
        state = controller.jobs.get(job.name)
        if job.state != "active" or state is None or not state.unplaced:
            continue
        priority = Job.model_validate(job.spec).priority
        for (task, reason), runs in sorted(_pending_spans(state.unplaced).items()):
            pending.append({
                "framework": job.framework, "job": job.name, "task": task,
                "indexes": ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs),
                "count": sum(b - a + 1 for a, b in runs), "priority": priority,
                "waiting": round(max(0.0, now - job.submitted), 3), "reason": reason,
                "_key": (framework_key(job.framework), -priority, job.seq, job.name, task,
                         runs[0][0]),
            })  # fmt: skip
    pending.sort(key=lambda p: p.pop("_key"))
    if framework is not None:
        pending = [p for p in pending if p["framework"] == framework]
    for position, entry in enumerate(pending, 1):
        entry["position"] = position
    shown = [rows[n] for n in sorted(rows, key=framework_key)
             if framework is None or n == framework]  # fmt: skip
    return {"frameworks": shown, "pending": pending}


def explain_view(controller: Controller, job: str, task: str | None = None) -> dict:
    """Every host, one line each, for each task of `job` (or `task`): fits, or the first reason
    it does not (the limit, the cap, a constraint, a resource with free vs needed)."""
    store = controller.store
    row = store.job(job)
    if row is None:
        raise NotFound(f"no job {job!r}")
    spec = Job.model_validate(row.spec)
    groups = spec.groups(order=row.seq)
    if task is not None:
        groups = [g for g in groups if g.task == task]
        if not groups:
            raise NotFound(f"job {job!r} has no task {task!r}")
    tracked = [r for r in store.tasks_in(TRACKED) if r.host in controller.nodes]
    views = controller.fleet.views()
    hosts = controller.placeable_hosts(views, tracked)
    frameworks = controller.frameworks_holding(tracked)
    per_host = _running_per_host(tracked)
    counted = _with_running_counts({spec.framework: groups}, per_host)
    state = controller.jobs.get(job)
    pending: dict[str, list[int]] = defaultdict(list)
    for u in state.unplaced if state is not None else []:
        pending[u.task].append(u.index)
    placeable = {h.name for h in hosts}
    out = []
    for group in counted[spec.framework]:
        cap = JobScheduler(spec.framework, []).cap_reason(group)
        running = per_host.get((group.job, group.task), {})
        lines = dict(explain_hosts(hosts, frameworks, replace(group, running=running), cap))
        for name, view in views.items():
            if name in controller.nodes and name not in placeable:
                lines[name] = ("draining: nothing new goes there" if name in controller.draining
                               else view.error or f"host is {view.state}")  # fmt: skip
        out.append({
            "task": group.task,
            "pending": sorted(pending.get(group.task, [])),
            "hosts": [{"host": n, "reason": lines[n]} for n in sorted(lines)],
        })  # fmt: skip
    return {"job": job, "framework": spec.framework, "tasks": out}
