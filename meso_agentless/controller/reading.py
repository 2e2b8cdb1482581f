"""Embedded reads that need no controller: `meso hosts` (and `meso cluster`) without MESO_ADDR.

One round of samples (started while the rest of the command is imported), the store and the
inventory give each host as GET /v1/hosts does (controller/hostview.py, the same function),
without importing pydantic or the controller's modules and without building a Controller: a
fresh one would only scan for the units nobody claims before answering, which claims.py does
here, writing nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meso_agentless.controller.claims import state_mark, unclaimed_units
from meso_agentless.controller.embedded import Attached
from meso_agentless.controller.hostview import cluster_info, host_infos


def hosts(inventory_source: str, state: Path) -> dict[str, Any]:
    """{"hosts": [...]}: each host of the inventory, sampled now."""
    with Attached(inventory_source, state, write=False) as attached:
        attached.fleet.refresh()
        views = attached.fleet.views()
        store = attached.store
        unclaimed = unclaimed_units(views, store, state_mark(store.identity))
        nodes = {node.name: node for node in attached.inventory.nodes}
        return {"hosts": host_infos(views, nodes, store, attached.clock.time(), unclaimed)}


def cluster(inventory_source: str, state: Path) -> dict[str, Any]:
    """Hosts by state, as a controller that just started says (its replacements active)."""
    return cluster_info(hosts(inventory_source, state)["hosts"], "active")
