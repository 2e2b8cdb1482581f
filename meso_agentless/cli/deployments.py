"""Changing a running service: `meso deployment status|promote|fail JOB`, `meso history JOB`,
`meso revert JOB VERSION` (the API's /v1/jobs/NAME/versions, /deployment and /revert)."""

from __future__ import annotations

from pathlib import Path

import click

from meso_agentless.cli.base import INVENTORY_OPTION, OUTPUT_OPTION, STATE_OPTION, backend
from meso_agentless.cli.base import print_json as _print_json


def _progress_line(view: dict) -> str:
    parts = [f"{task}: {p['healthy']}/{p['desired']} new healthy, {p['old']} old running"
             for task, p in view["progress"].items()]  # fmt: skip
    return "; ".join(parts)


def deployment_lines(view: dict) -> list[str]:
    what = "revert" if view["revert"] else "deployment"
    canary = ", promoted" if view["promoted"] else ""
    return [
        f"{view['job']}: {what} {view['id']} version {view['from_version']} -> "
        f"{view['to_version']}: {view['state']}{canary}",
        f"  {view['reason'] or ''}".rstrip(),
        f"  {_progress_line(view)}",
    ]


@click.group()
def deployment() -> None:
    """A service's deployment: a new version rolling out (started by `meso run`)."""


@deployment.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def status(job: str, inventory: str | None, state: Path | None, output: str) -> None:
    """JOB's latest deployment: versions, state, and how far it is."""
    view = backend(inventory, state).deployment(job)
    if output == "json":
        _print_json(view)
        return
    for line in deployment_lines(view):
        click.echo(line)


def _act(job: str, action: str, inventory: str | None, state: Path | None, output: str) -> int:
    from meso_agentless.cli.jobs import _follow_printer

    use = backend(inventory, state)
    on_event, _ = _follow_printer(job, False, use)
    view, outcome = use.deployment_action(job, action, on_event)
    if output == "json":
        _print_json({"deployment": view, "outcome": outcome})
    else:
        for line in deployment_lines(view):
            click.echo(line)
        if outcome is not None:
            click.echo(f"{job}: {outcome['message']}")
    return 0 if outcome is None else outcome["code"]


@deployment.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def promote(job: str, inventory: str | None, state: Path | None, output: str) -> int:
    """Promote JOB's healthy canaries: the other instances are then replaced, and this
    follows the deployment. Exit 0 when it completes, 1 when it fails."""
    return _act(job, "promote", inventory, state, output)


@deployment.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def fail(job: str, inventory: str | None, state: Path | None, output: str) -> int:
    """Fail JOB's deployment under way (with auto_revert, it goes back by itself)."""
    return _act(job, "fail", inventory, state, output)


@click.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def history(job: str, inventory: str | None, state: Path | None, output: str) -> None:
    """Every version of JOB's spec: when, by whom, and what changed from the one before."""
    import time

    result = backend(inventory, state).versions(job)
    if output == "json":
        _print_json(result)
        return
    for v in result["versions"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["submitted"]))
        mark = " (current)" if v["version"] == result["current"] else ""
        who = f" by {v['submitter']}" if v["submitter"] else ""
        click.echo(f"version {v['version']}{mark}: {when}{who}")
        for line in change_lines(v["changes"], v["spec"]):
            click.echo(f"  {line}")


def change_lines(changes: list[dict], spec: dict) -> list[str]:
    """One line per field: `tasks[server].resources.mem: 64MiB -> 128MiB`."""
    import json
    import re

    from meso_agentless.core.resources import MEM, format_quantity

    names = [t.get("name") for t in spec.get("tasks", [])]

    def path(p: str) -> str:
        return re.sub(r"^tasks\[(\d+)\]", lambda m: f"tasks[{_name(names, int(m[1]))}]", p)

    def show(value: object, field: str) -> str:
        if field.endswith((".mem", ".disk")) and isinstance(value, int):
            return format_quantity(MEM, value)
        return json.dumps(value)

    out = []
    for c in changes:
        if c["kind"] == "added":
            out.append(f"+ {path(c['path'])}: {show(c['after'], c['path'])}")
        elif c["kind"] == "removed":
            out.append(f"- {path(c['path'])}: {show(c['before'], c['path'])}")
        else:
            out.append(f"~ {path(c['path'])}: {show(c['before'], c['path'])} -> "
                       f"{show(c['after'], c['path'])}")  # fmt: skip
    return out


def _name(names: list, index: int) -> str:
    return str(names[index]) if index < len(names) else str(index)


@click.command()
@click.argument("job")
@click.argument("version", type=click.IntRange(1))
@INVENTORY_OPTION
@STATE_OPTION
def revert(job: str, version: int, inventory: str | None, state: Path | None) -> int:
    """Run VERSION of JOB again (stored as its next version, rolled out by a deployment) and
    follow it. Exit 0 when it completes, 1 when it fails."""
    from meso_agentless.cli.jobs import _follow_printer

    use = backend(inventory, state)
    on_event, _ = _follow_printer(job, False, use)
    _view, outcome = use.revert(job, version, on_event)
    click.echo(f"{job}: {outcome['message']}")
    return outcome["code"]
