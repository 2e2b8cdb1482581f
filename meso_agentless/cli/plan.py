"""`meso plan`: where jobs would go, and why what does not fit does not. Launches nothing."""

from __future__ import annotations

from pathlib import Path

import click

from meso_agentless.cli.base import (
    INVENTORY_OPTION,
    OUTPUT_OPTION,
    STATE_OPTION,
    backend,
    print_json,
)

EXIT_UNPLACED = 3


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(path_type=Path))
@INVENTORY_OPTION
@STATE_OPTION
@click.option("--offline", is_flag=True, help="Use declared meso_resources; connect to nothing.")
@OUTPUT_OPTION
def plan(
    jobs: tuple[Path, ...], inventory: str | None, state: Path | None, offline: bool, output: str
) -> int:
    """Place JOBS as if submitted together, in the order given. Exit 0 if all fit, 3 if some
    do not. Through a controller, running tasks count as used and hosts that are not up offer
    nothing."""
    from meso_agentless.cli.render import plan_output
    from meso_agentless.controller.planning import load_jobs

    specs = load_jobs(jobs)
    if offline:
        result, changes = _offline(specs, inventory), []
    else:
        use = backend(inventory, state)
        result = use.plan(specs)
        # against the jobs the controller holds (a new one's placements are in `result`)
        changes = [p for p in map(use.plan_job, specs) if p["action"] != "create"]
    if output == "json":
        print_json({**result, "jobs": changes} if changes else result)
    else:
        for name, reason in sorted(result["unreachable"].items()):
            click.echo(f"meso: warning: {name} not sampled, not planned on: {reason}", err=True)
        for job_plan in changes:
            for line in _change_lines(job_plan):
                click.echo(line)
        plan_output(result)
    misfit = any(p.get("update") and not p["update"]["fits"] for p in changes)
    return EXIT_UNPLACED if result["unplaced"] or misfit else 0


def _change_lines(job_plan: dict) -> list[str]:
    """What submitting the file would change in the job the controller holds, field by field
    (`nomad job plan`'s diff), and what an update would do."""
    from meso_agentless.cli.deployments import change_lines

    if job_plan["action"] == "create":
        return []
    lines = [f"{job_plan['job']}: {job_plan['action']}: {job_plan['reason']}"]
    lines += [f"  {line}" for line in change_lines(job_plan["changes"], job_plan["spec"])]
    update = job_plan.get("update")
    if update:
        lines.append(f"  version {update['from_version']} -> {update['to_version']}: "
                     f"{update['summary']}")  # fmt: skip
    return lines


def _offline(specs: list, inventory: str | None) -> dict:
    """From the inventory's declared capacity alone: nothing is asked of any host."""
    from meso_agentless import settings
    from meso_agentless.controller.planning import declared_hosts, plan_jobs, plan_json
    from meso_agentless.inventory import load_inventory

    cluster = load_inventory(settings.current().inventory_source(inventory))
    result = plan_jobs(specs, cluster.frameworks, declared_hosts(cluster))
    return {**plan_json(result), "unreachable": {}}
