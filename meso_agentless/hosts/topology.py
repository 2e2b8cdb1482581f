"""A host's cores, NUMA nodes and devices as the allocator sees them (pure).

The node command samples cores and NUMA nodes from /sys/devices/system/{cpu,node} and the
devices its policy declares (or its plugin commands find); the inventory's `meso_devices`,
where a host has it, says which devices of each class the controller gives out there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from meso_agentless.core.pinning import Pins, Topology

if TYPE_CHECKING:
    from meso_agentless.spec import Job


def parse_topology(
    facts: Mapping, declared: Mapping[str, tuple[str, ...]] | None
) -> Topology | None:
    """The topology in a host's sample (`facts["topology"]`), its devices the inventory's
    `declared` ones where it has any; None when the host reports none (an older node)."""
    raw = facts.get("topology") if facts else None
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), dict):
        return None
    nodes: dict[int, tuple[int, ...]] = {}
    for node, cores in raw["nodes"].items():
        if str(node).isdigit() and isinstance(cores, list):
            nodes[int(node)] = tuple(sorted(c for c in cores if _whole(c)))
    node_mem = {int(n): m for n, m in (raw.get("node_mem") or {}).items()
                if str(n).isdigit() and _whole(m)}  # fmt: skip
    sampled = raw.get("devices") if isinstance(raw.get("devices"), dict) else {}
    devices = declared if declared else {
        str(k): tuple(str(p) for p in paths) for k, paths in sampled.items()
        if isinstance(paths, list)
    }  # fmt: skip
    return Topology(nodes, node_mem, dict(devices))


class Topologies:
    """parse_topology per host, parsed again only when what the host sampled (or the inventory
    declares) changed: every sample repeats it, and a cycle asks for every host's, so parsing
    each one each cycle was a hot path (18 us a host of 64 cores; comparing is a tenth)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[object, object, Topology | None]] = {}

    def of(
        self, host: str, facts: Mapping, declared: Mapping[str, tuple[str, ...]] | None
    ) -> Topology | None:
        raw = facts.get("topology") if facts else None
        last = self._last.get(host)
        if last is not None and last[0] == raw and last[1] == declared:
            return last[2]
        topology = parse_topology(facts, declared)
        self._last[host] = (raw, declared, topology)
        return topology


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def unknown_device_class(job: Job, known: set[str] | None) -> str | None:
    """`tasks[i].resources.devices: ...` when a task asks a device class no host has (None:
    every class is known, or the hosts are not all sampled yet: `known` is None)."""
    if known is None:
        return None
    for i, task in enumerate(job.tasks):
        for kind in sorted(task.resources.devices):
            if kind not in known:
                have = ", ".join(sorted(known)) or "none"
                return (f"tasks[{i}].resources.devices: no host has device class {kind!r} "
                        f"(the hosts have: {have})")  # fmt: skip
    return None


def used_pins(rows: Iterable) -> dict[str, list[Pins]]:
    """What the tracked tasks (state.store.TaskRow) hold of each host's cores and devices."""
    out: dict[str, list[Pins]] = {}
    for row in rows:
        if row.pins is not None:
            out.setdefault(row.host, []).append(row.pins)
    return out


def pin_request(pins: Pins | None) -> dict:
    """The launch request's fields for what a task was given (see nodecmd's pinned section)."""
    if pins is None:
        return {}
    out: dict = {}
    if pins.cores:
        out["cpuset"] = list(pins.cores)
    if pins.numa is not None:
        out["numa"] = pins.numa
    if pins.devices:
        devices: dict[str, list[str]] = {}
        for kind, path in pins.devices:
            devices.setdefault(kind, []).append(path)
        out["devices"] = devices
    return out
