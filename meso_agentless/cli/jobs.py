"""The everyday commands: run, status, logs, kill, scale, hosts, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meso_agentless.cli.base import OUTPUT_OPTION, print_json
from meso_agentless.controller.loop import Controller
from meso_agentless.controller.planning import resources_json
from meso_agentless.core.resources import PORTS, format_resources
from meso_agentless.errors import UsageError
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.inventory import inventory_source, load_inventory
from meso_agentless.spec import Job, load_job
from meso_agentless.state.sqlite import Store, TaskRow, default_path

INVENTORY_OPTION = click.option(
    "-i", "--inventory", "inventory", help="Ansible inventory [default: $MESO_INVENTORY, config]"
)
STATE_OPTION = click.option(
    "--state", "state", type=click.Path(path_type=Path), default=None,
    help="State database [default: $MESO_STATE, or the platform's state directory]",
)  # fmt: skip


def open_store(state: Path | None) -> Store:
    return Store(state or default_path())


def stored_job(store: Store, name: str) -> tuple[Job, str]:
    row = store.job(name)
    if row is None:
        raise UsageError(f"no job {name!r} in {store.path}")
    return Job.model_validate(row.spec), row.inventory


def plain_report(line: str) -> None:
    click.echo(line, err=True)


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@INVENTORY_OPTION
@STATE_OPTION
@click.option("--detach", is_flag=True, help="Submit and launch what fits, then return.")
@OUTPUT_OPTION
def run(
    job_file: Path, inventory: str | None, state: Path | None, detach: bool, output: str
) -> int:
    """Run JOB_FILE on the cluster.

    Exit 0: every task finished (or the service is up); 1: a task failed or was killed;
    2: bad input; 3: it cannot be placed.
    """
    job = load_job(job_file)
    cluster = load_inventory(inventory_source(inventory))
    store = open_store(state)
    console = Console(stderr=True, highlight=False)
    if console.is_terminal and output != "json":
        with Live(progress_table(store, job.job), console=console, transient=False) as live:
            controller = Controller(store, cluster, report=lambda line: live.console.print(line))
            try:
                outcome = controller.run(
                    job, detach=detach, on_cycle=lambda: live.update(progress_table(store, job.job))
                )
            finally:
                controller.close()
    else:
        controller = Controller(store, cluster, report=plain_report)
        try:
            outcome = controller.run(job, detach=detach)
        finally:
            controller.close()
    if output == "json":
        print_json({"job": job.job, "exit": outcome.code, "message": outcome.message,
                    "tasks": [_task_json(r) for r in store.tasks(job.job)]})  # fmt: skip
    else:
        click.echo(f"{job.job}: {outcome.message}")
        for u in outcome.unplaced[:20]:
            click.echo(f"unplaced {u.job}/{u.task}[{u.index}]: {u.reason}")
    return outcome.code


def progress_table(store: Store, job: str) -> Table:
    """Per task group: instances placed, running, finished, failed (latest attempts)."""
    latest = {}
    for row in store.tasks(job):
        latest[(row.task, row.index)] = row
    table = Table("task", "placed", "running", "finished", "failed", title=job, box=None)
    for task in sorted({t for t, _ in latest}):
        states = [r.state for (t, _), r in latest.items() if t == task]
        ended_badly = sum(s in ("failed", "killed", "gone", "lost") for s in states)
        table.add_row(task, str(len(states)), str(states.count("running")),
                      str(states.count("finished")), str(ended_badly))  # fmt: skip
    return table


@click.command()
@click.argument("job", required=False)
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def status(job: str | None, inventory: str | None, state: Path | None, output: str) -> int:
    """Each task instance of JOB (or every job): host, unit, state, exit code."""
    store = open_store(state)
    names = [job] if job else [j.name for j in store.jobs()]
    sources = {inventory or stored_job(store, name)[1] for name in names}
    for source in sorted(sources):  # what the hosts say now, of any earlier process's intents
        controller = Controller(store, load_inventory(source))
        try:
            controller.sync()
        finally:
            controller.close()
    rows = [r for n in names for r in store.tasks(n)]
    if output == "json":
        jobs = {j.name: j for j in store.jobs()}
        print_json({"jobs": [{"job": n, "state": jobs[n].state, "type": jobs[n].type,
                              "tasks": [_task_json(r) for r in rows if r.job == n]}
                             for n in names]})  # fmt: skip
        return 0
    table = Table("job", "task", "index", "attempt", "host", "unit", "state", "exit", box=None)
    for r in rows:
        how = r.state + (f" ({r.reason})" if r.reason else "")
        table.add_row(r.job, r.task, str(r.index), str(r.attempt), r.host, r.unit, how,
                      "" if r.exit_code is None else str(r.exit_code))  # fmt: skip
    Console(highlight=False).print(table)
    return 0


def _task_json(r: TaskRow) -> dict:
    return {"task": r.task, "index": r.index, "attempt": r.attempt, "host": r.host,
            "unit": r.unit, "state": r.state, "exit_code": r.exit_code, "signal": r.signal,
            "reason": r.reason, "restarts": r.restarts,
            "resources": resources_json({k: v for k, v in r.resources.items() if k != PORTS}),
            "ports": r.ports}  # fmt: skip


@click.command()
@click.argument("job")
@click.argument("which", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@INVENTORY_OPTION
@STATE_OPTION
def logs(job: str, which: str | None, follow: bool, lines: int, inventory: str | None,
         state: Path | None) -> None:  # fmt: skip
    """The journal of JOB's tasks; WHICH picks TASK or TASK/INDEX (latest attempt)."""
    store = open_store(state)
    _, source = stored_job(store, job)
    task, _, index = (which or "").partition("/")
    if index and not index.isdigit():
        raise UsageError(f"{which!r}: use TASK or TASK/INDEX")
    latest = {}
    for r in store.tasks(job):
        if (not task or r.task == task) and (not index or r.index == int(index)):
            latest[(r.task, r.index)] = r
    if not latest:
        raise UsageError(f"job {job!r} has no task {which!r}")
    plane = ExecutionPlane(load_inventory(inventory or source).nodes)
    try:
        for r in latest.values():
            if len(latest) > 1:
                click.echo(f"==> {r.task}[{r.index}] on {r.host} ({r.unit}) <==")
            for chunk in plane.logs(r.host, r.unit, follow=follow and len(latest) == 1,
                                    lines=lines):  # fmt: skip
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    finally:
        plane.close()


@click.command()
@click.argument("job")
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def kill(job: str, inventory: str | None, state: Path | None, output: str) -> None:
    """Stop every task of JOB; nothing of it is restarted."""
    store = open_store(state)
    _, source = stored_job(store, job)
    controller = Controller(store, load_inventory(inventory or source))
    try:
        stopped = controller.kill(job)
    finally:
        controller.close()
    if output == "json":
        print_json({"job": job, "stopped": stopped})
    else:
        click.echo(f"{job}: killed, {len(stopped)} task(s) stopped")


@click.command()
@click.argument("job")
@click.argument("task")
@click.argument("count", type=click.IntRange(0, 10_000))
@INVENTORY_OPTION
@STATE_OPTION
def scale(job: str, task: str, count: int, inventory: str | None, state: Path | None) -> int:
    """Set TASK of JOB to COUNT instances, starting or stopping the difference."""
    store = open_store(state)
    spec, source = stored_job(store, job)
    if task not in {t.name for t in spec.tasks}:
        raise UsageError(f"job {job!r} has no task {task!r}")
    data = spec.model_dump(mode="json")
    for t in data["tasks"]:
        if t["name"] == task:
            t["count"] = count
    scaled = Job.model_validate(data)
    controller = Controller(store, load_inventory(inventory or source), report=plain_report)
    try:
        outcome = controller.run(scaled)
    finally:
        controller.close()
    click.echo(f"{job}/{task}: {count} instance(s); {outcome.message}")
    return outcome.code


@click.command()
@INVENTORY_OPTION
@STATE_OPTION
@OUTPUT_OPTION
def hosts(inventory: str | None, state: Path | None, output: str) -> None:
    """Each host: capacity, allocated (by framework), free, load."""
    from meso_agentless.hosts.sampling import Sample, hosts_from_samples, sample_all

    cluster = load_inventory(inventory_source(inventory))
    samples, failed = sample_all(cluster.nodes)
    store = open_store(state)
    framework_of = {j.name: j.framework for j in store.jobs()}
    by_host: dict[str, dict[str, dict[str, int]]] = {}
    for r in store.tasks():
        if r.state in ("staging", "running", "unreachable"):
            fw = by_host.setdefault(r.host, {}).setdefault(framework_of[r.job], {})
            for k, v in r.resources.items():
                if k != PORTS:
                    fw[k] = fw.get(k, 0) + v
    result = []
    for host in hosts_from_samples(cluster.nodes, samples):
        sample: Sample = samples[host.name]
        free = {k: max(0, v - host.used.get(k, 0)) for k, v in host.capacity.items()}
        result.append({"host": host.name, "capacity": resources_json(host.capacity),
                       "allocated": resources_json(dict(host.used)),
                       "free": resources_json(free), "load": sample.facts["load"],
                       "by_framework": {f: resources_json(a)
                                        for f, a in by_host.get(host.name, {}).items()},
                       "reachable": True})  # fmt: skip
    for name, reason in sorted(failed.items()):
        result.append({"host": name, "reachable": False, "error": reason})
    if output == "json":
        print_json({"hosts": result})
        return
    table = Table("host", "capacity", "allocated", "free", "load", "by framework", box=None)
    for h in result:
        if not h["reachable"]:
            table.add_row(h["host"], "unreachable", "", "", "", h["error"])
            continue
        load = " ".join(f"{x:.2f}" for x in h["load"])
        frameworks = "; ".join(f"{f}: {_fmt(a)}" for f, a in h["by_framework"].items())
        sizes = [_fmt(h[k]) for k in ("capacity", "allocated", "free")]
        table.add_row(h["host"], *sizes, load, frameworks)
    Console(highlight=False).print(table)


def _fmt(resources: dict) -> str:
    return format_resources({k: int(v * 1000) if k == "cpus" else v for k, v in resources.items()})


@click.command()
def schema() -> None:
    """Print the job file's JSON Schema (version 1)."""
    click.echo(json.dumps(Job.model_json_schema(), indent=2))
