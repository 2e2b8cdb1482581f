"""Static partitions: each framework gets whole hosts of its own, the way siloed clusters run.

A host whose attributes name a framework (`meso_attributes: {partition: NAME}`) is that
framework's. The other hosts are split between the frameworks that declared none, in
proportion to their weights (largest remainder; every framework at least one host while there
are enough), in host name order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from meso_agentless.core.model import Framework, Host
from meso_agentless.errors import UsageError

PARTITION = "partition"  # the host attribute that gives a host to a framework


def assign(hosts: Iterable[Host], names: Iterable[str],
           frameworks: Mapping[str, Framework]) -> dict[str, str]:  # fmt: skip
    """host name -> framework name, for the frameworks `names` (pure)."""
    hosts = sorted(hosts, key=lambda h: h.name)
    names = sorted(set(names))
    out: dict[str, str] = {}
    declared = set()
    for host in hosts:
        owner = host.attributes.get(PARTITION)
        if owner is not None and owner in names:
            out[host.name] = owner
            declared.add(owner)
    rest = [h.name for h in hosts if h.name not in out and PARTITION not in h.attributes]
    open_names = [n for n in names if n not in declared]
    if not open_names:
        return out
    if len(rest) < len(open_names):
        raise UsageError(
            f"--partition static: {len(rest)} host(s) for {len(open_names)} framework(s) "
            "without declared hosts; each needs one at least"
        )
    weights = {n: frameworks[n].weight if n in frameworks else 1.0 for n in open_names}
    counts = split(len(rest), weights)
    i = 0
    for name in open_names:
        for host in rest[i : i + counts[name]]:
            out[host] = name
        i += counts[name]
    return out


def split(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """n whole hosts in proportion to weights (largest remainder), each at least one."""
    names = sorted(weights)
    whole = sum(weights.values())
    exact = {k: n * weights[k] / whole for k in names}
    counts = {k: max(1, int(exact[k])) for k in names}
    by_remainder = sorted(names, key=lambda k: (-(exact[k] - int(exact[k])), k))
    for k in by_remainder[: max(0, n - sum(counts.values()))]:
        counts[k] += 1
    while sum(counts.values()) > n:  # the minimum of one took hosts from the largest
        k = max((k for k in names if counts[k] > 1), key=lambda k: (counts[k] - exact[k], k))
        counts[k] -= 1
    return counts


def mark(hosts: Iterable[Host], owners: Mapping[str, str]) -> list[Host]:
    """The hosts with their owner in the partition attribute (hosts of nobody: "none")."""
    return [
        dataclasses.replace(h, attributes={**h.attributes, PARTITION: owners.get(h.name, "none")})
        for h in hosts
    ]
