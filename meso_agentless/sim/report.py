"""Figures from a simulation run: utilization over time, makespan, waits and completion times
per framework, dominant shares, work done, what was never placed (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from meso_agentless.core.resources import CPUS, MEM
from meso_agentless.sim.events import Run

MS = 1000


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def weighted_quantile(values: Sequence[float], weights: Sequence[int], q: float) -> float | None:
    """The value below which a fraction q of the total weight lies (time-weighted)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    whole = sum(w for _, w in pairs)
    if not whole:
        return None
    running = 0
    for value, weight in pairs:
        running += weight
        if running >= q * whole:
            return value
    return pairs[-1][0]


def durations(run: Run) -> list[int]:
    """How long each point of the series lasted."""
    times = run.times
    return [later - now for now, later in zip(times, [*times[1:], run.end_ms], strict=True)]


def work(run: Run) -> dict[str, int]:
    """Resource x milliseconds used by the tasks that ran, per dimension (exact integers)."""
    out: dict[str, int] = {}
    for task in run.tasks:
        length = task.end_ms - task.start_ms
        for d, amount in run.rows[task.row].resources.items():
            out[d] = out.get(d, 0) + amount * length
    return out


def series_work(run: Run) -> dict[str, int]:
    """The same, from the utilization series (it must agree with `work`)."""
    spans = durations(run)
    return {d: sum(u * s for u, s in zip(used, spans, strict=True)) for d, used in run.used.items()}


def jobs(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
    """Per job: submit, first start, last end (batch), instances unplaced, whether a service."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in run.rows:
        job = out.setdefault((row.framework, row.job), {
            "submit": row.submit_ms, "start": None, "end": None, "unplaced": 0, "service": False,
        })  # fmt: skip
        job["submit"] = min(job["submit"], row.submit_ms)
        job["service"] = job["service"] or row.is_service
    for task in run.tasks:
        row = run.rows[task.row]
        job = out[(row.framework, row.job)]
        job["start"] = task.start_ms if job["start"] is None else min(job["start"], task.start_ms)
        job["end"] = task.end_ms if job["end"] is None else max(job["end"], task.end_ms)
    for row, count, _ in run.unplaced:
        out[(run.rows[row].framework, run.rows[row].job)]["unplaced"] += count
    return out


def summarize(run: Run) -> dict[str, Any]:
    """The figures of one run, as plain data (seconds, fractions)."""
    spans = durations(run)
    length = run.end_ms - run.start_ms
    utilization = {}
    for d in (CPUS, MEM):
        cap = run.capacity.get(d, 0)
        if not cap:
            continue
        fractions = [u / cap for u in run.used[d]]
        utilization[d] = {
            "mean": _round(sum(f * s for f, s in zip(fractions, spans, strict=True)) / length)
            if length
            else None,
            "p50": _round(weighted_quantile(fractions, spans, 0.5)),
            "p95": _round(weighted_quantile(fractions, spans, 0.95)),
        }
    per_job = jobs(run)
    frameworks: dict[str, Any] = {}
    for name in sorted({r.framework for r in run.rows}):
        mine = [j for (fw, _), j in per_job.items() if fw == name]
        waits = [(j["start"] - j["submit"]) / MS for j in mine if j["start"] is not None]
        done = [(j["end"] - j["submit"]) / MS for j in mine
                if not j["service"] and not j["unplaced"] and j["end"] is not None]  # fmt: skip
        shares = share_series(run, name)
        frameworks[name] = {
            "jobs": len(mine),
            "wait_s": {"p50": _round(quantile(waits, 0.5)), "p95": _round(quantile(waits, 0.95))},
            "completion_s": {
                "p50": _round(quantile(done, 0.5)),
                "p95": _round(quantile(done, 0.95)),
            },
            "share": {
                "mean": _round(sum(s * w for s, w in zip(shares, spans, strict=True)) / length)
                if length
                else None,
                "max": _round(max(shares, default=0.0)),
            },
        }
        if run.owners is not None:
            frameworks[name]["hosts"] = sum(1 for o in run.owners.values() if o == name)
    used = work(run)
    return {
        "mode": run.mode,
        "hosts": run.hosts,
        "tasks": len(run.tasks),
        "cycles": run.cycles,
        "makespan_s": length / MS,
        "utilization": utilization,
        "work": {
            "cpu_seconds": used.get(CPUS, 0) / MS / MS,
            "mem_gib_seconds": _round(used.get(MEM, 0) / 2**30 / MS),
        },
        "frameworks": frameworks,
        "jobs": [
            {
                "framework": fw,
                "job": name,
                "submit_s": j["submit"] / MS,
                "start_s": None if j["start"] is None else j["start"] / MS,
                "end_s": None if j["end"] is None or j["service"] else j["end"] / MS,
            }
            for (fw, name), j in sorted(per_job.items(), key=lambda kv: (kv[1]["submit"], kv[0]))
        ],
        "unplaced": [
            {
                "framework": run.rows[r].framework,
                "job": run.rows[r].job,
                "task": run.rows[r].task,
                "instances": n,
                "reason": why,
            }
            for r, n, why in run.unplaced
        ],
    }


def share_series(run: Run, framework: str) -> list[float]:
    """The framework's dominant share of the cluster at each point of the series."""
    held = run.held.get(framework, {})
    dims = [(d, run.capacity[d]) for d in held if run.capacity.get(d)]
    points = len(run.times)
    return [max((held[d][i] / cap for d, cap in dims), default=0.0) for i in range(points)]


def job_starts(run: Run) -> list[str]:
    """Jobs in the order their first task started (ties: by name)."""
    starts = {(fw, job): j["start"] for (fw, job), j in jobs(run).items() if j["start"] is not None}
    return [job for (_, job), _ in sorted(starts.items(), key=lambda kv: (kv[1], kv[0][1]))]


def render(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The runs side by side, as text."""
    modes = list(summaries)
    lines: list[list[str]] = [["", *modes]]

    def row(label: str, get: Any, fmt: str = "{}") -> None:
        cells = []
        for mode in modes:
            value = get(summaries[mode])
            cells.append("-" if value is None else fmt.format(value))
        lines.append([label, *cells])

    row("hosts", lambda s: s["hosts"])
    row("tasks run", lambda s: s["tasks"])
    row("makespan", lambda s: s["makespan_s"], "{:g}s")
    for d in ("cpus", "mem"):
        for stat in ("mean", "p50", "p95"):
            row(f"{d} utilization {stat}",
                lambda s, d=d, stat=stat: _pct(s["utilization"].get(d, {}).get(stat)))  # fmt: skip
    names = sorted({n for s in summaries.values() for n in s["frameworks"]})
    for name in names:
        fw = lambda s, name=name: s["frameworks"].get(name, {})  # noqa: E731
        if any("hosts" in fw(s) for s in summaries.values()):
            row(f"{name}: hosts", lambda s, fw=fw: fw(s).get("hosts"))
        row(f"{name}: wait p50/p95", lambda s, fw=fw: _pair(fw(s).get("wait_s")))
        row(f"{name}: completion p50/p95", lambda s, fw=fw: _pair(fw(s).get("completion_s")))
        row(f"{name}: share mean/max",
            lambda s, fw=fw: _pair(fw(s).get("share"), "mean", "max", "{:.2f}"))  # fmt: skip
    row("instances never placed", lambda s: sum(u["instances"] for u in s["unplaced"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in lines
    )  # fmt: skip
    for mode in modes:
        for u in summaries[mode]["unplaced"]:
            text += (f"\n{mode}: never placed: {u['framework']}/{u['job']}/{u['task']} "
                     f"x{u['instances']}: {u['reason']}")  # fmt: skip
    return text


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def _pair(d: Mapping | None, a: str = "p50", b: str = "p95", fmt: str = "{:g}s") -> str | None:
    if not d or d.get(a) is None:
        return None
    return f"{fmt.format(d[a])} / {fmt.format(d[b])}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
