"""Dominant Resource Fairness (Ghodsi et al., NSDI 2011), as Mesos' DRF sorter computes it.

A client's share is the largest, over resources, of allocated / total, divided by its weight.
The sorter hands out the client furthest below its fair share; ties go to the smaller name.
A client with a guarantee that it has not reached yet goes before every client that has
(Mesos' quota guarantees): among those, the one furthest below its guarantee goes first.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from meso_agentless.core.resources import PORTS, Resources


def dominant_share(allocated: Resources, total: Resources, weight: float = 1.0) -> float:
    """max over resources of allocated/total, divided by weight (ports do not count)."""
    share = 0.0
    for name, amount in allocated.items():
        whole = total.get(name, 0)
        if whole > 0 and name != PORTS and amount / whole > share:
            share = amount / whole
    return share / weight


class DRFSorter:
    """Clients ordered by weighted dominant share, with cheap updates (a lazy heap)."""

    def __init__(self, total: Resources) -> None:
        self._total = {n: a for n, a in total.items() if n != PORTS and a > 0}
        self._weights: dict[str, float] = {}
        self._allocated: dict[str, dict[str, int]] = {}
        self._shares: dict[str, float] = {}
        self._keys: dict[str, float] = {}
        self._guarantees: dict[str, dict[str, int]] = {}
        self._demoted: set[str] = set()
        self._heap: list[tuple[float, str]] = []
        self._active: set[str] = set()

    def add(
        self,
        client: str,
        weight: float = 1.0,
        allocated: Resources | None = None,
        guarantee: Resources | None = None,
        active: bool = True,
    ) -> None:
        """A client; an inactive one (nothing to place) counts in the shares only."""
        if weight <= 0:
            raise ValueError(f"weight of {client!r} must be positive, not {weight}")
        self._weights[client] = weight
        if guarantee:
            kept = {n: a for n, a in guarantee.items() if n in self._total and a > 0}
            if kept:
                self._guarantees[client] = kept
        total = self._total
        held = dict(allocated) if allocated else {}
        if not held.keys() <= total.keys():
            held = {n: a for n, a in held.items() if n in total}
        self._allocated[client] = held
        if active:
            self._active.add(client)
        self.allocate(client, {})

    def allocate(self, client: str, resources: Resources) -> None:
        """`client` takes `resources` more (none: its share and place are worked out anew)."""
        held, total = self._allocated[client], self._total
        for name, amount in resources.items():
            if name in total:
                held[name] = held.get(name, 0) + amount
        share = 0.0  # dominant_share(), inline: this runs once per placement
        for name, amount in held.items():
            if (fraction := amount / total[name]) > share:  # held only of resources in the total
                share = fraction
        share /= self._weights[client]
        self._shares[client] = share
        key = share
        if self._guarantees and client in self._guarantees and client not in self._demoted:
            below = self.guarantee_share(client)
            if below is not None and below < 1.0:
                key = below - 1.0  # negative: before everyone at or above its guarantee
        self._keys[client] = key
        heap = self._heap
        if client not in self._active:
            return  # never offered again: lowest() needs no entry of it
        if heap and heap[0][1] == client:  # its entry on top is stale now: one sift, not two
            heapq.heapreplace(heap, (key, client))
        else:
            heapq.heappush(heap, (key, client))

    @property
    def total(self) -> Resources:
        """The resources shares are of."""
        return self._total

    def share(self, client: str) -> float:
        return self._shares[client]

    def shares(self) -> dict[str, float]:
        return dict(self._shares)

    def allocated(self, client: str) -> Mapping[str, int]:
        return self._allocated[client]

    def deactivate(self, client: str) -> None:
        """Leave `client` out of `lowest()` (it has nothing more to place in this cycle)."""
        self._active.discard(client)

    def guarantee_share(self, client: str) -> float | None:
        """max over guaranteed resources of allocated / guaranteed (None: no guarantee)."""
        guarantee = self._guarantees.get(client)
        if guarantee is None:
            return None
        held = self._allocated[client]
        return max(held.get(n, 0) / a for n, a in guarantee.items())

    def demote(self, client: str) -> None:
        """Order `client` by its share alone from now on, below its guarantee or not (its next
        task would go beyond the guarantee anyway)."""
        if client not in self._demoted:
            self._demoted.add(client)
            self.allocate(client, {})

    def owed(self, client: str) -> bool:
        """Whether it holds less than its guarantee (demoted or not)."""
        share = self.guarantee_share(client)
        return share is not None and share < 1.0

    def below_guarantee(self, client: str) -> bool:
        """Below its guarantee, and not demoted: it goes before those that are not."""
        return self._keys[client] < 0.0  # shares are never negative: only these keys are

    def next_share(self, client: str) -> float | None:
        """The lowest weighted share of the other active clients (None: there are none)."""
        return min((self._shares[c] for c in self._active if c != client), default=None)

    def lowest(self) -> str | None:
        """The active client with the lowest weighted dominant share, or None."""
        heap = self._heap
        while heap:
            key, client = heap[0]
            if client in self._active and self._keys[client] == key:
                return client
            heapq.heappop(heap)  # stale: the client was updated or deactivated
        return None

    def sort(self, clients: Iterable[str] | None = None) -> list[str]:
        """Clients in allocation order: below their guarantee first, then lowest share first,
        then by name."""
        chosen = self._shares if clients is None else clients
        return sorted(chosen, key=lambda c: (self._keys[c], c))
