"""Plan jobs on a cluster without launching anything: what `meso plan` does (imperative shell)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from meso_agentless.controller.hostview import resources_json
from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Framework, Host, Placement, Plan, RevocableTask, TaskGroup
from meso_agentless.core.offers import JobScheduler
from meso_agentless.errors import UsageError
from meso_agentless.inventory import Inventory
from meso_agentless.spec import Job, load_job


def load_jobs(paths: Sequence[Path]) -> list[Job]:
    jobs = [load_job(path) for path in paths]
    names = [j.job for j in jobs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"job {duplicate!r} is given twice")
    return jobs


def declared_hosts(inventory: Inventory) -> list[Host]:
    """Hosts from declared capacity alone (--offline): each must declare cpus and mem."""
    for node in inventory.nodes:
        missing = [r for r in ("cpus", "mem") if r not in node.declared]
        if missing:
            raise UsageError(
                f"inventory {inventory.source}: host {node.name} declares no "
                f"meso_resources.{missing[0]}; --offline plans need declared capacity"
            )
    return [node.to_host() for node in inventory.nodes]


def plan_jobs(
    jobs: Sequence[Job],
    frameworks: Iterable[Framework],
    hosts: Sequence[Host],
    revocable: Iterable[RevocableTask] = (),
) -> Plan:
    """Place the jobs as if submitted together, in the order given, in weighted DRF order
    (frameworks below their guarantee first; `revocable`: borrowed tasks running now, of which
    the plan says which would be revoked)."""
    by_framework: dict[str, list[TaskGroup]] = {}
    for order, job in enumerate(jobs):
        for group in job.groups(order=order):
            by_framework.setdefault(group.framework, []).append(group)
    schedulers = [JobScheduler(fw, groups) for fw, groups in sorted(by_framework.items())]
    return allocate(hosts, frameworks, schedulers, revocable=revocable)


def plan_json(plan: Plan) -> dict:
    """placements (cpus in CPUs, sizes in bytes, ports), unplaced (with reasons), shares."""

    def placement(p: Placement) -> dict:
        return {**asdict(p), "resources": resources_json(p.resources), "ports": list(p.ports)}

    return {
        "placements": [placement(p) for p in plan.placements],
        "unplaced": [asdict(u) for u in plan.unplaced],
        "shares": {fw: round(share, 6) for fw, share in sorted(plan.shares.items())},
        "revocations": [asdict(r) for r in plan.revocations],
    }
