"""`meso plan`: where jobs would go, and why what does not fit does not. Launches nothing."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from meso_agentless.cli.base import OUTPUT_OPTION, print_json
from meso_agentless.controller.planning import declared_hosts, load_jobs, plan_jobs, plan_json
from meso_agentless.core.model import Plan
from meso_agentless.core.resources import PORTS, format_resources
from meso_agentless.inventory import inventory_source, load_inventory

EXIT_UNPLACED = 3


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-i", "--inventory", "inventory", help="Ansible inventory [default: $MESO_INVENTORY]")
@click.option("--offline", is_flag=True, help="Use declared meso_resources; connect to nothing.")
@OUTPUT_OPTION
def plan(jobs: tuple[Path, ...], inventory: str | None, offline: bool, output: str) -> int:
    """Place JOBS as if submitted together. Exit 0 if all fit, 3 if some do not."""
    specs = load_jobs(jobs)
    cluster = load_inventory(inventory_source(inventory))
    unreachable: dict[str, str] = {}
    if offline:
        hosts = declared_hosts(cluster)
    else:
        from meso_agentless.hosts.sampling import sampled_hosts

        hosts, unreachable = sampled_hosts(cluster)
    result = plan_jobs(specs, cluster, hosts)
    if output == "json":
        print_json({**plan_json(result), "unreachable": unreachable})
    else:
        for name, reason in sorted(unreachable.items()):
            click.echo(f"meso: warning: {name} not sampled, not planned on: {reason}", err=True)
        _print_table(result)
    return EXIT_UNPLACED if result.unplaced else 0


def _print_table(result: Plan) -> None:
    console = Console(highlight=False)
    table = Table("job", "task", "index", "framework", "host", "resources", "ports", box=None)
    for p in result.placements:
        resources = {n: a for n, a in p.resources.items() if n != PORTS}
        ports = ",".join(map(str, p.ports))
        table.add_row(p.job, p.task, str(p.index), p.framework, p.host,
                      format_resources(resources), ports)  # fmt: skip
    console.print(table)
    for (job, task, reason), items in groupby(result.unplaced, lambda u: (u.job, u.task, u.reason)):
        indexes = [u.index for u in items]
        span = f"{indexes[0]}" if len(indexes) == 1 else f"{indexes[0]}-{indexes[-1]}"
        console.print(f"unplaced {job}/{task}[{span}]: {reason}")
    shares = ", ".join(f"{fw} {share:.1%}" for fw, share in sorted(result.shares.items()))
    console.print(f"{len(result.placements)} placed, {len(result.unplaced)} unplaced; "
                  f"weighted dominant shares: {shares}")  # fmt: skip
