"""What each dashboard page shows, worked out from the service's views (the API's own models):
bars per host and resource, totals, jobs by state. Pure functions, rendered by templates/."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from meso_agentless.controller.service import Service
from meso_agentless.controller.views import FrameworkInfo, HostInfo
from meso_agentless.core.resources import count_ports
from meso_agentless.core.tasks import TRACKED

RESOURCES = ("cpus", "mem", "disk", "ports")
PATTERNS = 8  # framework styles (colour and hatching) before they repeat
GIB, MIB = 1 << 30, 1 << 20


def amount(resource: str, value: float | None) -> str:
    """A resource amount for people: CPUs as a number, bytes in GiB or MiB, ports counted."""
    if value is None:
        return "-"
    if resource in ("mem", "disk"):
        if abs(value) >= GIB:
            return f"{value / GIB:.1f} GiB"
        return f"{value / MIB:.0f} MiB"
    if resource == "cpus":
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.0f}"


def when(seconds: float | None) -> str:
    """A Unix time as UTC, to the second."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@dataclass
class Segment:
    framework: str
    style: int  # which of PATTERNS
    amount: float
    percent: float


@dataclass
class Bar:
    resource: str
    capacity: float
    segments: list[Segment]
    allocated: float
    used: float | None  # what the host says is in use (None: it does not say)
    free: float

    @property
    def used_percent(self) -> float:
        return percent(self.used or 0.0, self.capacity)

    @property
    def free_percent(self) -> float:
        return max(0.0, 100.0 - sum(s.percent for s in self.segments))

    @property
    def text(self) -> str:
        """The bar in words (readable without colour)."""
        r = self.resource
        parts = [f"{s.framework} {amount(r, s.amount)}" for s in self.segments]
        held = f" ({', '.join(parts)})" if parts else ""
        used = f"; used {amount(r, self.used)}" if self.used is not None else ""
        return (f"{r}: {amount(r, self.allocated)} of {amount(r, self.capacity)} allocated"
                f"{held}{used}; free {amount(r, self.free)}")  # fmt: skip


@dataclass
class HostRow:
    info: HostInfo
    bars: list[Bar]


@dataclass
class ClusterPage:
    hosts: list[HostRow]
    frameworks: list[FrameworkInfo]
    styles: dict[str, int]
    states: dict[str, int]
    totals: list[Bar]
    replacements: str
    tasks: int


@dataclass
class PortUse:
    capacity: int = 0
    by_framework: Counter[str] = field(default_factory=Counter)


def percent(part: float, whole: float) -> float:
    return round(min(100.0, 100.0 * part / whole), 2) if whole > 0 else 0.0


def framework_styles(frameworks: list[FrameworkInfo]) -> dict[str, int]:
    return {f.name: i % PATTERNS for i, f in enumerate(sorted(frameworks, key=lambda f: f.name))}


def bar(resource: str, capacity: float, held: dict[str, float], used: float | None,
        styles: dict[str, int]) -> Bar:  # fmt: skip
    segments = [Segment(fw, styles.get(fw, PATTERNS - 1), a, percent(a, capacity))
                for fw, a in sorted(held.items()) if a > 0]  # fmt: skip
    allocated = sum(held.values())
    return Bar(resource, capacity, segments, allocated, used, max(0.0, capacity - allocated))


def host_bars(host: HostInfo, ports: PortUse, styles: dict[str, int]) -> list[Bar]:
    used = {"cpus": min(host.load[0], float(host.capacity.get("cpus", 0))) if host.load else None,
            "mem": host.usage.get("mem"), "disk": host.usage.get("disk")}  # fmt: skip
    bars = []
    for r in ("cpus", "mem", "disk"):
        held = {fw: float(a.get(r, 0)) for fw, a in host.by_framework.items()}
        value = used[r]
        bars.append(bar(r, float(host.capacity.get(r, 0)), held,
                        None if value is None else float(value), styles))  # fmt: skip
    held_ports = {fw: float(n) for fw, n in ports.by_framework.items()}
    bars.append(bar("ports", float(ports.capacity), held_ports, None, styles))
    return bars


def port_use(service: Service) -> dict[str, PortUse]:
    """Ports each host offers and the ones each framework's tasks hold there."""
    controller = service.controller
    out = {name: PortUse(capacity=count_ports(node.to_host().ports))
           for name, node in controller.nodes.items()}  # fmt: skip
    framework_of = {j.name: j.framework for j in service.store.jobs()}
    for row in service.store.tasks_in(TRACKED):
        if row.ports and row.host in out:
            out[row.host].by_framework[framework_of.get(row.job, "?")] += len(row.ports)
    return out


def cluster_page(service: Service) -> ClusterPage:
    hosts = service.hosts().hosts
    frameworks = service.frameworks().frameworks
    styles = framework_styles(frameworks)
    ports = port_use(service)
    rows = [HostRow(h, host_bars(h, ports.get(h.host, PortUse()), styles)) for h in hosts]
    totals = []
    for i, r in enumerate(RESOURCES):
        held: dict[str, float] = defaultdict(float)
        capacity, used, said = 0.0, 0.0, False
        for row in rows:
            if not row.info.reachable:
                continue
            b = row.bars[i]
            capacity += b.capacity
            for s in b.segments:
                held[s.framework] += s.amount
            if b.used is not None:
                used, said = used + b.used, True
        totals.append(bar(r, capacity, held, used if said else None, styles))
    cluster = service.cluster()
    return ClusterPage(rows, frameworks, styles, dict(Counter(h.state for h in hosts)), totals,
                       cluster.replacements, sum(h.tasks for h in hosts))  # fmt: skip
