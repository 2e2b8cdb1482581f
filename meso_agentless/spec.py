"""The job file, version 1: validated strictly (pydantic), converted to the core's task groups.

    job: wordcount              # lowercase letters, digits, dashes
    framework: analytics        # default "default"
    priority: 50                # 0-100: a framework's jobs are placed by priority, then age
    max_running: 8              # at most this many of the job's instances run at once
    type: batch                 # batch | service
    tasks:
      - name: mapper
        count: 4
        command: ["python3", "-c", "print('hi')"]   # a string runs under /bin/sh -c
        resources: {cpus: 0.5, mem: 256MiB, disk: 1GiB, ports: 1}
        env: {KEY: value}
        constraints: [{attribute: rack, op: eq, value: r1}, {op: unique_host}]
        gang: false               # true: all `count` instances start together, or none does
        revocable: true           # false: never on capacity borrowed from another's guarantee
        max_running: 2            # at most this many instances run at once (default: all)
        restart: {policy: on-failure, attempts: 3}
        timeout: 10m
        user: www-data            # default: a throwaway user (sandbox.dynamic_user)
        workdir: /srv
        sandbox: {dynamic_user: true, no_new_privileges: true, private_tmp: true,
                  protect_system: full}     # the defaults; relax them explicitly

Anything unknown, mistyped, negative, absurd or not finite is refused with the file, the line and
the field, in one line, before anything is stored or runs: so is anything a host would refuse
(env names and values, argument sizes, the whole command line: the node command's own checks
and limits, see `meso_agentless.node.nodecmd`). Hosts decide the rest for themselves (which
users and sandbox relaxations they allow): see the README's security model.

`load_job(path)` reads a file (regular files only, at most 1 MiB); `job_from_text(text)` takes
YAML or JSON text and `job_from_data(data)` parsed JSON, with the same checks and messages.
"""

from __future__ import annotations

import json
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
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from meso_agentless import schedule as schedules
from meso_agentless import yamlsafe
from meso_agentless.core import model
from meso_agentless.core.pinning import PinRequest
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
from meso_agentless.node import nodecmd

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
MAX_COUNT = 10_000
MAX_TIMEOUT = 30 * 24 * 3600
_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d)?\s*$")
_TYPE_NAME = re.compile(r"^(str|int|list|dict|constrained-str)\b|\[")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_REGEX = 256
DEVICE_CLASS = f"^{nodecmd.DEVICE_CLASS.pattern}$"  # the node's own rule
# What a launch adds to a task's own command and env on the host's command line and in its
# request line (properties, description, MESO_* variables with up to 100 ports): kept free.
LAUNCH_OVERHEAD = 16 * 1024
_NAME_RULE = (
    "use lowercase letters, digits and dashes (at most 63, not starting or ending with a dash)"
)
_USER_RULE = "lowercase letters, digits, _ and - (at most 32, not starting with a digit or -)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class Resources(_Strict):
    """Per instance. cpus: 0.5 or "500m"; mem, disk: sizes; ports: how many; others: counts.

    For big servers (see core.pinning): `cpuset: dedicated` gives the task whole cores of its
    own (cpus a whole number), `numa: same` puts them and the task's memory on one NUMA node;
    `mem_soft` is where it is throttled and reclaimed (MemoryHigh; `mem` still kills);
    `io_weight` its IOWeight (1-10000); `devices` how many of each device class it gets.
    """

    model_config = ConfigDict(
        extra="allow", strict=True, frozen=True, validate_default=True, defer_build=True
    )

    cpus: Any = 0.1
    mem: Any = "128MiB"
    disk: Any = 0
    ports: Annotated[int, Field(ge=0, le=100)] = 0
    cpuset: Literal["shared", "dedicated"] = "shared"
    numa: Literal["same"] | None = None
    mem_soft: Any = None
    io_weight: Annotated[int, Field(ge=1, le=10_000)] | None = None
    devices: dict[Annotated[str, StringConstraints(pattern=DEVICE_CLASS)],
                  Annotated[int, Field(ge=1, le=64)]] = {}  # fmt: skip

    @field_validator("mem_soft", mode="before")
    @classmethod
    def _mem_soft(cls, value: object) -> int | None:
        return None if value is None else _quantity(parse_size, value, "mem_soft")

    @model_validator(mode="after")
    def _pinned(self) -> Resources:
        if self.numa is not None and self.cpuset != "dedicated":
            raise ValueError("numa: same needs cpuset: dedicated (cores to put on one node)")
        if self.cpuset == "dedicated" and self.cpus % 1000:
            raise ValueError(f"cpus: cpuset: dedicated takes whole cores, not {self.cpus / 1000:g}")
        if self.mem_soft is not None and not 0 < self.mem_soft <= self.mem:
            raise ValueError("mem_soft: must be more than 0 and at most mem (the hard limit)")
        return self

    def pin(self) -> PinRequest | None:
        """What the task asks to have for itself (dedicated cores, one NUMA node, devices)."""
        cores = self.cpus // 1000 if self.cpuset == "dedicated" else 0
        if not cores and not self.devices:
            return None
        numa = self.numa == "same"
        return PinRequest(cores, numa, self.mem if numa else 0,
                                tuple(sorted(self.devices.items())))  # fmt: skip

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: object) -> int:
        millicpus = _quantity(parse_cpus, value, "cpus")
        if millicpus <= 0:
            raise ValueError("cpus must be more than 0")
        return millicpus

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, value: object) -> int:
        size = _quantity(parse_size, value, "mem")
        if size <= 0:
            raise ValueError("mem must be more than 0")
        return size

    @field_validator("disk", mode="before")
    @classmethod
    def _disk(cls, value: object) -> int:
        return _quantity(parse_size, value, "disk")

    @model_validator(mode="after")
    def _named(self) -> Resources:
        for name, value in (self.model_extra or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a resource name")
            self.model_extra[name] = _quantity(parse_count, value, name)  # type: ignore[index]
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        """Back to what a job file says (cpus in CPUs, sizes in bytes): it validates again."""
        fine = {k: v for k, v in (("cpuset", self.cpuset), ("numa", self.numa),
                                  ("mem_soft", self.mem_soft), ("io_weight", self.io_weight),
                                  ("devices", self.devices))
                if v not in (None, "shared", {})}  # fmt: skip
        return {"cpus": self.cpus / 1000, "mem": self.mem, "disk": self.disk,
                "ports": self.ports, **fine, **(self.model_extra or {})}  # fmt: skip

    def amounts(self) -> dict[str, int]:
        """As the core counts them: millicpus, bytes, counts; zeros left out."""
        out = {CPUS: self.cpus, MEM: self.mem, DISK: self.disk, PORTS: self.ports}
        out.update(self.model_extra or {})
        return {k: v for k, v in out.items() if v}


def _quantity(parse: Any, value: object, what: str) -> int:
    """A resource amount; a number too large for decimal arithmetic ("1e999999") is absurd."""
    try:
        return parse(value, what)
    except ArithmeticError:
        raise ValueError(f"{what} {yamlsafe.short(value)} is absurdly large") from None


class Constraint(_Strict):
    """eq / ne / regex on a host attribute; unique_host; max_per (value: N); spread."""

    op: Literal["eq", "ne", "regex", "unique_host", "max_per", "spread"]
    attribute: Annotated[str, StringConstraints(min_length=1, max_length=128)] = model.HOSTNAME
    value: Annotated[str, StringConstraints(max_length=1024)] | int | None = None

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.op in ("eq", "ne", "regex") and not isinstance(self.value, str):
            raise ValueError(f"op {self.op} needs a string value")
        if self.op == "regex":
            if len(str(self.value)) > MAX_REGEX:
                raise ValueError(f"a regular expression of at most {MAX_REGEX} characters")
            try:
                re.compile(str(self.value))
            except (re.error, RecursionError, OverflowError, ValueError, MemoryError) as exc:
                reason = " ".join(str(exc).split())[:100] or type(exc).__name__
                raise ValueError(f"value is not a valid regular expression: {reason}") from None
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


def _seconds(value: object, zero_ok: bool = False) -> int:
    if zero_ok and value in (0, "0", "0s"):
        return 0
    return parse_duration(value)


class Health(_Strict):
    """A check the node command runs on the task's own host (no agent, no network path from
    the controller): `http` GETs a path on one of the task's ports on 127.0.0.1 (2xx or 3xx is
    healthy), `tcp` connects to it, `command` runs as a throwaway user in a sandbox (exit 0 is
    healthy). `failures` in a row and the instance is restarted; none count for `grace` after
    it starts. A service is up only when its instances are healthy."""

    http: Annotated[str, StringConstraints(pattern=r"^/[\x21-\x7e]{0,1023}$")] | None = None
    tcp: bool = False
    command: list[Annotated[str, StringConstraints(min_length=0)]] | str | None = None
    port: Annotated[int, Field(ge=0, le=99)] = 0  # which of the task's ports
    interval: Any = 10
    timeout: Any = 2
    grace: Any = 10
    failures: Annotated[int, Field(ge=1, le=100)] = 3

    @field_validator("interval", "timeout", mode="before")
    @classmethod
    def _durations(cls, value: object) -> int:
        return parse_duration(value)

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, value: object) -> int:
        return _seconds(value, zero_ok=True)

    @model_validator(mode="after")
    def _one_kind(self) -> Health:
        kinds = [k for k in ("http", "tcp", "command") if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            raise ValueError("give exactly one of http, tcp or command")
        if self.timeout >= self.interval:
            raise ValueError("timeout must be shorter than interval")
        if self.command is not None:
            problem = nodecmd.argv_error(self.argv)
            if problem:
                raise ValueError(f"command {problem}")
        return self

    @property
    def argv(self) -> list[str]:
        command = self.command or []
        return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)

    def request(self, unit: str) -> dict:
        """The node command's health request for one unit."""
        kind = (
            {"command": self.argv}
            if self.command is not None
            else ({"http": self.http} if self.http is not None else {"tcp": True})
        )
        return {"unit": unit, **kind, "port": self.port, "timeout": self.timeout}


class Disconnect(_Strict):
    """What happens to a task whose host cannot be reached: after `replace_after` a service
    instance is placed elsewhere; a batch task too if its restart policy allows another attempt
    (`batch: replace`: the original may still be running on the host it lost touch with) or it
    waits for its host (`batch: wait`: it never runs twice). When the host returns, a replaced
    original is stopped (the replacement wins)."""

    replace_after: Any = 30
    batch: Literal["replace", "wait"] = "replace"

    @field_validator("replace_after", mode="before")
    @classmethod
    def _after(cls, value: object) -> int:
        return parse_duration(value)


class Update(_Strict):
    """How a running service changes to a new version of its job file: `max_parallel` new
    instances at a time start beside old ones; an old one stops once its replacement has been
    healthy for `min_healthy_time`; a new one not healthy within `healthy_deadline` fails the
    update. `canary` new instances start first and wait for a promote (or `auto_promote`);
    `auto_revert` goes back to the last version by itself when the update fails."""

    max_parallel: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    min_healthy_time: Any = 10
    healthy_deadline: Any = 300
    canary: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    auto_promote: bool = False
    auto_revert: bool = False

    @field_validator("min_healthy_time", mode="before")
    @classmethod
    def _min_healthy(cls, value: object) -> int:
        return _seconds(value, zero_ok=True)

    @field_validator("healthy_deadline", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> int:
        return parse_duration(value)

    @model_validator(mode="after")
    def _deadline_after_min(self) -> Update:
        if self.healthy_deadline <= self.min_healthy_time:
            raise ValueError("healthy_deadline must be longer than min_healthy_time")
        return self


class Task(_Strict):
    name: Name
    count: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 1
    command: list[Annotated[str, StringConstraints(min_length=0)]] | str
    resources: Resources = Resources()
    env: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    constraints: list[Constraint] = []
    strategy: Literal["binpack", "spread"] | None = None
    gang: bool = False
    revocable: bool = True
    max_running: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = None
    restart: Restart = Restart()
    timeout: Any = None
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None
    workdir: Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$")] | None = None
    sandbox: Sandbox = Sandbox()
    health: Health | None = None

    @model_validator(mode="after")
    def _health_port(self) -> Task:
        health = self.health
        if health is not None and health.command is None and health.port >= self.resources.ports:
            raise ValueError(f"health.port: {health.port} is not one of the task's "
                             f"{self.resources.ports} port(s) (resources.ports)")  # fmt: skip
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """A task dumps without the fields it leaves at their defaults that came after it was
        stored (gang, revocable, max_running), so stored specs compare equal."""
        data = handler(self)
        if not self.gang:
            data.pop("gang", None)
        if self.revocable:
            data.pop("revocable", None)
        if self.max_running is None:
            data.pop("max_running", None)
        return data

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


DEFAULT_PRIORITY = 50
CRON_ONLY = ("schedule", "concurrency", "catch_up")
CRON_REPLACE_AFTER = "5m"  # a cron timer's default lease: how long its host fires on without us


class Job(_Strict):
    """A job file (version 1). A `type: cron` job is a timer on one host per task instance,
    firing on its `schedule` (a systemd calendar expression or a 5-field cron line) in its
    `timezone`; `concurrency` says what a firing does while the last run still runs (forbid:
    skipped; allow: both run; replace: the running one is stopped first); `catch_up` how many
    runs missed while no host held the timer are run when one takes it again."""

    job: Name
    framework: Name = "default"
    type: Literal["batch", "service", "cron"] = "batch"
    priority: Annotated[int, Field(ge=0, le=100)] = DEFAULT_PRIORITY
    max_running: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] = "UTC"
    schedule: Annotated[str, StringConstraints(max_length=schedules.MAX_SCHEDULE)] | None = None
    concurrency: Literal["forbid", "allow", "replace"] | None = None
    catch_up: Annotated[int, Field(ge=0, le=100)] | None = None
    strategy: Literal["binpack", "spread"] = "binpack"
    disconnect: Disconnect = Disconnect()
    update: Update | None = None  # services only: how a new version replaces the running one
    tasks: Annotated[list[Task], Field(min_length=1, max_length=100)]

    @model_validator(mode="before")
    @classmethod
    def _cron_window(cls, data: object) -> object:
        """A cron job's timer fires only under its lease, `disconnect.replace_after` long: by
        default a longer one than other jobs' (CRON_REPLACE_AFTER), so that a controller
        stopped or restarting for minutes misses no run."""
        if isinstance(data, dict) and data.get("type") == "cron":
            disconnect = data.get("disconnect", {})
            if isinstance(disconnect, dict) and "replace_after" not in disconnect:
                data = {**data, "disconnect": {**disconnect, "replace_after": CRON_REPLACE_AFTER}}
        return data

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return schedules.check_timezone(value)

    @field_validator("schedule", "concurrency", "catch_up")
    @classmethod
    def _cron_only(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("type", "batch") != "cron":
            raise ValueError("only for type: cron")
        if info.field_name == "schedule" and isinstance(value, str):
            schedules.parse(value, info.data.get("timezone", "UTC"))
        return value

    @model_validator(mode="after")
    def _unique_tasks(self) -> Job:
        names = [t.name for t in self.tasks]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"task name {duplicate!r} is used twice")
        if self.type == "cron":
            if self.schedule is None:
                raise ValueError("schedule: required for type: cron")
            checked = next((t.name for t in self.tasks if t.health is not None), None)
            if checked:
                raise ValueError(f"task {checked!r}: health checks are for services, not cron")
            pinned = next((t.name for t in self.tasks if t.resources.pin() is not None), None)
            if pinned:
                raise ValueError(f"task {pinned!r}: dedicated cores and devices are for batch "
                                 "and service jobs, not cron")  # fmt: skip
        self._check_update()
        return self

    def _check_update(self) -> None:
        """An update block fits the service it changes: no more at a time than it runs."""
        update = self.update
        if update is None:
            return
        if self.type != "service":
            raise ValueError("update: only for type: service")
        count = max(t.count for t in self.tasks)
        for name in ("max_parallel", "canary"):
            value = getattr(update, name)
            if value > max(count, 1):
                raise ValueError(f"update.{name}: {value} is more than the task's count "
                                 f"({count})")  # fmt: skip

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Other jobs' specs stay as they were before cron existed (stored specs compare equal)."""
        data = handler(self)
        if self.type != "cron":
            for key in (*CRON_ONLY, "timezone"):
                data.pop(key, None)
        if self.priority == DEFAULT_PRIORITY:
            data.pop("priority", None)
        if self.max_running is None:
            data.pop("max_running", None)
        if self.update is None:
            data.pop("update", None)
        return data

    @property
    def cron(self) -> schedules.Schedule | None:
        """The checked schedule of a cron job (None for others)."""
        if self.type != "cron" or self.schedule is None:
            return None
        return schedules.parse(self.schedule, self.timezone)

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
                gang=t.gang,
                priority=self.priority,
                revocable=t.revocable,
                max_running=t.max_running,
                job_max_running=self.max_running,
                pin=t.resources.pin(),
            )
            for t in self.tasks
        ]


Problem = tuple[tuple[str | int, ...], str]


def load_job(path: Path) -> Job:
    """Read and validate a job file; UsageError names the file, line and field."""
    return job_from_text(yamlsafe.read_file(path, "job file"), str(path))


def job_from_text(text: bytes | str, source: str | None = None) -> Job:
    """A job from YAML or JSON text (an HTTP body, a file's contents).

    UsageError, in one line: "SOURCE:LINE: field: reason" when `source` is given, else
    "line N: field: reason" ("SOURCE: reason" / "field: reason" where there is no line).
    """
    try:
        decoded = yamlsafe.decode(text)
        data, locate = _parse_json(decoded) or yamlsafe.parse(decoded)
    except yamlsafe.TextError as exc:
        raise UsageError(_message(source, exc.line, exc.reason)) from None
    return _validate(data, locate, source, text=True)


def job_from_data(data: object) -> Job:
    """A job from already parsed JSON; UsageError "field: reason" in one line."""
    return _validate(data, lambda loc: None, None, text=False)


def _parse_json(text: str) -> tuple[Any, yamlsafe.Locate] | None:
    """JSON text as JSON (numbers as JSON reads them), with lines from the YAML reader; None
    when it is not JSON (then it is read as YAML, whose messages have lines)."""
    if not text.lstrip("\ufeff \t\r\n").startswith("{"):
        return None
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs)
    except (ValueError, RecursionError):
        return None
    return data, yamlsafe.locator(text)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")  # read as YAML, which says which and where
    return out


def _validate(data: object, locate: yamlsafe.Locate, source: str | None, text: bool) -> Job:
    if not isinstance(data, dict):
        what = "a job file" if text else "a job"
        reason = f"{what} is a mapping with job, framework, type and tasks"
        raise UsageError(_message(source, locate(()) or (1 if text else None), reason))
    problem = _data_problem(data)
    if problem is None:
        job = _model(data)
        if isinstance(job, Job):
            problem = _host_problem(job)
            if problem is None:
                return job
        else:
            problem = job
    loc, reason = problem
    field = _field_path(loc) or "(top level)"
    raise UsageError(_message(source, locate(loc), f"{field}: {reason}"))


def _message(source: str | None, line: int | None, reason: str) -> str:
    """One line, whatever the source or the reason hold."""
    if source is not None:
        where = f"{source}:{line}: " if line else f"{source}: "
    else:
        where = f"line {line}: " if line else ""
    return _one_line(where + reason)


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _data_problem(data: object) -> Problem | None:
    """Plain data a job can be: keys are strings, text has no NUL nor lone surrogates, depth
    and size within the YAML reader's limits (job_from_data gets data from elsewhere)."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(data, ())]
    count = 0
    while stack:
        value, loc = stack.pop()
        count += 1
        if count > yamlsafe.MAX_NODES:
            return (), f"more than {yamlsafe.MAX_NODES} values"
        if len(loc) > yamlsafe.MAX_DEPTH:
            return loc[:-1], f"nested deeper than {yamlsafe.MAX_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return loc, f"keys must be strings, not {yamlsafe.short(key)}"
                problem = _text_problem(key)
                if problem:
                    return loc, f"key {yamlsafe.short(key)} {problem}"
                stack.append((item, (*loc, key)))
        elif isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return loc, problem
    return None


def _text_problem(text: str) -> str | None:
    if "\0" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate)"
    return None


def _model(data: dict) -> Job | Problem:
    """The model, or its first error as (field path, message)."""
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        return _first_error(exc)
    except RecursionError:  # defensive: _data_problem keeps data shallow
        return (), "nested too deep"


def _first_error(exc: ValidationError) -> Problem:
    error = exc.errors(include_url=False)[0]
    raw = error["loc"]
    # union members ("str", "list[str]") and "[key]" in the location are noise for a user
    loc = tuple(p for p in raw if isinstance(p, int) or not _TYPE_NAME.search(p))
    message = error["msg"].removeprefix("Value error, ")
    named = re.match(r"^([a-z_]+)((?:\.[a-z_]+)*): (.*)$", message)
    if not loc and named and named[1] in Job.model_fields:  # a whole-job rule about one field
        loc, message = (named[1], *named[2].split(".")[1:]), named[3]
    kind = error["type"]
    shown = yamlsafe.short(error.get("input"))
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if "[key]" in raw:  # a mapping key, e.g. an env name: the error is the mapping's
        loc = loc[:-1]
        last = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if kind == "string_pattern_mismatch" and last == "env":
            return loc, nodecmd.env_error(error["input"], "")[1]  # type: ignore[index]
        return loc, f"key {shown}: {message}"
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "string_pattern_mismatch":
        message = {
            "user": f"{shown} is not a user name: {_USER_RULE}",
            "workdir": f"{shown} must be an absolute path (starting with /)",
        }.get(last, f"{shown} is not a name: {_NAME_RULE}")
    elif kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        message = f"{message}, not {shown}"
    return loc, message


def _host_problem(job: Job) -> Problem | None:
    """What a host would refuse of this job (the node command's own checks and limits)."""
    for i, task in enumerate(job.tasks):
        where: tuple[str | int, ...] = ("tasks", i)
        problem = nodecmd.argv_error(task.argv)
        if problem:
            match = re.fullmatch(r"\[(\d+)\] (.*)", problem)
            if match and isinstance(task.command, list):
                return (*where, "command", int(match[1])), match[2]
            return (*where, "command"), match[2] if match else problem
        for key, value in task.env.items():
            env = nodecmd.env_error(key, value)
            if env:
                return ((*where, "env", key), env[1]) if env[0] else ((*where, "env"), env[1])
        if task.workdir is not None:
            problem = nodecmd.cwd_error(task.workdir)
            if problem:
                return (*where, "workdir"), problem
        problem = _command_line_problem(task)
        if problem:
            return (*where, problem[0]), problem[1]
    return None


def _command_line_problem(task: Task) -> tuple[str, str] | None:
    """Whether the task's command and env fit on the host's command line and in one request."""
    env_args = [f"--setenv={k}={v}" for k, v in task.env.items()]
    command_args = [arg.replace("$", "$$") for arg in task.argv]
    on_line = nodecmd.command_bytes(env_args) + nodecmd.command_bytes(command_args)
    in_request = len(json.dumps({"argv": task.argv, "env": task.env}))
    field = "env" if len(json.dumps(task.env)) > len(json.dumps(task.argv)) else "command"
    limit = nodecmd.MAX_COMMAND_BYTES - LAUNCH_OVERHEAD
    if on_line > limit:
        return field, (
            f"command and env take {on_line} bytes on one command line, more than the "
            f"{limit} a host takes"
        )
    limit = nodecmd.MAX_LINE - LAUNCH_OVERHEAD
    if in_request > limit:
        return field, (
            f"command and env take {in_request} bytes in a launch request, more than the "
            f"{limit} a host reads"
        )
    return None


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
