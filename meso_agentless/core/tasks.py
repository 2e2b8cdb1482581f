"""Tasks on hosts: unit names, states, and reconciling what the controller expects with what
the hosts report (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

State = Literal[
    "staging", "running", "finished", "failed", "killed", "unknown", "unreachable", "gone",
    "missing",
]  # fmt: skip


def unit_name(job: str, task: str, index: int, attempt: int) -> str:
    """meso-JOB_TASK_INDEX_ATTEMPT: unique per attempt, and the launch's idempotency key.

    Job and task names hold no underscore, so the name cannot be read two ways.
    """
    return f"meso-{job}_{task}_{index}_{attempt}"


def parse_unit_name(unit: str) -> tuple[str, str, int, int] | None:
    name = unit.removesuffix(".service")
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
    states: dict[str, dict] = field(default_factory=dict)  # expected unit -> state
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
            result.states[unit] = {"state": "unreachable"}
        elif unit in report.units:
            result.states[unit] = dict(report.units[unit])
        elif host in known_boots and known_boots[host] != report.boot:
            result.states[unit] = {"state": "gone"}
        else:
            result.states[unit] = {"state": "missing"}
    for host, report in sorted(reports.items()):
        if report is None:
            continue
        result.boots[host] = report.boot
        for unit in sorted(report.units):
            if expected.get(unit) != host:
                result.unknown.append((host, unit))
    return result
