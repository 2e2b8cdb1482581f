"""Sample hosts over SSH with the node command: one round trip per host, all hosts at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from meso_agentless.core.model import Host
from meso_agentless.core.resources import CPUS, DISK, MEM
from meso_agentless.errors import MesoError
from meso_agentless.hosts.transport import NodeConnection
from meso_agentless.inventory import Inventory, Node

MAX_PARALLEL = 32
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
    """Samples by host, and the reason for each host that could not be sampled.

    With `connections` (warm, as the execution plane keeps them) those are used; otherwise each
    host gets a connection for this one request.
    """

    def one(node: Node) -> Sample | str:
        connection = (connections or {}).get(node.name) or NodeConnection(
            node, timeout=SAMPLE_TIMEOUT
        )
        try:
            return Sample(node.name, connection.request("sample"))
        except MesoError as exc:
            return str(exc)
        finally:
            if connections is None:
                connection.close()

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(nodes)))) as pool:
        results = dict(zip([n.name for n in nodes], pool.map(one, nodes), strict=True))
    samples = {n: r for n, r in results.items() if isinstance(r, Sample)}
    failed = {n: r for n, r in results.items() if isinstance(r, str)}
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
