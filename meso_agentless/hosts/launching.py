"""What the controller asks a host to run for one placed task instance (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from meso_agentless.core.resources import CPUS, MEM
from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.topology import pin_request
from meso_agentless.node import nodecmd

if TYPE_CHECKING:  # job files' models (pydantic) are not needed to sample or launch
    from meso_agentless.core.model import Placement
    from meso_agentless.spec import Task

DEFAULT_TASKS_MAX = 512
DEFAULT_GRACE_SEC = 10

# What the controller asks of hosts without the meso_node role (the node command streamed to
# python3 as root), at connection time: no root tasks, the sandbox minimum, default limits. A
# host only tightens its own policy (file or built-in defaults) with it, for that connection.
NODE_POLICY: dict = {
    "allow_root": False,
    "sandbox_minimum": dict(nodecmd.DEFAULT_POLICY["sandbox_minimum"]),
    "default_limits": dict(nodecmd.DEFAULT_POLICY["default_limits"]),
}


def launch_request(
    task: Task,
    placement: Placement,
    attempt: int,
    capacity: Mapping[str, int] | None = None,
    service: bool = False,
    owner: str = "",
) -> dict:
    """The node command's launch request: unit, argv, env, limits, sandbox.

    `capacity` (the controller's view of the host) is sent for node commands that predate the
    node's own capacity; a host only ever lowers its own with it. `owner` ends the unit's
    description: the mark by which its controller knows the unit for its own.

    The task sees MESO_JOB, MESO_TASK, MESO_INDEX, MESO_ATTEMPT, MESO_HOST and its ports as
    MESO_PORT0, MESO_PORT1, ... (and MESO_PORTS, comma-separated); the node adds MESO_CPUSET,
    MESO_DEVICES (and CUDA_VISIBLE_DEVICES for gpus) for what it pins.
    """
    env = dict(task.env)
    env.update(
        MESO_JOB=placement.job,
        MESO_TASK=placement.task,
        MESO_INDEX=str(placement.index),
        MESO_ATTEMPT=str(attempt),
        MESO_HOST=placement.host,
        MESO_PORTS=",".join(map(str, placement.ports)),
    )
    env.update({f"MESO_PORT{i}": str(port) for i, port in enumerate(placement.ports)})
    request: dict = {
        "unit": unit_name(placement.job, placement.task, placement.index, attempt),
        "description": f"meso {placement.job}/{placement.task}[{placement.index}] "
        f"attempt {attempt}{' ' + owner if owner else ''}",
        "argv": task.argv,
        "env": env,
        "cpus": placement.resources.get(CPUS),
        "mem": placement.resources.get(MEM),
        "tasks_max": DEFAULT_TASKS_MAX,
        "grace_sec": DEFAULT_GRACE_SEC,
        "sandbox": task.sandbox.model_dump(),
    }
    if task.user:
        request["user"] = task.user
    if task.workdir:
        request["cwd"] = task.workdir
    if task.timeout:
        request["runtime_sec"] = task.timeout
    if service:  # systemd keeps it running on its host; the controller re-places it if lost
        request["restart"] = "always"
    request.update(pin_request(placement.pins))
    fine = task.resources
    if fine.mem_soft is not None:
        request["mem_soft"] = fine.mem_soft
    if fine.io_weight is not None:
        request["io_weight"] = fine.io_weight
    if capacity:
        request["capacity"] = {"cpus": capacity.get(CPUS), "mem": capacity.get(MEM)}
    return request
