"""Cron jobs in the controller: what each host's samples carry for its timers, and the runs the
hosts report, as the store keeps them (pure but for the store reads the caller passes in).

A cron job's task instance is one timer on one host, placed and kept like a service instance
(its attempt is the timer; `meso-JOB_TASK_INDEX_ATTEMPT.timer`). Between firings it holds
nothing; a run holds its resources while it runs. The host fires the timer itself, so runs
happen while the controller is stopped, restarting or cut off, and it records each firing; the
controller collects those records (sample `after` says which it has) into the runs table.

No double firing: every sample renews the lease of each timer the controller means to be on
that host (and only those), a host fires only under a live lease, and the controller places a
timer elsewhere only after its host was silent for longer than the lease (the job's
`disconnect.replace_after`); a stale timer that shows up again has no lease and is removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meso_agentless.core.tasks import WATCHED
from meso_agentless.node.nodecmd import RUN_NAME, UNIT_NAME
from meso_agentless.state.store import RunRow, TaskRow

KINDS = ("schedule", "trigger", "catch-up")
RUN_ENDED = frozenset({"finished", "failed", "killed", "skipped", "lost"})
_NODE_STATES = {"started": "running", "staging": "running", "running": "running",
                "finished": "finished",
                "failed": "failed", "killed": "killed", "skipped": "skipped"}  # fmt: skip


def sample_fields(
    owner: str,
    hosts: Iterable[str],
    timers: Iterable[TaskRow],
    stored: Mapping[str, Mapping[str, int]],
) -> dict[str, dict]:
    """host -> what its samples carry: the leases of the timers held there (every watched
    attempt of a cron job: staging, running, or unreachable while its host is away) and, per
    timer, the record up to which its runs are stored."""
    leases: dict[str, list[str]] = {h: [] for h in hosts}
    for row in timers:
        if row.state in WATCHED and row.host in leases:
            leases[row.host].append(row.unit)
    out = {}
    for host, units in leases.items():
        fields: dict = {"leases": {"owner": owner, "units": sorted(units)}}
        after = dict(stored.get(host, {}))
        if after:
            fields["after"] = after
        out[host] = fields
    return out


@dataclass(frozen=True)
class Observed:
    """A run as a host reported it, made into the row to store (or None: nothing to store),
    and whether its unit can be unloaded on the host once stored."""

    row: RunRow | None
    forget: bool


def observe_run(
    report: Mapping, timer: TaskRow, host: str, stored: RunRow | None, now: float
) -> Observed:
    """What one reported run means (pure). A run that ended stays as stored; one the host
    says is gone before its end was stored (the host rebooted) is lost."""
    unit, seq = report.get("run"), report.get("seq")
    if not isinstance(unit, str) or not RUN_NAME.fullmatch(unit) or not isinstance(seq, int):
        return Observed(None, False)
    if not unit.startswith(f"{timer.unit}-"):
        return Observed(None, False)
    reported = str(report.get("state") or "")
    state = _NODE_STATES.get(reported, "lost")
    reason = report.get("reason")
    if state == "lost":
        reason = reason or "its unit is gone before its end was recorded (the host rebooted?)"
    if stored is not None and stored.state in RUN_ENDED:
        return Observed(None, stored.state != "skipped" and bool(report.get("loaded")))
    exit_code, signal = _int(report.get("exit_code")), _int(report.get("signal"))
    end = _float(report.get("end"))  # the unit's own exit time, where the host says it
    ended = (end or now) if state in RUN_ENDED else None
    row = RunRow(
        id=0, job=timer.job, run=timer.run, task=timer.task, index=timer.index,
        timer=timer.unit, host=host, unit=unit, seq=seq,
        kind=str(report["kind"]) if report.get("kind") in KINDS else "schedule",
        scheduled=_float(report.get("scheduled")), fired=_float(report.get("fired")) or now,
        state=state, exit_code=exit_code, signal=signal,
        reason=str(reason)[:500] if reason is not None else None, ended=ended, version=0,
    )  # fmt: skip
    ended_here = state in ("finished", "failed", "killed") and bool(report.get("loaded"))
    return Observed(row, ended_here)


def describe(run: RunRow) -> str:
    """One line for an event: job/task[i] run UNIT on HOST: started (scheduled ...)."""
    text = run.state if run.state != "running" else "started"
    if run.exit_code is not None and run.state != "running":
        text += f" (exit {run.exit_code})"
    if run.reason:
        text += f" ({run.reason})"
    return f"{run.job}/{run.task}[{run.index}] run {run.unit} on {run.host}: {text}"


def timer_unit(name: object) -> bool:
    return isinstance(name, str) and bool(UNIT_NAME.fullmatch(name))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
