"""Why is this pending? One answer per host for one task group (pure).

Each host either fits one more instance of the group now, or gets the first reason it does not,
in the order the allocator checks them: the framework's limit, the group's cap, a constraint,
the cores and devices it would pin, then each resource with what is free beside what is needed
(and whose reservation holds it).
"""

from __future__ import annotations

from collections.abc import Iterable

from meso_agentless.core.allocator import Cycle
from meso_agentless.core.lanes import HostState
from meso_agentless.core.model import Framework, Host, TaskGroup
from meso_agentless.core.resources import PORTS, format_quantity

FITS = "fits"


def explain_hosts(
    hosts: Iterable[Host],
    frameworks: Iterable[Framework],
    group: TaskGroup,
    cap: str | None = None,
) -> list[tuple[str, str]]:
    """(host, "fits" or the first reason it does not) for every host, by name. `cap`: the
    reason the group's cap gives (it holds on every host alike)."""
    known = {f.name: f for f in frameworks}
    known.setdefault(group.framework, Framework(group.framework))
    cycle = Cycle(hosts, known)
    everywhere = cycle.quota_excess(group.framework, group.resources) or cap
    if everywhere is None:
        everywhere = cycle.borrow_excess(group)
    counts = cycle.group_counts(group) if any(not c.is_static for c in group.constraints) else None
    out = []
    for host in cycle.hosts:
        out.append((host.name, everywhere or _why_not(cycle, host, group, counts) or FITS))
    return out


def _why_not(cycle: Cycle, host: HostState, group: TaskGroup, counts) -> str | None:
    filtered = cycle.filtered(host, group, counts)
    if filtered:
        return filtered
    lacks = cycle.pin_reason(host, group)  # dedicated cores, one NUMA node, devices
    if lacks:
        return lacks
    available = host.available(group.framework)
    for name, amount in group.resources.items():
        if name == PORTS or not amount:
            continue
        i = cycle.index.get(name)
        free = available[i] if i is not None else 0
        if free < amount:
            why = (f'dimension "{name}" exhausted: {format_quantity(name, free)} free, '
                   f"{format_quantity(name, amount)} needed")  # fmt: skip
            held = [
                fw
                for fw, left in (host.rfree or {}).items()
                if fw != group.framework and i is not None and free + left[i] >= amount
            ]
            if held:
                why += f" (the rest is reserved for {', '.join(sorted(held))})"
            return why
    if host.nports < group.resources.get(PORTS, 0):
        return (f'dimension "ports" exhausted: {host.nports} free, '
                f"{group.resources.get(PORTS, 0)} needed")  # fmt: skip
    return None
