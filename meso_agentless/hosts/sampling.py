"""Sample hosts over SSH with the node command: one round trip per host, all hosts at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from meso_agentless.core.model import Host
from meso_agentless.core.resources import CPUS, DISK, MEM
from meso_agentless.hosts.transport import NodeConnection, ask_each
from meso_agentless.inventory import Inventory, Node

SAMPLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Sample:
    """What a host said of itself."""

    node: str
    facts: dict

    def capacity(self) -> dict[str, int]:
        return {
            CPUS: int(self.facts["cpus"]) * 1000,
            MEM: int(self.facts["mem_total"]),
            DISK: int(self.facts["disk_total"]),
        }

    def used(self) -> dict[str, int]:
        """What the meso units on the host were given (their limits), summed."""
        used = {CPUS: 0, MEM: 0}
        for unit in self.facts.get("units", []):
            running = unit.get("active") in ("active", "activating", "reloading")
            if running and unit.get("sub") != "exited":
                used[CPUS] += unit.get("millicpus") or 0
                used[MEM] += unit.get("memory_max") or 0
        return used


def sample_all(
    nodes: Sequence[Node], connections: Mapping[str, NodeConnection] | None = None
) -> tuple[dict[str, Sample], dict[str, str]]:
    """Samples by host, and the reason for each host that could not be sampled: asked of every
    host before any answer is read (see transport.ask_each).

    With `connections` (warm, as the execution plane keeps them) those are used; otherwise each
    host gets a connection for this one request (all connected at once).
    """
    given = connections or {}
    asked = [given.get(n.name) or NodeConnection(n, timeout=SAMPLE_TIMEOUT) for n in nodes]
    try:
        answers = ask_each([(c, "sample", {}) for c in asked])
    finally:
        for node, connection in zip(nodes, asked, strict=True):
            if node.name not in given:
                connection.close()
    samples, failed = {}, {}
    for node, answer in zip(nodes, answers, strict=True):
        if isinstance(answer, dict):
            samples[node.name] = Sample(node.name, answer)
        else:
            failed[node.name] = str(answer)
    return samples, failed


def hosts_from_samples(nodes: Sequence[Node], samples: Mapping[str, Sample]) -> list[Host]:
    """The hosts that answered: capacity declared-over-sampled, used by their meso units."""
    hosts = []
    for node in nodes:
        sample = samples.get(node.name)
        if sample is not None:
            host = node.to_host(sample.capacity())
            hosts.append(replace(host, used=sample.used()))
    return hosts


def sampled_hosts(
    inventory: Inventory, connections: Mapping[str, NodeConnection] | None = None
) -> tuple[list[Host], dict[str, str]]:
    """The hosts that answered, and why each other could not be sampled: it offers nothing
    (unreachable is not dead)."""
    samples, failed = sample_all(inventory.nodes, connections)
    return hosts_from_samples(inventory.nodes, samples), failed
