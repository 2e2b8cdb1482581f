"""The everyday commands: run, status, logs, kill, scale, hosts, frameworks, schema.

Each works the same through a controller (MESO_ADDR) and embedded: same output, same exit
codes (0 done or up, 1 failed or killed, 2 bad input, 3 cannot be placed).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from meso_agentless.cli.base import (
    INVENTORY_OPTION,
    OUTPUT_OPTION,
    STATE_OPTION,
    backend,
    print_json,
    stderr_console,
)
from meso_agentless.errors import MesoError, Unplaceable, UsageError


def _follow_printer(job: str, live_view: bool, use: object) -> tuple:
    """What prints the events of a job while a command waits on it: plain lines on stderr,
    or a live table with the lines above it on a terminal."""
    console = stderr_console()

    def printable(event: dict) -> bool:  # the outcome itself is the command's own last line
        return not (event["kind"] == "job" and "code" in event["data"] and event["job"] == job)

    if not (live_view and console.is_terminal):
        return (lambda event: printable(event) and click.echo(event["message"], err=True)), None
    from rich.live import Live

    from meso_agentless.cli.render import progress_table

    live = Live(console=console, transient=False)

    def on_event(event: dict) -> None:
        if printable(event):
            live.console.print(event["message"])
        with contextlib.suppress(MesoError):  # the table is a nicety; the lines carry the news
            live.update(progress_table(use.job(job)))  # type: ignore[attr-defined]

    return on_event, live


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@INVENTORY_OPTION
@STATE_OPTION
@click.option("--detach", is_flag=True, help="Submit, place what fits, and return.")
@click.option("--again", is_flag=True, help="Start a new run even if this job is done.")
@OUTPUT_OPTION
def run(
    job_file: Path,
    inventory: str | None,
    state: Path | None,
    detach: bool,
    again: bool,
    output: str,
) -> int:
    """Run JOB_FILE on the cluster and follow it: a batch job to its end, a service until up.

    Running it again resumes it; once it is done, the same file is not run again (its outcome
    is shown) unless --again: a run retried after its command broke never runs twice.
    Exit 0: every task finished (or the service is up); 1: a task failed or was killed;
    2: bad input; 3: it cannot be placed.
    """
    from meso_agentless.cli.render import unplaced_lines
    from meso_agentless.spec import load_job

    job = load_job(job_file)
    use = backend(inventory, state)
    on_event, live = _follow_printer(job.job, output != "json" and not detach, use)
    try:
        if live is not None:
            with live:
                view, outcome = use.run(job, detach, on_event, again)
        else:
            view, outcome = use.run(job, detach, on_event, again)
    except Unplaceable as exc:  # nothing was stored or launched
        view = {"tasks": [], "unplaced": exc.unplaced}
        outcome = {"code": exc.exit_code, "message": str(exc)}
    if outcome is None:  # detached before an outcome
        code = 0
        message = f"submitted: {len(view['tasks'])} placed, {len(view['unplaced'])} pending"
    else:
        code, message = outcome["code"], outcome["message"]
        if detach and code != 3:
            code, message = 0, f"submitted ({message})"
    if output == "json":
        print_json({"job": job.job, "exit": code, "message": message, "tasks": view["tasks"],
                    "unplaced": view["unplaced"]})  # fmt: skip
    else:
        click.echo(f"{job.job}: {message}")
        for line in unplaced_lines(job.job, view["unplaced"])[:20]:
            click.echo(line)
    return code


@click.command()
@click.argument("job", required=False)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def status(job: str | None, inventory: str | None, state: Path | None, output: str) -> int:
    """Each task instance of JOB (or every job): host, unit, state, exit code."""
    result = backend(inventory, state).jobs([job] if job else None)
    if output == "json":
        print_json(result)
        return 0
    from meso_agentless.cli.render import console, cron_table, jobs_table

    out = console()
    out.print(jobs_table(result["jobs"]))
    for view in result["jobs"]:
        if view.get("cron"):
            out.print(cron_table(view))
    return 0


@click.command()
@click.argument("job")
@click.argument("which", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--run", "run_unit", metavar="UNIT", help="One run of a cron job (from `status`).")
@INVENTORY_OPTION
@STATE_OPTION
def logs(job: str, which: str | None, follow: bool, lines: int, run_unit: str | None,
         inventory: str | None, state: Path | None) -> None:  # fmt: skip
    """The journal of JOB's tasks; WHICH picks TASK or TASK/INDEX (latest attempt); --run a
    cron job's run."""
    task, _, index = (which or "").partition("/")
    if index and not index.isdigit():
        raise UsageError(f"{which!r}: use TASK or TASK/INDEX")
    if run_unit is not None and which:
        raise UsageError("--run names one run already: leave out TASK/INDEX")
    for chunk in backend(inventory, state).logs(
        job, task or None, int(index) if index else None, follow, lines, run_unit
    ):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


@click.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def kill(job: str, inventory: str | None, state: Path | None, output: str) -> None:
    """Stop every task of JOB on every host; nothing of it is restarted."""
    result = backend(inventory, state).kill(job)
    if output == "json":
        print_json(result)
    else:
        click.echo(f"{job}: killed, {len(result['stopped'])} task(s) stopped")


@click.command()
@click.argument("job")
@click.argument("task")
@click.argument("count", type=click.IntRange(0, 10_000))
@INVENTORY_OPTION
@STATE_OPTION
def scale(job: str, task: str, count: int, inventory: str | None, state: Path | None) -> int:
    """Set TASK of JOB to COUNT instances, starting or stopping the difference."""
    use = backend(inventory, state)
    on_event, _ = _follow_printer(job, False, use)
    _view, outcome = use.scale(job, task, count, on_event)
    click.echo(f"{job}/{task}: {count} instance(s); {outcome['message']}")
    return outcome["code"]


@click.command()
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def hosts(inventory: str | None, state: Path | None, output: str) -> None:
    """Each host: state, capacity, allocated (by framework), free, load."""
    result = backend(inventory, state).hosts()
    if output == "json":
        print_json(result)
        return
    from meso_agentless.cli.render import console, hosts_table

    console().print(hosts_table(result["hosts"]))


@click.command()
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def gc(inventory: str | None, state: Path | None, output: str) -> None:
    """Stop the meso units on the hosts that no job claims (they are reported, never adopted)."""
    result = backend(inventory, state).gc()
    if output == "json":
        print_json(result)
        return
    for s in result["stopped"]:
        click.echo(f"{s['host']}: {s['unit']}: {s['state']}")
    click.echo(f"{len(result['stopped'])} unit(s) stopped")


@click.command()
@click.argument("host")
@click.option("--deadline", default="10m", show_default=True,
              help="How long batch tasks may run on before they move.")  # fmt: skip
@click.option("--undo", is_flag=True, help="Stop draining: the host takes new tasks again.")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def drain(host: str, deadline: str, undo: bool, inventory: str | None, state: Path | None,
          output: str) -> None:  # fmt: skip
    """Move everything off HOST: nothing new is placed there, service instances move one at a
    time (the new one up before the old one stops), batch tasks may finish until the deadline,
    then move. The host is `draining`, then `drained`."""
    info = backend(inventory, state).drain(host, None if undo else deadline)
    if output == "json":
        print_json(info)
        return
    click.echo(f"{host}: {info['state']}" + (f", {info['tasks']} task(s) there"
                                             if info["tasks"] else ""))  # fmt: skip


@click.group(invoke_without_command=True)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
@click.pass_context
def cluster(ctx: click.Context, inventory: str | None, state: Path | None, output: str) -> None:
    """Hosts by state, and whether tasks of unreachable hosts are being replaced."""
    ctx.obj = (inventory, state)
    if ctx.invoked_subcommand is not None:
        return
    info = backend(inventory, state).cluster()
    if output == "json":
        print_json(info)
        return
    hosts = ", ".join(f"{n} {s}" for s, n in info["hosts"].items())
    click.echo(f"hosts: {hosts}; replacements: {info['replacements']}")


@cluster.command("allow-replacements")
@click.pass_obj
def allow_replacements(obj: tuple) -> None:
    """Replace the tasks of unreachable hosts now, although many went at once (the controller
    paused, taking it for its own network failure)."""
    info = backend(*obj).allow_replacements()
    click.echo(f"replacements: {info['replacements']}")


@click.group(invoke_without_command=True)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
@click.pass_context
def frameworks(ctx: click.Context, inventory: str | None, state: Path | None, output: str) -> None:
    """Each framework: weight, quota, what it holds, its dominant share."""
    ctx.obj = (inventory, state)
    if ctx.invoked_subcommand is not None:
        return
    result = backend(inventory, state).frameworks()
    if output == "json":
        print_json(result)
        return
    from meso_agentless.cli.render import console, frameworks_table

    console().print(frameworks_table(result["frameworks"]))


@frameworks.command("set")
@click.argument("name")
@click.option("--weight", type=click.FloatRange(min=0.001, max=1e6), default=None)
@click.option("--quota", default=None, metavar="R=N,...",
              help="A maximum per resource, e.g. cpus=8,mem=32GiB (0 is a limit).")  # fmt: skip
@click.pass_obj
def set_framework(obj: tuple, name: str, weight: float | None, quota: str | None) -> None:
    """Change a framework's weight or quota at run time (kept in the state)."""
    change: dict = {}
    if weight is not None:
        change["weight"] = weight
    if quota is not None:
        pairs = [p.partition("=") for p in quota.split(",") if p.strip()]
        if any(not sep or not k.strip() for k, sep, _ in pairs):
            raise UsageError(f"--quota: {quota!r} is not RESOURCE=AMOUNT,...")
        change["quota"] = {k.strip(): v.strip() for k, _, v in pairs}
    if not change:
        raise UsageError("give --weight, --quota or both")
    info = backend(*obj).set_framework(name, change)
    click.echo(f"{name}: weight {info['weight']:g}, quota "
               f"{'none' if info['quota'] is None else info['quota']}")  # fmt: skip


@click.command()
def schema() -> None:
    """Print the job file's JSON Schema (version 1)."""
    from meso_agentless.spec import Job

    click.echo(json.dumps(Job.model_json_schema(), indent=2))


@click.group()
def cron() -> None:
    """Cron jobs (type: cron): timers on the hosts. `meso status JOB` shows their next fire
    time and latest runs; `meso logs JOB --run UNIT` a run's journal."""


@cron.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def trigger(job: str, inventory: str | None, state: Path | None, output: str) -> int:
    """Run JOB once now, on the host holding each timer (its concurrency rule applies).

    Exit 0: every timer started a run; 1: a firing was skipped (the reason is shown)."""
    result = backend(inventory, state).trigger(job)
    runs = result["runs"]
    if output == "json":
        print_json(result)
    else:
        for run in runs:
            how = run["state"] + (f" ({run['reason']})" if run.get("reason") else "")
            click.echo(f"{job}/{run['task']}[{run['index']}] on {run['host']}: "
                       f"{run.get('unit') or ''} {how}".replace("  ", " "))  # fmt: skip
    return 0 if runs and all(r["state"] == "running" for r in runs) else 1
