"""`meso queue` and `meso explain`: what waits, in which order, and why, per host."""

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


def _amounts(resources: dict | None) -> str:
    from meso_agentless.cli.render import amounts

    return "-" if not resources else amounts(resources)


@click.command()
@click.argument("framework", required=False)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def queue(framework: str | None, inventory: str | None, state: Path | None, output: str) -> None:
    """Pending task groups in the order they will be placed, with position, waiting time and
    the reason each waits; and per framework its guarantee, limit, allocation, what it borrows
    and lends, its dominant share."""
    result = backend(inventory, state).queue(framework)
    if output == "json":
        print_json(result)
        return
    from rich.table import Table

    from meso_agentless.cli.render import console

    table = Table("framework", "weight", "guarantee", "limit", "allocated", "borrowed", "lent",
                  "share", box=None)  # fmt: skip
    for f in result["frameworks"]:
        table.add_row(f["name"], f"{f['weight']:g}", _amounts(f["guarantee"]),
                      _amounts(f["limit"]), _amounts(f["allocated"]), _amounts(f["borrowed"]),
                      _amounts(f["lent"]), f"{f['weighted_share']:.1%}")  # fmt: skip
    out = console()
    out.print(table)
    if not result["pending"]:
        out.print("nothing pending")
        return
    pending = Table("#", "framework", "job", "task", "instances", "priority", "waiting",
                    "why", box=None)  # fmt: skip
    for p in result["pending"]:
        pending.add_row(str(p["position"]), p["framework"], p["job"], p["task"],
                        f"[{p['indexes']}]", str(p["priority"]), f"{p['waiting']:.0f}s",
                        p["reason"])  # fmt: skip
    out.print(pending)


@click.command()
@click.argument("job")
@click.argument("task", required=False)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def explain(
    job: str, task: str | None, inventory: str | None, state: Path | None, output: str
) -> None:
    """Why JOB (or its TASK) is pending: every host, one line each: fits, or the first reason
    it does not (limit, cap, constraint, a resource with free vs needed)."""
    result = backend(inventory, state).explain(job, task)
    if output == "json":
        print_json(result)
        return
    for t in result["tasks"]:
        pending = ",".join(map(str, t["pending"])) or "none"
        click.echo(f"{result['job']}/{t['task']} (pending: {pending})")
        width = max((len(h["host"]) for h in t["hosts"]), default=0)
        for h in t["hosts"]:
            click.echo(f"  {h['host']:<{width}}  {h['reason']}")
