"""Each host as `meso hosts` and GET /v1/hosts show it, as plain data.

`host_infos` makes the fields of views.HostInfo, in its order and of the types it validates to,
from the fleet's views, the store and the inventory. The controller's service validates them
into HostInfo; the embedded `meso hosts` prints them as they are (controller/reading.py). This
module imports neither pydantic nor the controller, so a cold read needs neither.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meso_agentless import __version__
from meso_agentless.core.health import ANSWERING, HostState
from meso_agentless.core.resources import CPUS, DISK, MEM, PORTS
from meso_agentless.core.tasks import HOLDS_RESOURCES, TRACKED

if TYPE_CHECKING:
    from meso_agentless.controller.fleet import HostView
    from meso_agentless.inventory import Node
    from meso_agentless.state.store import StateStore

LATE = (HostState.SUSPECT, HostState.UNREACHABLE, HostState.STOPPING)  # judged from silence


def sampled_capacity(facts: Mapping) -> dict[str, int]:
    """A host's capacity from its sample: the node's own admission capacity where it states
    one, else what it measured."""
    if not facts:
        return {}
    capacity = {CPUS: int(facts.get("cpus", 0)) * 1000, MEM: int(facts.get("mem_total", 0)),
                DISK: int(facts.get("disk_total", 0))}  # fmt: skip
    own = facts.get("capacity")
    if isinstance(own, dict):
        for key, name in (("cpus", CPUS), ("mem", MEM)):
            if isinstance(own.get(key), int) and not isinstance(own.get(key), bool):
                capacity[name] = own[key]
    return capacity


def resources_json(resources: Mapping[str, int]) -> dict[str, float | int]:
    """cpus as a number of CPUs, bytes as integers, counts as integers."""
    return {n: (a / 1000 if n == CPUS else a) for n, a in resources.items() if n != PORTS}


def number(value: object) -> float | None:
    """A number as a float (what a `float | None` field makes of it); anything else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def host_infos(
    views: Mapping[str, HostView],
    nodes: Mapping[str, Node],
    store: StateStore,
    now: float,
    unclaimed: Mapping[str, list[str]],
    host_states: Mapping[str, HostState] | None = None,
) -> list[dict[str, Any]]:
    """Each host by name: its state, capacity, what is allocated there (by framework), free,
    its load and usage. `unclaimed`: the meso units nobody launched on each host (they count
    as allocated while they hold resources); `host_states`: the state the controller's last
    cycle gave each host (draining, gone, ...), else the fleet's; `now`: wall time."""
    framework_of = {j.name: j.framework for j in store.jobs()}
    allocated: dict[str, Counter[str]] = defaultdict(Counter)
    by_framework: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    counted: Counter[str] = Counter()
    for row in store.tasks_in(TRACKED):
        resources = {k: v for k, v in row.resources.items() if k != PORTS}
        allocated[row.host].update(resources)
        by_framework[row.host][framework_of.get(row.job, "?")].update(resources)
        counted[row.host] += 1
    drains = store.drains()
    holding = {s.value for s in HOLDS_RESOURCES}
    out = []
    for name, view in sorted(views.items()):
        node = nodes[name]
        for unit in unclaimed.get(name, []):
            status = view.units.get(unit) or {}
            if status.get("state") in holding:
                allocated[name][CPUS] += status.get("millicpus") or 0
                allocated[name][MEM] += status.get("memory_max") or 0
        capacity = node.capacity(sampled_capacity(view.facts))
        used = {k: v for k, v in allocated[name].items() if v}
        free = {k: max(0, v - used.get(k, 0)) for k, v in capacity.items()}
        facts = view.facts
        state = (host_states or {}).get(name, view.state)
        if view.state in LATE:
            state = view.state  # judged now, from its silence: not as of the last cycle
        if name in drains and state not in (HostState.DRAINING, HostState.DRAINED):
            state = HostState.DRAINING if view.state == HostState.UP else state
        usage = {}
        if facts:
            total, free_mem = int(facts.get("mem_total", 0)), int(facts.get("mem_available", 0))
            usage[MEM] = max(0, total - free_mem)
            disk = int(facts.get("disk_total", 0)) - int(facts.get("disk_available", 0))
            usage[DISK] = max(0, disk)
        out.append({
            "host": name, "state": str(state), "reachable": view.state in ANSWERING,
            "stale": view.state != HostState.UP,
            "age": None if view.seen is None else round(max(0.0, now - view.seen), 3),
            "last_seen": number(view.seen), "boot": view.boot, "error": view.error,
            "capacity": resources_json(capacity), "reserved": resources_json(dict(node.reserved)),
            "allocated": resources_json(used), "free": resources_json(free),
            "by_framework": {fw: resources_json(dict(a))
                             for fw, a in sorted(by_framework[name].items())},
            "load": [float(x) for x in facts.get("load", [])][:3],
            "usage": resources_json(usage), "tasks": counted[name],
            "unclaimed": list(unclaimed.get(name, [])),
            "drain_deadline": number(drains.get(name)),
            "attributes": dict(node.attributes), "booted": number(facts.get("booted")),
        })  # fmt: skip
    return out


def cluster_info(infos: list[dict[str, Any]], replacements: str) -> dict[str, Any]:
    """The whole as GET /v1/cluster shows it (views.Cluster's fields): hosts by state, from
    their infos, and whether tasks of unreachable hosts are replaced (`replacements`)."""
    states = Counter(info["state"] for info in infos)
    return {"version": __version__, "hosts": dict(sorted(states.items())),
            "replacements": replacements}  # fmt: skip
