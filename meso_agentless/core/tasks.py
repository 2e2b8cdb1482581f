"""Tasks on hosts: one typed state from node to store to API, unit names, and reconciling what
the controller expects with what the hosts report (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from meso_agentless.core.health import HostState


class TaskState(StrEnum):
    """The state of one task attempt. A StrEnum: it is stored, sent and compared as its value."""

    STAGING = "staging"  # launched, not yet running
    RUNNING = "running"
    FINISHED = "finished"  # exit 0
    FAILED = "failed"  # exit code, or a reason: oom-killed, timed out
    KILLED = "killed"  # by a signal, or stopped
    UNKNOWN = "unknown"  # the node has no such unit loaded
    UNREACHABLE = "unreachable"  # its host cannot be asked; not known to be lost
    GONE = "gone"  # its host rebooted: transient units do not survive that
    MISSING = "missing"  # never acknowledged and not on its host: launching it again is safe
    LOST = "lost"  # acknowledged, then vanished, or replaced after its host stayed unreachable


S = TaskState
# On the node (the node command keeps a stdlib copy of these two; a test checks they agree):
HOLDS_RESOURCES = frozenset({S.STAGING, S.RUNNING})  # the unit holds what it was given
ENDED_ON_NODE = frozenset({S.FINISHED, S.FAILED, S.KILLED})  # nodecmd.ENDED
# In the controller:
ENDED = ENDED_ON_NODE | {S.GONE, S.LOST}  # an attempt in these states is over for good
WATCHED = HOLDS_RESOURCES | {S.UNREACHABLE}  # waited for; counted as holding its resources
TRACKED = WATCHED | {S.MISSING}  # may hold resources and ports on its host: reconciled


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """What is known of one attempt: its state and how it ended."""

    state: TaskState
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    restarts: int = 0

    @classmethod
    def of(cls, answer: Mapping) -> TaskStatus:
        """From a node command's answer (or any mapping with these keys); unknown states are
        refused with ValueError."""

        def opt_int(key: str) -> int | None:
            value = answer.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        reason = answer.get("reason")
        return cls(
            TaskState(answer["state"]),
            opt_int("exit_code"),
            opt_int("signal"),
            str(reason)[:500] if reason is not None else None,
            opt_int("restarts") or 0,
        )

    def to_json(self) -> dict:
        return {"state": self.state.value, "exit_code": self.exit_code, "signal": self.signal,
                "reason": self.reason, "restarts": self.restarts}  # fmt: skip

    def describe(self) -> str:
        """running, failed (exit 3), failed (oom-killed), ..."""
        text = self.state.value
        if self.exit_code is not None and self.state != S.RUNNING:
            text += f" (exit {self.exit_code})"
        if self.reason:
            text += f" ({self.reason})"
        return text


def unit_name(job: str, task: str, index: int, attempt: int) -> str:
    """meso-JOB_TASK_INDEX_ATTEMPT: unique per attempt, and the launch's idempotency key.

    Job and task names hold no underscore, so the name cannot be read two ways.
    """
    return f"meso-{job}_{task}_{index}_{attempt}"


def parse_unit_name(unit: str) -> tuple[str, str, int, int] | None:
    name = unit.removesuffix(".service").removesuffix(".timer")
    if not name.startswith("meso-"):
        return None
    parts = name[5:].split("_")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[0], parts[1], int(parts[2]), int(parts[3])


@dataclass(frozen=True)
class HostReport:
    """What one host said: its boot identity and the state of each meso unit on it."""

    boot: str
    units: Mapping[str, Mapping]  # unit name (no .service) -> task state as the node reports it


@dataclass(frozen=True)
class Reconciliation:
    states: dict[str, TaskStatus] = field(default_factory=dict)  # expected unit -> status
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (host, unit) not expected
    boots: dict[str, str] = field(default_factory=dict)  # host -> boot identity now


def reconcile(
    expected: Mapping[str, str],
    reports: Mapping[str, HostReport | None],
    known_boots: Mapping[str, str],
) -> Reconciliation:
    """Decide each expected unit's state from the hosts' own reports.

    expected: unit -> host. reports: host -> report, or None if it could not be asked.
    A unit on a host that could not be asked is unreachable (not lost). A unit absent from a
    host that restarted since we last saw it is gone. A unit absent from a host that did not
    restart is missing: it was never launched (its launch was lost on the way) or already
    forgotten, and launching the same attempt again is safe. Units nobody expects are reported,
    not adopted.
    """
    result = Reconciliation()
    for unit, host in sorted(expected.items()):
        report = reports.get(host)
        if report is None:
            result.states[unit] = TaskStatus(S.UNREACHABLE)
        elif unit in report.units:
            result.states[unit] = TaskStatus.of(report.units[unit])
        elif host in known_boots and known_boots[host] != report.boot:
            result.states[unit] = TaskStatus(S.GONE)
        else:
            result.states[unit] = TaskStatus(S.MISSING)
    for host, report in sorted(reports.items()):
        if report is None:
            continue
        result.boots[host] = report.boot
        for unit in sorted(report.units):
            if expected.get(unit) != host:
                result.unknown.append((host, unit))
    return result


def judge(
    stored: TaskState, host: HostState, seen: TaskStatus | None, rebooted: bool
) -> TaskStatus | None:
    """What a stored attempt becomes from what its host says now (pure); None: keep it.

    `host` is the host's state, `seen` the unit's status in the host's report (None: the unit
    is not there), `rebooted` whether that report's boot identity differs from the stored one.
    A host that cannot be asked makes its running tasks unreachable, never lost. A unit absent
    from a host that rebooted is gone; absent from a host that did not, it is missing if it was
    never acknowledged (launching the same attempt again is safe) and lost if it was. Lost is
    final here: a lost unit that shows up again is the caller's to stop (its replacement wins).
    """
    if stored == S.LOST or host in (HostState.UNKNOWN, HostState.GONE):
        return None
    if host == HostState.UNREACHABLE:
        return TaskStatus(S.UNREACHABLE) if stored in HOLDS_RESOURCES else None
    if host == HostState.STOPPING:  # shutting down: what it stops, or stopped, is gone
        if seen is not None and seen.state in (*HOLDS_RESOURCES, S.FINISHED):
            return seen
        return TaskStatus(S.GONE) if stored in TRACKED else None
    if seen is not None and seen.state != S.UNKNOWN:
        return seen
    if rebooted:
        return TaskStatus(S.GONE) if stored in TRACKED else None
    if stored in (S.STAGING, S.MISSING):
        return TaskStatus(S.MISSING)
    if stored in (S.RUNNING, S.UNREACHABLE):
        return TaskStatus(S.LOST)
    return None
