"""Whose the meso units on the hosts are: a unit this state's controllers launched carries the
state's mark at the end of its description, and an attempt of the store names it there.

The controller's cycle cleans up (or stops) the units of its own attempts that ended; a read
(`scan`, the embedded `meso hosts`) only reports the units nobody claims, writing nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from meso_agentless.core.health import ANSWERING
from meso_agentless.core.tasks import TRACKED, TaskState

if TYPE_CHECKING:
    from meso_agentless.controller.fleet import HostView
    from meso_agentless.state.store import StateStore, TaskRow


def state_mark(identity: str) -> str:
    """What ends the description of every unit launched for the state of this identity."""
    return f"[state:{identity}]"


def ours(status: Mapping | None, mark: str) -> bool:
    """Whether a unit on a host is one this state's controllers launched (its description
    ends with our mark; a node command too old to say is taken at its word)."""
    if not status:
        return False
    description = status.get("description")
    return description is None or str(description).endswith(mark)


def nobodys(host: str, status: Mapping | None, row: TaskRow | None, mark: str) -> bool:
    """Whether a unit on `host` is nobody's: no attempt of this state there has its name
    (`row`: the attempt the store has of that name, if any), or it lacks our mark."""
    return row is None or row.host != host or not ours(status, mark)


def loose_units(
    views: Mapping[str, HostView],
    claimed: Mapping[str, set[str]],
    skip: set[str] | frozenset[str] = frozenset(),
) -> Iterator[tuple[str, str]]:
    """(host, unit) for every unit of every answering host (but those in `skip`) that no
    watched attempt claims there, each host's in name order."""
    for name, view in views.items():
        if view.state in ANSWERING and name not in skip:
            for unit in sorted(set(view.units) - claimed.get(name, set())):
                yield name, unit


def unclaimed_units(
    views: Mapping[str, HostView],
    store: StateStore,
    mark: str,
    known: Mapping[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    """The units nobody claims on each host, writing nothing; a host that does not answer
    keeps what `known` says of it (the last found)."""
    claimed: dict[str, set[str]] = defaultdict(set)
    for row in store.tasks_in(TRACKED | {TaskState.LOST}):
        claimed[row.host].add(row.unit)
    known = known or {}
    unclaimed = {name: known[name] for name, view in views.items()
                 if view.state not in ANSWERING and name in known}  # fmt: skip
    for name, unit in loose_units(views, claimed):
        if nobodys(name, views[name].units[unit], store.task_by_unit(unit), mark):
            unclaimed.setdefault(name, []).append(unit)
    return unclaimed
