"""The cluster as an Ansible inventory says it is, read with ansible-core's own loader.

Group `meso_nodes` (or every host, if there is no such group) are the nodes. Per host:
`meso_resources` (declared capacity, overriding what is sampled; `ports` as ranges),
`meso_reserved` (kept back for the system), `meso_attributes` (for constraints),
`meso_reservations` (framework -> resources set aside for it), `meso_devices` (device class ->
paths the controller gives out there, e.g. gpu: [/dev/nvidia0]). For the cluster:
`meso_frameworks` (name -> weight, guarantee, limit; `quota` is the limit's old name).
The guarantees together may not exceed the hosts' declared capacity. group_vars, host_vars
and every inventory format work as they do for Ansible.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meso_agentless.core.model import MAX_WEIGHT, MIN_WEIGHT, Framework, Host
from meso_agentless.core.resources import (
    PORTS,
    PortRanges,
    ResourceError,
    format_quantity,
    parse_port_ranges,
    parse_resources,
    subtract,
)
from meso_agentless.errors import UsageError
from meso_agentless.inventory_yaml import plain_hostvars
from meso_agentless.node import nodecmd

NODE_GROUP = "meso_nodes"
DEFAULT_PORTS: PortRanges = ((31000, 32000),)  # Mesos agents' default port range


@dataclass(frozen=True)
class Node:
    """A host of the inventory: how to reach it and what it declares."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    key_file: str | None = None
    known_hosts: str | None = None
    declared: Mapping[str, int] = field(default_factory=dict)
    ports: PortRanges | None = None
    reserved: Mapping[str, int] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    reservations: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # meso_devices
    # "streamed": the node command is sent to python3 on each connection (root hosts);
    # "installed": the key is pinned to the installed command; only "VERB [JSON]" is sent
    node_mode: str = "streamed"

    def known_hosts_path(self) -> Path:
        """meso_known_hosts_file, or the user's own known_hosts, as ssh would use."""
        return Path(self.known_hosts or os.path.expanduser("~/.ssh/known_hosts"))

    def capacity(self, sampled: Mapping[str, int] | None = None) -> dict[str, int]:
        """Declared capacity over sampled, less what is reserved."""
        return subtract({**(sampled or {}), **self.declared}, self.reserved)

    def to_host(self, sampled: Mapping[str, int] | None = None) -> Host:
        """The allocator's view: its capacity (above), ports, attributes, reservations."""
        return Host(
            name=self.name,
            capacity=self.capacity(sampled),
            ports=self.ports if self.ports is not None else DEFAULT_PORTS,
            attributes=self.attributes,
            reservations=self.reservations,
        )


@dataclass(frozen=True)
class Inventory:
    source: str
    nodes: tuple[Node, ...]
    frameworks: tuple[Framework, ...]


def load_inventory(source: str) -> Inventory:
    """Read an inventory with ansible-core (a plain YAML one as it would, without it: see
    inventory_yaml); UsageError (one line) on anything wrong."""
    if "," not in source and not Path(source).exists():
        raise UsageError(f"inventory {source}: no such file or directory")
    raw = _plain(plain_hostvars(source, NODE_GROUP)) or _ansible_hostvars(source)
    if not raw:
        raise UsageError(f"inventory {source}: no hosts (in group {NODE_GROUP} or at all)")
    nodes = tuple(parse_node(name, hostvars) for name, hostvars in sorted(raw.items()))
    frameworks = tuple(parse_frameworks(source, raw))
    check_guarantees(source, nodes, frameworks)
    return Inventory(source, nodes, frameworks)


def _ansible_hostvars(source: str) -> dict[str, dict[str, Any]]:
    """Each host's variables, as ansible-core's inventory and variable managers give them."""
    from ansible import constants
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    # a source no plugin can read is an error, not an empty inventory (set on the module,
    # not the environment: ansible may have read its configuration already in this process)
    constants.INVENTORY_UNPARSED_IS_FAILED = True
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter), contextlib.redirect_stdout(chatter):
            loader = DataLoader()
            manager = InventoryManager(loader=loader, sources=[source])
            variables = VariableManager(loader=loader, inventory=manager)
            pattern = NODE_GROUP if NODE_GROUP in manager.groups else "all"
            hosts = manager.get_hosts(pattern)
            raw = {
                h.name: _plain(variables.get_vars(host=h, include_hostvars=False)) for h in hosts
            }
    except AnsibleError as exc:
        detail = _first_reason(chatter.getvalue()) or str(exc.message)
        raise UsageError(f"inventory {source}: {detail}") from None
    return raw


def check_guarantees(source: str, nodes: Sequence[Node], frameworks: Sequence[Framework]) -> None:
    """The sum of the guarantees fits in the cluster, in every resource that every host
    declares (the rest is checked once the hosts are sampled)."""
    guaranteed = [f for f in frameworks if f.guarantee]
    for name in sorted({r for f in guaranteed for r in f.guarantee or {}}):
        if not nodes or any(name not in n.declared for n in nodes):
            continue
        whole = sum(max(0, n.declared[name] - n.reserved.get(name, 0)) for n in nodes)
        wanted = sum((f.guarantee or {}).get(name, 0) for f in guaranteed)
        if wanted > whole:
            names = ", ".join(sorted(f.name for f in guaranteed if (f.guarantee or {}).get(name)))
            raise UsageError(
                f"inventory {source}: meso_frameworks: the guarantees of {names} add up to "
                f"{format_quantity(name, wanted)} {name}, more than the cluster's "
                f"{format_quantity(name, whole)}"
            )


def parse_node(name: str, hostvars: Mapping[str, Any]) -> Node:
    """One host's variables as a Node (pure)."""

    def where(var: str) -> str:
        return f"host {name}: {var}"

    try:
        declared_raw = dict(_mapping(hostvars.get("meso_resources"), where("meso_resources")))
        ports_raw = declared_raw.pop(PORTS, None)
        ports = None if ports_raw is None else parse_port_ranges(ports_raw, "ports")
        declared = parse_resources(declared_raw, "meso_resources")
        reserved = parse_resources(
            _mapping(hostvars.get("meso_reserved"), where("meso_reserved")), "meso_reserved"
        )
        reservations = {}
        for fw, amounts in _mapping(
            hostvars.get("meso_reservations"), where("meso_reservations")
        ).items():
            var = f"meso_reservations.{fw}"
            reservations[str(fw)] = parse_resources(_mapping(amounts, where(var)), var)
    except ResourceError as exc:
        raise UsageError(f"host {name}: {exc}") from None
    attributes = {
        str(k): str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in _mapping(hostvars.get("meso_attributes"), where("meso_attributes")).items()
    }
    try:
        devices = nodecmd.parse_devices(hostvars.get("meso_devices") or {}, "meso_devices")
    except nodecmd.RequestError as exc:
        raise UsageError(f"host {name}: {exc}") from None
    node_mode = hostvars.get("meso_node_mode", "streamed")
    if node_mode not in ("streamed", "installed"):
        raise UsageError(f"host {name}: meso_node_mode must be streamed or installed")
    port = hostvars.get("ansible_port", 22)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"host {name}: ansible_port {port!r} is not a port")
    return Node(
        name=name,
        address=str(hostvars.get("ansible_host", name)),
        user=str(hostvars.get("ansible_user", "root")),
        port=port,
        key_file=_opt_str(hostvars.get("ansible_ssh_private_key_file")),
        known_hosts=_opt_str(hostvars.get("meso_known_hosts_file")),
        declared=declared,
        ports=ports,
        reserved=reserved,
        attributes=attributes,
        reservations=reservations,
        devices={k: tuple(v) for k, v in devices.items()},
        node_mode=node_mode,
    )


def parse_frameworks(source: str, hostvars: Mapping[str, Mapping[str, Any]]) -> list[Framework]:
    """meso_frameworks, which must be the same for every host (set it for group all)."""
    seen: dict[str, Any] = {}
    for name, variables in hostvars.items():
        value = variables.get("meso_frameworks")
        if value is None:
            continue
        for other, other_value in seen.items():
            if other_value != value:
                raise UsageError(
                    f"inventory {source}: meso_frameworks differs between hosts {other} and "
                    f"{name}; define it once, for group all"
                )
        seen.setdefault(name, value)
    raw = next(iter(seen.values()), {})
    frameworks = []
    for fw, settings in _mapping(raw, "meso_frameworks").items():
        where = f"meso_frameworks.{fw}"
        if not isinstance(fw, str) or not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fw):
            raise UsageError(f"inventory {source}: {where}: not a framework name")
        settings = _mapping(settings, where)
        unknown = set(settings) - {"weight", "quota", "limit", "guarantee", "role"}
        if unknown:
            raise UsageError(f"inventory {source}: {where}: unknown field {sorted(unknown)[0]}")
        weight = settings.get("weight", 1)
        if (isinstance(weight, bool) or not isinstance(weight, int | float)
                or not MIN_WEIGHT <= weight <= MAX_WEIGHT):  # fmt: skip
            raise UsageError(f"inventory {source}: {where}.weight must be a number from "
                             f"{MIN_WEIGHT} to {MAX_WEIGHT:g}")  # fmt: skip
        if "quota" in settings and "limit" in settings:
            raise UsageError(f"inventory {source}: {where}: give limit or quota (its old name), "
                             "not both")  # fmt: skip
        field = "limit" if "limit" in settings else "quota"
        try:
            quota = (
                parse_resources(_mapping(settings[field], where), f"{where}.{field}", True)
                if field in settings
                else None
            )
            guarantee = (
                parse_resources(_mapping(settings["guarantee"], where), f"{where}.guarantee")
                if settings.get("guarantee") is not None
                else None
            )
        except ResourceError as exc:
            raise UsageError(f"inventory {source}: {exc}") from None
        for name, amount in (guarantee or {}).items():
            if name == "ports":
                raise UsageError(f"inventory {source}: {where}.guarantee.ports: ports cannot "
                                 "be guaranteed")  # fmt: skip
            if quota is not None and name in quota and amount > quota[name]:
                raise UsageError(
                    f"inventory {source}: {where}.guarantee.{name}: "
                    f"{format_quantity(name, amount)} is more than its {field} "
                    f"{format_quantity(name, quota[name])}"
                )
        frameworks.append(Framework(fw, float(weight), quota, guarantee=guarantee or None))
    return frameworks


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} must be a mapping, not {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _plain(value: Any) -> Any:
    """ansible-core's tagged values as plain dicts, lists and scalars."""
    return json.loads(json.dumps(value, default=str))


def _first_reason(chatter: str) -> str:
    for line in chatter.splitlines():
        if "Failed to parse inventory with" in line and ":" in line.split("plugin", 1)[-1]:
            return line.split("plugin:", 1)[-1].strip()
    return ""
