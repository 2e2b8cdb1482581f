"""The allocator's input and output, as plain immutable data.

A cycle reads a snapshot (hosts, frameworks, pending task groups) and returns a plan
(placements, unplaced tasks with their reasons, refusal filters). Resources are integers:
millicpus, bytes, counts; "ports" in a task's resources is how many ports it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from meso_agentless.core.pinning import PinRequest, Pins, Topology
from meso_agentless.core.resources import PortRanges, Resources

Strategy = Literal["binpack", "spread"]
ConstraintOp = Literal["eq", "ne", "regex", "unique_host", "max_per", "spread"]
HOSTNAME = "hostname"  # a pseudo-attribute every host has: its name
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1e6  # a framework's DRF weight (shares are divided by it)


@dataclass(frozen=True, slots=True)
class Host:
    """One host as the allocator sees it.

    capacity is what tasks may use (sampled or declared, less what is kept for the system);
    reservations are parts of it set aside for one framework; used and used_ports are taken by
    tasks already running, and used_reserved says how much of `used` came from reservations.
    """

    name: str
    capacity: Resources
    ports: PortRanges = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    reservations: Mapping[str, Resources] = field(default_factory=dict)
    used: Resources = field(default_factory=dict)
    used_reserved: Mapping[str, Resources] = field(default_factory=dict)
    used_ports: frozenset[int] = frozenset()
    # cores by NUMA node and devices by class, given out as exact sets (None: nothing to pin);
    # used_pins: what the tasks running there hold of them
    topology: Topology | None = None
    used_pins: tuple[Pins, ...] = ()


@dataclass(frozen=True, slots=True)
class Framework:
    """A framework: its DRF weight, its quota (its limit: a maximum per resource), what it
    already holds.

    guarantee: what it can always get back within one revocation round (the sum over
    frameworks never exceeds the cluster); what others borrow of it is revocable.
    revocable: the part of `allocated` held by revocable (borrowed) tasks.
    """

    name: str
    weight: float = 1.0
    quota: Resources | None = None
    allocated: Resources = field(default_factory=dict)
    guarantee: Resources | None = None
    revocable: Resources = field(default_factory=dict)

    @property
    def limit(self) -> Resources | None:
        """The quota under its other name: never more than this."""
        return self.quota


@dataclass(frozen=True, slots=True)
class Constraint:
    """Where a task may go.

    eq / ne / regex: the host attribute `attribute` equals, differs from, or fully matches value.
    unique_host: at most one instance of the task group per host.
    max_per: at most `value` instances per distinct value of `attribute` ("hostname": per host).
    spread: instances spread evenly over the values of `attribute`.
    """

    op: ConstraintOp
    attribute: str = HOSTNAME
    value: str | int | None = None

    def describe(self) -> str:
        match self.op:
            case "eq":
                return f"{self.attribute} = {self.value}"
            case "ne":
                return f"{self.attribute} != {self.value}"
            case "regex":
                return f"{self.attribute} =~ {self.value}"
            case "unique_host":
                return "unique host"
            case "max_per":
                return f"at most {self.value} per {self.attribute}"
            case _:
                return f"spread over {self.attribute}"

    @property
    def is_static(self) -> bool:
        """Decided by the host's attributes alone, not by where other instances went."""
        return self.op in ("eq", "ne", "regex")


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """`count` identical instances of one task of one job, numbered from `first_index`.

    `running` counts instances of this group already on each host (for the dynamic constraints).
    `order` ranks a framework's groups (submission order); ties fall back to job and task names.
    `gang`: all `count` instances are placed in one cycle, at once, or none of them is.
    `priority` (0-100) ranks a framework's groups before `order`; `revocable`: whether its
    instances may run on borrowed capacity; `max_running` / `job_max_running`: caps on the
    instances of the group / of the job running at once, of which `running_count` /
    `job_running` run now.
    """

    job: str
    task: str
    framework: str
    count: int
    resources: Resources
    constraints: tuple[Constraint, ...] = ()
    strategy: Strategy = "binpack"
    first_index: int = 0
    running: Mapping[str, int] = field(default_factory=dict)
    order: int = 0
    gang: bool = False
    priority: int = 50
    revocable: bool = True
    max_running: int | None = None
    running_count: int = 0
    job_max_running: int | None = None
    job_running: int = 0
    pin: PinRequest | None = None  # dedicated cores, one NUMA node, devices (core.pinning)

    @property
    def sort_key(self) -> tuple[int, int, str, str]:
        return (-self.priority, self.order, self.job, self.task)


@dataclass(frozen=True, slots=True)
class Placement:
    job: str
    task: str
    index: int
    framework: str
    host: str
    resources: Resources
    ports: tuple[int, ...] = ()
    revocable: bool = False  # on borrowed capacity: revoked when its owner needs it back
    pins: Pins | None = None  # the cores and devices it was given (when its group asks any)


@dataclass(frozen=True, slots=True)
class RevocableTask:
    """A running task on borrowed capacity. `since` orders them (the youngest is revoked
    first); `stopping`: already being revoked (its resources are as good as free)."""

    job: str
    task: str
    index: int
    framework: str
    host: str
    resources: Resources
    since: float = 0.0
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class Revocation:
    """Stop a borrowed task so that `owner` gets its guarantee back."""

    job: str
    task: str
    index: int
    framework: str
    host: str
    owner: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unplaced:
    job: str
    task: str
    index: int
    framework: str
    reason: str


@dataclass(frozen=True, slots=True)
class Filter:
    """A framework declined a host (None: every host) until a time on the caller's clock."""

    framework: str
    host: str | None
    until: float
    # what was declined: the host stays refused only while it could offer no more than this
    # (Mesos' refused-offer filter); None: whatever it could offer
    resources: Resources | None = None


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]
    unplaced: list[Unplaced]
    shares: dict[str, float]  # weighted dominant share per framework after the cycle
    filters: tuple[Filter, ...] = ()
    revocations: tuple[Revocation, ...] = ()
