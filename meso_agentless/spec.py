"""The job file, version 1: validated strictly (pydantic), converted to the core's task groups.

    job: wordcount              # lowercase letters, digits, dashes
    framework: analytics        # default "default"
    type: batch                 # batch | service
    tasks:
      - name: mapper
        count: 4
        command: ["python3", "-c", "print('hi')"]   # a string runs under /bin/sh -c
        resources: {cpus: 0.5, mem: 256MiB, disk: 1GiB, ports: 1}
        env: {KEY: value}
        constraints: [{attribute: rack, op: eq, value: r1}, {op: unique_host}]
        restart: {policy: on-failure, attempts: 3}
        timeout: 10m
        user: www-data            # default: a throwaway user (sandbox.dynamic_user)
        workdir: /srv
        sandbox: {dynamic_user: true, no_new_privileges: true, private_tmp: true,
                  protect_system: full}     # the defaults; relax them explicitly

Anything unknown, mistyped, negative, absurd or not finite is refused with the file, the line and
the field, before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from meso_agentless import yamlsafe
from meso_agentless.core import model
from meso_agentless.core.resources import (
    CPUS,
    DISK,
    MEM,
    PORTS,
    parse_count,
    parse_cpus,
    parse_size,
)
from meso_agentless.errors import UsageError

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
MAX_COUNT = 10_000
MAX_TIMEOUT = 30 * 24 * 3600
_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d)?\s*$")
_TYPE_NAME = re.compile(r"^(str|int|list|dict|constrained-str)\b|\[")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Strict):
    """Per instance. cpus: 0.5 or "500m"; mem, disk: sizes; ports: how many; others: counts."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, validate_default=True)

    cpus: Any = 0.1
    mem: Any = "128MiB"
    disk: Any = 0
    ports: Annotated[int, Field(ge=0, le=100)] = 0

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: object) -> int:
        millicpus = parse_cpus(value, "cpus")
        if millicpus <= 0:
            raise ValueError("cpus must be more than 0")
        return millicpus

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, value: object) -> int:
        size = parse_size(value, "mem")
        if size <= 0:
            raise ValueError("mem must be more than 0")
        return size

    @field_validator("disk", mode="before")
    @classmethod
    def _disk(cls, value: object) -> int:
        return parse_size(value, "disk")

    @model_validator(mode="after")
    def _named(self) -> Resources:
        for name, value in (self.model_extra or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a resource name")
            self.model_extra[name] = parse_count(value, name)  # type: ignore[index]
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        """Back to what a job file says (cpus in CPUs, sizes in bytes): it validates again."""
        return {"cpus": self.cpus / 1000, "mem": self.mem, "disk": self.disk,
                "ports": self.ports, **(self.model_extra or {})}  # fmt: skip

    def amounts(self) -> dict[str, int]:
        """As the core counts them: millicpus, bytes, counts; zeros left out."""
        out = {CPUS: self.cpus, MEM: self.mem, DISK: self.disk, PORTS: self.ports}
        out.update(self.model_extra or {})
        return {k: v for k, v in out.items() if v}


class Constraint(_Strict):
    """eq / ne / regex on a host attribute; unique_host; max_per (value: N); spread."""

    op: Literal["eq", "ne", "regex", "unique_host", "max_per", "spread"]
    attribute: Annotated[str, StringConstraints(min_length=1, max_length=128)] = model.HOSTNAME
    value: str | int | None = None

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.op in ("eq", "ne", "regex") and not isinstance(self.value, str):
            raise ValueError(f"op {self.op} needs a string value")
        if self.op == "regex":
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"value is not a valid regular expression: {exc}") from None
        if self.op == "max_per" and not (isinstance(self.value, int) and self.value >= 1):
            raise ValueError("op max_per needs a whole number value of at least 1")
        if self.op in ("unique_host", "spread") and self.value is not None:
            raise ValueError(f"op {self.op} takes no value")
        return self

    def to_core(self) -> model.Constraint:
        return model.Constraint(self.op, self.attribute, self.value)


class Sandbox(_Strict):
    """The defaults protect the host; a job relaxes them explicitly, one by one."""

    dynamic_user: bool = True  # run as a throwaway user when no `user` is given
    no_new_privileges: bool = True
    private_tmp: bool = True
    protect_system: Literal["full", "strict", "no"] = "full"


class Restart(_Strict):
    policy: Literal["never", "on-failure", "always"] = "on-failure"
    attempts: Annotated[int, Field(ge=0, le=100)] = 3


def parse_duration(value: object) -> int:
    """Seconds from 90, "90s", "10m", "2h", "1d"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a duration like 30s, 10m or 2h")
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 10m or 2h")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ValueError(f"{value!r} must be more than 0 and at most 30 days")
    return seconds


class Task(_Strict):
    name: Name
    count: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 1
    command: list[Annotated[str, StringConstraints(min_length=0)]] | str
    resources: Resources = Resources()
    env: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    constraints: list[Constraint] = []
    strategy: Literal["binpack", "spread"] | None = None
    restart: Restart = Restart()
    timeout: Any = None
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None
    workdir: Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$")] | None = None
    sandbox: Sandbox = Sandbox()

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str) -> list[str] | str:
        if not value or (isinstance(value, list) and not value[0]):
            raise ValueError("command must not be empty")
        if any("\0" in part for part in ([value] if isinstance(value, str) else value)):
            raise ValueError("command must not contain NUL characters")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> int | None:
        return None if value is None else parse_duration(value)

    @property
    def argv(self) -> list[str]:
        """The command as an argv list; a string runs under /bin/sh -c."""
        return ["/bin/sh", "-c", self.command] if isinstance(self.command, str) else self.command


class Job(_Strict):
    """A job file (version 1)."""

    job: Name
    framework: Name = "default"
    type: Literal["batch", "service"] = "batch"
    strategy: Literal["binpack", "spread"] = "binpack"
    tasks: Annotated[list[Task], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _unique_tasks(self) -> Job:
        names = [t.name for t in self.tasks]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"task name {duplicate!r} is used twice")
        return self

    def groups(self, order: int = 0) -> list[model.TaskGroup]:
        """The job's tasks as the allocator's task groups."""
        return [
            model.TaskGroup(
                job=self.job,
                task=t.name,
                framework=self.framework,
                count=t.count,
                resources=t.resources.amounts(),
                constraints=tuple(c.to_core() for c in t.constraints),
                strategy=t.strategy or self.strategy,
                order=order,
            )
            for t in self.tasks
        ]


def load_job(path: Path) -> Job:
    """Read and validate a job file; UsageError names the file, line and field."""
    data, locate = yamlsafe.load(path, "job file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: a job file is a mapping with job, framework, type and tasks")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_first_error(path, exc, locate)) from None


def _first_error(path: Path, exc: ValidationError, locate: yamlsafe.Locate) -> str:
    error = exc.errors(include_url=False)[0]
    # union members ("str", "list[str]") in the location are noise for a user
    loc = [p for p in error["loc"] if isinstance(p, int) or not _TYPE_NAME.search(p)]
    field = _field_path(loc) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "string_pattern_mismatch":
        message = (
            f"{error['input']!r} is not a name: use lowercase letters, digits and dashes "
            "(at most 63, not starting or ending with a dash)"
        )
    elif kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        message = f"{message}, not {error['input']!r}"
    line = locate(loc)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {field}: {message}"


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def job_from_data(data: object) -> Job:
    """A job from already parsed data (JSON through the API); UsageError `field: reason`."""
    if not isinstance(data, dict):
        raise UsageError("a job is a mapping with job, framework, type and tasks")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        return _raise_first(exc)


def job_from_text(text: bytes | str, source: str | None = None) -> Job:
    """A job from YAML (or JSON) text; errors `SOURCE:LINE: field: reason`, or `line N: ...`."""
    data, locate = yamlsafe.loads(text, source or "request")
    if not isinstance(data, dict):
        raise UsageError(f"{source or 'line 1'}: a job is a mapping with job, framework, type "
                         "and tasks")  # fmt: skip
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        message = _first_error(Path(source or "request"), exc, locate)
        if source is None:
            where, _, rest = message.partition(": ")
            line = where.partition(":")[2]
            message = f"line {line}: {rest}" if line else rest
        raise UsageError(message) from None


def _raise_first(exc: ValidationError) -> Job:
    message = _first_error(Path("request"), exc, lambda _loc: None)
    raise UsageError(message.partition(": ")[2]) from None
