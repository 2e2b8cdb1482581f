"""Dedicated cores, NUMA nodes and devices: exact sets per host, like ports (pure).

A host's topology says which cores each NUMA node has (and its memory) and which devices of
each class it has. A task asks for a number of dedicated cores (optionally all on one NUMA node,
with its memory there) and a number of devices per class; the allocator gives it exact core IDs
and device paths that no other task holds. Dedicated cores leave the shared pool: a dedicated
task also counts `cores x 1000` millicpus against the host's CPU capacity, so what shared tasks
may take shrinks by as much, and grows back when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meso_agentless.core.resources import format_quantity


@dataclass(frozen=True, slots=True)
class Topology:
    """What a host can pin: core IDs per NUMA node, bytes per NUMA node, device paths per class."""

    nodes: Mapping[int, tuple[int, ...]]
    node_mem: Mapping[int, int] = field(default_factory=dict)
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def cores(self) -> tuple[int, ...]:
        return tuple(sorted(c for cores in self.nodes.values() for c in cores))


@dataclass(frozen=True, slots=True)
class PinRequest:
    """What one task instance asks to have for itself: `cores` dedicated cores (0: it runs on
    the shared ones), all on one NUMA node with `mem` bytes there when `numa`; devices per
    class as sorted (class, count) pairs."""

    cores: int = 0
    numa: bool = False
    mem: int = 0
    devices: tuple[tuple[str, int], ...] = ()

    def describe_cores(self) -> str:
        where = " on one NUMA node" if self.numa else ""
        return f"{self.cores} free dedicated cores{where}"


@dataclass(frozen=True, slots=True)
class Pins:
    """What a task instance was given: core IDs, the NUMA node it is bound to (and the memory
    it holds there), device paths by class."""

    cores: tuple[int, ...] = ()
    numa: int | None = None
    mem: int = 0
    devices: tuple[tuple[str, str], ...] = ()  # (class, path)

    def to_json(self) -> dict:
        return {"cores": list(self.cores), "numa": self.numa, "mem": self.mem,
                "devices": [list(d) for d in self.devices]}  # fmt: skip

    @classmethod
    def from_json(cls, data: object) -> Pins | None:
        """Pins as stored; None for nothing (or anything that is not pins)."""
        if not isinstance(data, dict):
            return None
        numa = data.get("numa")
        return cls(
            tuple(int(c) for c in data.get("cores") or ()),
            int(numa) if isinstance(numa, int) else None,
            int(data.get("mem") or 0),
            tuple((str(k), str(p)) for k, p in data.get("devices") or ()),
        )


class HostPins:
    """What is still free on one host during a cycle (mutable, owned by the cycle)."""

    __slots__ = ("cores", "devices", "mem")

    def __init__(self, topology: Topology, used: Iterable[Pins] = ()) -> None:
        used = list(used)
        taken = {c for p in used for c in p.cores}
        held = {path for p in used for _, path in p.devices}
        self.cores = {n: [c for c in sorted(cs) if c not in taken]
                      for n, cs in sorted(topology.nodes.items())}  # fmt: skip
        self.mem = {n: topology.node_mem.get(n, 0) - sum(p.mem for p in used if p.numa == n)
                    for n in self.cores}  # fmt: skip
        self.devices = {k: [p for p in paths if p not in held]
                        for k, paths in sorted(topology.devices.items())}  # fmt: skip

    def copy(self) -> HostPins:
        out = HostPins.__new__(HostPins)
        out.cores = {n: list(cs) for n, cs in self.cores.items()}
        out.mem = dict(self.mem)
        out.devices = {k: list(ps) for k, ps in self.devices.items()}
        return out

    def shortfall(self, request: PinRequest) -> str | None:
        """What this host lacks for `request`, as a reason; None when it fits."""
        for kind, count in request.devices:
            if len(self.devices.get(kind, ())) < count:
                return f"{count} free {kind} device{'s' if count != 1 else ''}"
        if request.cores and self._node(request) is None:
            if not request.numa:
                return request.describe_cores()
            if any(len(cs) >= request.cores for cs in self.cores.values()):
                return (f"{request.cores} free dedicated cores and "
                        f"{format_quantity('mem', request.mem)} on one NUMA node")  # fmt: skip
            return request.describe_cores()
        return None

    def _node(self, request: PinRequest) -> int | None:
        """The NUMA node that takes the request's cores (and memory with numa): the one with
        the fewest free cores that suffice; -1 when they must come from several nodes."""
        fitting = [(len(cs), n) for n, cs in self.cores.items()
                   if len(cs) >= request.cores
                   and (not request.numa or self.mem[n] >= request.mem)]  # fmt: skip
        if fitting:
            return min(fitting)[1]
        if not request.numa and sum(len(cs) for cs in self.cores.values()) >= request.cores:
            return -1
        return None

    def take(self, request: PinRequest) -> Pins:
        """Give `request` its cores and devices (it fits: see shortfall)."""
        cores: list[int] = []
        numa = None
        if request.cores:
            node = self._node(request)
            if node is None:
                raise ValueError(f"no {request.describe_cores()}")
            if node >= 0:
                cores, self.cores[node] = (self.cores[node][: request.cores],
                                           self.cores[node][request.cores :])  # fmt: skip
            else:
                for n in self.cores:
                    want = request.cores - len(cores)
                    cores += self.cores[n][:want]
                    self.cores[n] = self.cores[n][want:]
            if request.numa:
                numa = node
                self.mem[node] -= request.mem
        devices = []
        for kind, count in request.devices:
            free = self.devices[kind]
            devices += [(kind, path) for path in free[:count]]
            self.devices[kind] = free[count:]
        return Pins(tuple(sorted(cores)), numa, request.mem if request.numa else 0,
                    tuple(devices))  # fmt: skip


class PinnedHosts(dict):
    """Host name -> what it has free to pin (HostPins), for the hosts (core.model.Host) that
    have a topology; each built when a cycle first asks for it, since most cycles pin on few
    hosts or none (every host sampled has a topology: building all of them each cycle cost
    more than the rest of a cycle)."""

    def __init__(self, host: Callable[[str], Any]) -> None:
        super().__init__()
        self._host = host  # name -> its Host, or None

    def __missing__(self, name: str) -> HostPins:
        host = self._host(name)
        if host is None or host.topology is None:
            raise KeyError(name)
        free = self[name] = HostPins(host.topology, host.used_pins)
        return free

    def get(self, name: str, default: HostPins | None = None) -> HostPins | None:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default


def shared_cores(topology: Topology, used: Iterable[Pins]) -> tuple[int, ...]:
    """The cores shared tasks run on: all of them but the dedicated ones."""
    dedicated = {c for p in used for c in p.cores}
    return tuple(c for c in topology.cores if c not in dedicated)


def no_host_has(tally: Mapping[str, int], hosts: int) -> str | None:
    """`no host has X` when every host lacks the same pinned resource X (see HostPins)."""
    if len(tally) == 1:
        ((what, n),) = tally.items()
        if n == hosts and what.startswith(LACKS):
            return "no host has " + what.removeprefix(LACKS)
    return None


LACKS = "lacks "  # how a host's shortfall starts in a cycle's tally of reasons
