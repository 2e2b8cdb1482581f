"""How the CLI prints what the controller (or the embedded one) answers: tables for people,
the API's own JSON with `-o json`. Every renderer takes the API's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby

from rich.console import Console
from rich.table import Column, Table

from meso_agentless.core.jobs import spans
from meso_agentless.core.resources import format_resources

BAD_ENDS = ("failed", "killed", "gone", "lost")


def console() -> Console:
    return Console(highlight=False)


def amounts(resources: Mapping[str, float | int]) -> str:
    """API amounts (cpus in CPUs, sizes in bytes) the way people read them."""
    return format_resources({k: round(v * 1000) if k == "cpus" else int(v)
                             for k, v in resources.items()})  # fmt: skip


def progress_table(job: Mapping) -> Table:
    """Per task group: instances placed, running, finished, failed (latest attempts)."""
    latest: dict[tuple[str, int], Mapping] = {}
    for t in job["tasks"]:
        latest[(t["task"], t["index"])] = t
    table = Table("task", "placed", "running", "finished", "failed", "pending", title=job["job"],
                  box=None)  # fmt: skip
    pending: dict[str, int] = {}
    for u in job.get("unplaced", []):
        pending[u["task"]] = pending.get(u["task"], 0) + 1
    for task in sorted({t for t, _ in latest} | set(pending)):
        states = [r["state"] for (t, _), r in latest.items() if t == task]
        bad = sum(s in BAD_ENDS for s in states)
        counts = (len(states), states.count("running"), states.count("finished"), bad,
                  pending.get(task, 0))  # fmt: skip
        table.add_row(task, *map(str, counts))
    return table


def jobs_table(jobs: list[Mapping]) -> Table:
    table = Table("job", "task", "index", "attempt", "host", "unit", "state", "exit", box=None)
    for job in jobs:
        for t in job["tasks"]:
            how = t["state"] + (f" ({t['reason']})" if t["reason"] else "")
            if t.get("health") and t["state"] == "running":
                how += f", {t['health']}"
            exit_code = "" if t["exit_code"] is None else str(t["exit_code"])
            table.add_row(job["job"], t["task"], str(t["index"]), str(t["attempt"]), t["host"],
                          t["unit"], how, exit_code)  # fmt: skip
        for line in unplaced_lines(job["job"], job.get("unplaced", [])):
            _, _, rest = line.partition("/")
            task, _, rest = rest.partition("[")
            indexes, _, reason = rest.partition("]: ")
            table.add_row(job["job"], task, indexes, "", "", "", f"pending ({reason})", "")
    return table


def cron_table(job: Mapping) -> Table:
    """A cron job: which host holds each timer, the next fire time, the latest runs."""
    from datetime import UTC, datetime

    cron = job["cron"]
    holders = ", ".join(f"{t['task']}[{t['index']}] on {t['host']}" for t in cron["timers"])
    title = (f"{job['job']}: {cron['schedule']!r} ({cron['timezone']}), concurrency "
             f"{cron['concurrency']}; timer {holders or 'not placed'}; "
             f"next {cron['next_shown']}")  # fmt: skip
    table = Table("scheduled", "started", "ended", "host", "run", "state", "exit", title=title,
                  box=None, title_justify="left")  # fmt: skip

    def when(value: float | None) -> str:
        if value is None:
            return "-"
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    for run in job["runs"][:10]:
        state = run["state"] + (f" ({run['reason']})" if run["reason"] else "")
        exit_code = "" if run["exit_code"] is None else str(run["exit_code"])
        scheduled = when(run["scheduled"]) if run["kind"] == "schedule" else "(triggered)"
        table.add_row(scheduled, when(run["fired"]), when(run["ended"]), run["host"], run["unit"],
                      state, exit_code)  # fmt: skip
    return table


def unplaced_lines(job: str, unplaced: list[Mapping]) -> list[str]:
    """`unplaced JOB/TASK[0-3,7]: reason`: indexes with the same reason folded into runs."""
    lines = []
    for (task, reason), items in groupby(unplaced, lambda u: (u["task"], u["reason"])):
        runs = spans(u["index"] for u in items)
        which = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
        lines.append(f"unplaced {job}/{task}[{which}]: {reason}")
    return lines


def hosts_table(hosts: list[Mapping]) -> Table:
    # a narrow terminal wraps the free text (an error, the frameworks), never a host or state
    table = Table(Column("host", no_wrap=True), Column("state", no_wrap=True), "capacity",
                  "allocated", "free", "load", "by framework", box=None)  # fmt: skip
    for h in hosts:
        state = h["state"]
        if h["stale"] and h["age"] is not None:
            state += f" (last seen {h['age']:.0f}s ago)"
        if not h["capacity"]:
            table.add_row(h["host"], state, "", "", "", "", h["error"] or "")
            continue
        load = " ".join(f"{x:.2f}" for x in h["load"])
        frameworks = "; ".join(f"{f}: {amounts(a)}" for f, a in h["by_framework"].items())
        if h["unclaimed"]:
            frameworks += ("; " if frameworks else "") + f"unclaimed: {', '.join(h['unclaimed'])}"
        table.add_row(h["host"], state, amounts(h["capacity"]), amounts(h["allocated"]),
                      amounts(h["free"]), load, frameworks)  # fmt: skip
    return table


def frameworks_table(frameworks: list[Mapping]) -> Table:
    table = Table("framework", "weight", "quota", "allocated", "share", "weighted share",
                  "tasks", box=None)  # fmt: skip
    for f in frameworks:
        quota = "none" if not f["quota"] else amounts(f["quota"])
        shares = f"{f['share']:.1%}", f"{f['weighted_share']:.1%}"
        table.add_row(f["name"], f"{f['weight']:g}", quota, amounts(f["allocated"]), *shares,
                      str(f["tasks"]))  # fmt: skip
    return table


def plan_output(result: Mapping) -> None:
    out = console()
    table = Table("job", "task", "index", "framework", "host", "resources", "ports", box=None)
    for p in result["placements"]:
        ports = ",".join(map(str, p["ports"]))
        host = p["host"] + (" (revocable)" if p.get("revocable") else "")
        table.add_row(p["job"], p["task"], str(p["index"]), p["framework"], host,
                      amounts(p["resources"]), ports)  # fmt: skip
    out.print(table)
    for r in result.get("revocations", ()):
        out.print(f"revoke {r['job']}/{r['task']}[{r['index']}] on {r['host']} "
                  f"({r['framework']}): {r['owner']} needs its guarantee back")  # fmt: skip
    by_job = groupby(result["unplaced"], lambda u: u["job"])
    for job, items in by_job:
        for line in unplaced_lines(job, list(items)):
            out.print(line)
    shares = ", ".join(f"{fw} {share:.1%}" for fw, share in sorted(result["shares"].items()))
    out.print(f"{len(result['placements'])} placed, {len(result['unplaced'])} unplaced; "
              f"weighted dominant shares: {shares}")  # fmt: skip
