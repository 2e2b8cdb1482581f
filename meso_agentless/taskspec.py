"""A framework's task as it sends it in an accept, checked like a job file.

Each task becomes an ordinary meso job of one instance, named FRAMEWORK-NAME, of the
framework's, that is never restarted by the controller (the framework decides what to retry)
and waits for an unreachable host rather than running twice. So `meso status`, `meso logs` and
`meso kill` work on it as on any job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from meso_agentless import yamlsafe
from meso_agentless.errors import UsageError
from meso_agentless.spec import Job, job_from_data

FIELDS = ("name", "host", "argv", "resources", "env", "ports", "timeout", "user", "workdir",
          "sandbox")  # fmt: skip
NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
MAX_NAME = 63
TASK = "task"  # the one task of a framework task's job
MAX_PORTS = 100


@dataclass(frozen=True)
class FrameworkTask:
    """One task to launch: its job, the host it must go to (None: the offers' only host) and
    the ports it names (None: any of the offered ones, as many as resources.ports says)."""

    name: str
    job: Job
    host: str | None
    ports: list[int] | None


def job_name(framework: str, name: str) -> str:
    return f"{framework}-{name}"


def framework_task(framework: str, data: object, where: str) -> FrameworkTask:
    """Check one task of an accept (`where`: its place in the request, e.g. "tasks[2]");
    UsageError "where.field: reason"."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: must be an object, not {yamlsafe.short(data)}")
    unknown = next((k for k in data if k not in FIELDS), None)
    if unknown is not None:
        raise UsageError(f"{where}: unknown field {yamlsafe.short(unknown)}")
    for field in ("name", "argv"):
        if field not in data:
            raise UsageError(f"{where}.{field}: required field is missing")
    name, host, argv = data["name"], data.get("host"), data["argv"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(
            f"{where}.name: {yamlsafe.short(name)} is not a name: lowercase "
            "letters, digits and dashes, not starting or ending with a dash"
        )
    if len(job_name(framework, name)) > MAX_NAME:
        raise UsageError(f"{where}.name: {framework}-{name} (the framework's name in front) is "
                         f"longer than {MAX_NAME} characters")  # fmt: skip
    if host is not None and (not isinstance(host, str) or not host):
        raise UsageError(f"{where}.host: must be a host's name, not {yamlsafe.short(host)}")
    if not isinstance(argv, list):
        raise UsageError(f"{where}.argv: must be a list of strings, not {yamlsafe.short(argv)}")
    ports = _ports(data.get("ports"), where)
    resources = data.get("resources", {})
    if ports is not None and isinstance(resources, Mapping):
        asked = resources.get("ports", len(ports))
        if type(asked) is not int or asked != len(ports):
            raise UsageError(f"{where}.resources.ports: {yamlsafe.short(asked)} is not the "
                             f"{len(ports)} port(s) named in ports")  # fmt: skip
        resources = {**resources, "ports": len(ports)}
    task = {"name": TASK, "command": argv, "resources": resources,
            "restart": {"policy": "never"}}  # fmt: skip
    task.update({k: data[k] for k in ("env", "timeout", "user", "workdir", "sandbox") if k in data})
    spec = {"job": job_name(framework, name), "framework": framework, "type": "batch",
            "disconnect": {"batch": "wait"}, "tasks": [task]}  # fmt: skip
    try:
        job = job_from_data(spec)
    except UsageError as exc:
        raise UsageError(_renamed(str(exc), where)) from None
    return FrameworkTask(name, job, host, ports)


def _ports(value: object, where: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_PORTS:
        raise UsageError(f"{where}.ports: must be a list of at most {MAX_PORTS} port numbers")
    for i, port in enumerate(value):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"{where}.ports[{i}]: {yamlsafe.short(port)} is not a port "
                             "(1-65535)")  # fmt: skip
    return list(value)


def _renamed(message: str, where: str) -> str:
    """A job file's error as the accept's: tasks[0].command -> tasks[i].argv."""
    inner = re.sub(r"^tasks\[0\]\.?", "", message)
    inner = re.sub(r"^command\b", "argv", inner)
    return f"{where}.{inner}" if inner[:1] != ":" else f"{where}{inner}"
