#!/usr/bin/env python3
"""meso node command: what the controller asks of a host, answered in JSON.

Runs on the host with nothing but the Python standard library, as root (streamed to python3 by
the controller) or installed root-owned for the unprivileged meso user. Verbs:

    sample              cpus, memory, disk, load, boot id, cgroup and systemd versions, units,
                        the capacity this host admits against and its policy
    launch REQUEST      start a task as a transient systemd service (policy- and admission-checked);
                        with a "schedule", a transient timer that fires it (a cron job)
    trigger REQUEST     fire a cron job's timer now (its concurrency rule applies)
    status REQUEST      the state of one task unit
    list                every meso unit and its state
    stop REQUEST        stop a task (SIGTERM, then SIGKILL after its grace period)
    forget REQUEST      unload a finished unit once the controller has stored its result
    health REQUEST      check a running task here: http GET or tcp connect on one of its own
                        ports on 127.0.0.1, or a command as a throwaway user in a sandbox
    logs REQUEST        the task's journal (follow: true streams it)
    policy [REQUEST]    the policy in force; {"policy": {...}} tightens it for this connection
    serve               answer JSON-line requests ({"verb": ..., ...}) until stdin closes
    check-policy FILE   validate a policy file (the meso_node role runs it before installing one)
    fire UNIT           what a cron job's timer runs (systemd starts it, as root; see fire())

With several controllers, the requests that change a host (launch, stop, forget, trigger)
carry the leader's `epoch` and `epoch_state` (the state's identity); the highest epoch seen
of each state is kept in EPOCHS_DIR and a lower one is refused (fencing: a deposed leader can do
nothing here). Requests without one, from a single controller, are not fenced.

The host decides what tasks may do, not the request. A root-owned policy file
(/etc/meso-agentless/node-policy.json, written by the meso_node role; built-in defaults when
there is none) says which users tasks may run as (a DynamicUser, users on its allow-list, root
only where it says so), the sandbox minimum, the limits a task gets when its request has none,
and the capacity admission counts against. It is read on every request. A request can tighten
all of it and loosen none of it; a `policy` request on a serve channel tightens it for that
connection only (the controller sends its defaults that way to hosts without the role).

Every request is size-capped (MAX_LINE), depth-capped (MAX_DEPTH) and checked field by field;
a refusal is one JSON line naming the field, and no traceback ever leaves this program. Unit
names must be meso's, properties are built here (never taken from the request), argv is a JSON
list passed to systemd-run word by word (no shell ever sees it); a warm node sends the same
to systemd itself over its private D-Bus socket (see the D-Bus section). Facts are read by
small functions and parsed by pure ones (parse_*, task_state, plan_launch, parse_policy), which
the package's tests check against real output.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation

TYPE_CHECKING = False  # typing's, without importing typing (3 ms a start)
if TYPE_CHECKING:
    import subprocess  # imported where a process starts: its import costs every start 4 ms


class Pattern:
    """A regular expression compiled when first used: compiling all of them at import cost
    every start of the node command, each new connection, milliseconds that a sample never
    needed. A method asked for is kept on the instance, so later calls cost what a compiled
    pattern's do."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags = pattern, flags

    def __getattr__(self, name: str) -> Callable:  # match, fullmatch, search, finditer, ...
        method = getattr(re.compile(self.pattern, self.flags), name)
        setattr(self, name, method)
        return method


UNIT_PREFIX = "meso-"
UNIT_NAME = Pattern(r"meso-[a-z0-9][a-z0-9-]{0,62}_[a-z0-9][a-z0-9-]{0,62}_[0-9]{1,18}_[0-9]{1,18}")
# one run of a cron job's timer: -r<scheduled second> for a firing, -t<milliseconds> for a trigger
RUN_NAME = Pattern(UNIT_NAME.pattern + r"-[rt][0-9]{1,20}")
OWNER = Pattern(r"[0-9a-f]{1,32}")
UNITS_DIGEST = Pattern(r"[0-9a-f]{32}")  # a sample's units, as its caller holds them
UNIT_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Result", "ExecMainCode", "ExecMainStatus",
    "ExecMainPID", "CPUQuotaPerSecUSec", "MemoryMax", "TasksMax", "RuntimeMaxUSec",
    "NRestarts", "InvocationID", "ControlGroup", "Description",
)  # fmt: skip
TIMEOUT = 20
STATE_DIR = "/run/meso-node"  # tmpfs: it goes with a reboot, as transient units do
LEDGER = STATE_DIR + "/ledger.json"  # what launched units were given: admission's fast path
POLICY_FILE = "/etc/meso-agentless/node-policy.json"
TIMERS_DIR = STATE_DIR + "/timers"  # each cron timer's run request (timers go with a reboot too)
RUNS_DIR = "/var/lib/meso-node/runs"  # each timer's runs, one JSON line each: kept over reboots
# the highest controller epoch seen here, one file per state (its identity: a new database
# starts its epochs anew) (fencing): kept over reboots, so a deposed controller is refused by a
# host that rebooted since, too
EPOCHS_DIR = "/var/lib/meso-node/epochs"
FENCED = frozenset({"launch", "stop", "forget", "trigger"})  # the verbs that change the host
MAX_FORGET = 500  # units one forget request may name
MAX_EPOCH = 1 << 62
MAX_RECORDS = 500  # lines kept per timer
MAX_REPORTED = 100  # records per timer in one answer
RECORDS_KEEP = 7 * 86400  # a timer gone for this long: its records go too
ENV_NAME = Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
USER_NAME = Pattern(r"[a-z_][a-z0-9_-]{0,31}")
CONTROL = Pattern(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3  # ExecMainCode values (siginfo si_code)

# Task states that still hold their resources on the host, and the ones a task ends in.
# core/tasks.py holds the package's copy; a test checks the two are equal.
HOLDS_RESOURCES = frozenset({"staging", "running"})
ENDED = frozenset({"finished", "failed", "killed"})
NOT_STARTED = "not started"  # a launch refused for the host's sake, not the task's

# What a request may be. The job file validation (spec.py) uses the same numbers.
MAX_LINE = 1 << 20  # bytes in one request line (or one REQUEST argument)
MAX_DEPTH = 8  # nesting of lists and objects in a request
MAX_ARG_BYTES = 128 * 1024 - 1  # one argument (the kernel's MAX_ARG_STRLEN, less its NUL)
MAX_COMMAND_BYTES = 512 * 1024  # systemd-run's whole argv: well under ARG_MAX (2 MiB)
MAX_PATH = 4095
MAX_POLICY_BYTES = 64 * 1024
EXIT_TYPE_CGROUP = 250  # the first systemd with ExitType=cgroup
PROTECT_SYSTEM = ("no", "yes", "full", "strict")  # from loosest to tightest
SANDBOX_FLAGS = ("dynamic_user", "no_new_privileges", "private_tmp")
SANDBOX_KEYS = (*SANDBOX_FLAGS, "protect_system")
SANDBOX_DEFAULTS = {"dynamic_user": True, "no_new_privileges": True, "private_tmp": True,
                    "protect_system": "full"}  # fmt: skip

# The policy when the host has no policy file: the meso_node role's defaults.
DEFAULT_POLICY: dict = {
    "allow_root": False,
    "task_users": [],
    "sandbox_minimum": {
        "dynamic_user": False,
        "no_new_privileges": True,
        "private_tmp": True,
        "protect_system": "full",
    },
    "default_limits": {"cpus": "100m", "mem": "128MiB", "tasks_max": 512},
    "max_tasks": 4096,
    "capacity": {"cpus": None, "mem": None},
    "reserve": {"cpus": 0, "mem": 0},
}


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes: {"MemTotal": ..., "MemAvailable": ...}."""
    return {name: int(number) * (1024 if kb else 1)
            for name, number, kb in MEMINFO_LINE.findall(text)}  # fmt: skip


MEMINFO_LINE = Pattern(r"^[ \t]*(\w+):[ \t]+(\d+)(?:[ \t]+(kB))?[ \t]*$", re.MULTILINE)


def parse_loadavg(text: str) -> list[float]:
    return [float(x) for x in text.split()[:3]]


def parse_systemd_version(text: str) -> int:
    """`systemctl --version`'s first line: "systemd 252 (252.39-1~deb12u2)"."""
    match = re.match(r"^systemd (\d+)", text.strip())
    return int(match.group(1)) if match else 0


def parse_cgroup_mode(mounts: str) -> str:
    """ "v2" (unified), "hybrid" (v1 controllers with an empty v2), or "v1", from /proc/mounts."""
    types = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].startswith("/sys/fs/cgroup"):
            types[fields[1]] = fields[2]
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    if "cgroup2" in types.values():
        return "hybrid"
    return "v1"


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show -p A,B unit...`: one dict per unit (blocks split by blank lines)."""
    units, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if current:
        units.append(current)
    return units


def parse_usec(value: str) -> int | None:
    """systemd time spans as microseconds: "500ms", "1s", "1min 30s", "infinity" -> None."""
    value = value.strip()
    if not value or value == "infinity":
        return None
    units = {"us": 1, "ms": 1000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}
    total = 0
    for number, unit in re.findall(r"([\d.]+)\s*(us|ms|min|s|h)", value):
        total += int(Decimal(number) * units[unit])  # exact: "1.001000s" is 1001000
    if not total and value.isdigit():
        total = int(value)
    return total


def parse_limit(value: str) -> int | None:
    """MemoryMax, TasksMax: a number, or "infinity" -> None."""
    value = value.strip()
    return int(value) if value.isdigit() else None


def task_state(props: dict[str, str]) -> dict:
    """A unit's `systemctl show` properties as a task state, the way Mesos users know them.

    staging, running, finished (exit 0), failed (exit_code, or a reason: "oom-killed",
    "timed out"), killed (by a signal); unknown when no such unit is loaded. Units run with
    RemainAfterExit=yes, so a finished or failed one stays loaded until it is forgotten.
    """
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    result = props.get("Result", "")
    code = int(props.get("ExecMainCode") or 0)
    status = int(props.get("ExecMainStatus") or 0)
    out = {"unit": props.get("Id", ""), "state": "unknown", "exit_code": None, "signal": None,
           "reason": None, "restarts": int(props.get("NRestarts") or 0)}  # fmt: skip
    if code == CLD_EXITED:
        out["exit_code"] = status
    elif code in (CLD_KILLED, CLD_DUMPED):
        out["signal"] = status
    if props.get("LoadState") != "loaded":
        return out
    if active in ("activating", "reloading"):
        out["state"] = "staging"
    elif active in ("active", "deactivating") and sub != "exited":
        out["state"] = "running"
    elif active == "active":
        out["state"] = "finished" if status == 0 else "failed"
    elif result == "oom-kill":
        out.update(state="failed", reason="oom-killed")
    elif result == "timeout":
        out.update(state="failed", reason="timed out")
    elif result in ("signal", "core-dump"):
        out["state"] = "killed"
    elif active in ("failed", "inactive"):
        out["state"] = "failed" if code or result != "success" else "unknown"
    return out


def unit_limits(props: dict[str, str]) -> dict:
    quota = parse_usec(props.get("CPUQuotaPerSecUSec", ""))
    return {
        "unit": props.get("Id", ""),
        "active": props.get("ActiveState", ""),
        "sub": props.get("SubState", ""),
        "millicpus": None if quota is None else quota // 1000,
        "memory_max": parse_limit(props.get("MemoryMax", "")),
        "tasks_max": parse_limit(props.get("TasksMax", "")),
    }


def parse_populated(text: str) -> bool | None:
    """A cgroup v2 `cgroup.events` file: is any process left in the cgroup?"""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return value.strip() == "1"
    return None


class RequestError(ValueError):
    """A request this host refuses; the message starts with the field it is about."""


def _label(key: str) -> str:
    """A field name from a request as it can appear in a message: itself if it looks like a
    name, else quoted and cut (no newline or megabyte ever reaches an error line)."""
    return key if _LABEL.fullmatch(key) else _short(key, 40)


_LABEL = Pattern(r"[A-Za-z0-9_-]{1,64}")


def _short(value: object, limit: int = 60) -> str:
    """repr() cut to a length that fits a one-line message."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- sizes, as core/resources.py parses them (stdlib only here; a test checks they agree) --------

_SIZE_UNITS = {
    "": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20,
    "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}  # fmt: skip
_SIZE = Pattern(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([a-zA-Z]{0,3})\s*")
MAX_BYTES_VALUE = 1 << 60
MAX_MILLICPUS = 10**9


def _number(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestError(f"{field}: {_short(value)} is not a number")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        raise RequestError(f"{field}: {_short(value)} is not a number") from None
    if not number.is_finite() or number < 0:
        raise RequestError(f"{field}: {_short(value)} must be a finite number, not negative")
    return number


def _whole(number: Decimal, value: object, field: str, limit: int) -> int:
    try:
        if number > limit:
            raise RequestError(f"{field}: {_short(value)} is absurdly large")
        if number != number.to_integral_value():
            raise RequestError(f"{field}: {_short(value)} is not a whole number")
    except ArithmeticError:
        raise RequestError(f"{field}: {_short(value)} is absurdly large") from None
    return int(number)


def parse_size(value: object, field: str) -> int:
    """Bytes from 268435456, "256MiB", "4GiB", "1.5G" (as core.resources.parse_size)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise RequestError(f"{field}: {_short(value)} is not a size like 256MiB or 4GiB")
        number = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    else:
        number = _number(value, field)
    return _whole(number, value, field, MAX_BYTES_VALUE)


def parse_cpus(value: object, field: str) -> int:
    """Millicpus from 2, 0.5, "1.5" or "500m" (as core.resources.parse_cpus)."""
    if isinstance(value, str) and value.strip().endswith("m"):
        number = _number(value.strip()[:-1], field)
    else:
        try:
            number = _number(value, field) * 1000
        except ArithmeticError:
            raise RequestError(f"{field}: {_short(value)} is absurdly large") from None
    return _whole(number, value, field, MAX_MILLICPUS)


# -- requests: size, depth, text, fields ---------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(f"{_label(key)}: given twice")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise RequestError(f"request: {name} is not a JSON number")


def check_shape(data: object, what: str = "request") -> None:
    """Nesting at most MAX_DEPTH; every string (keys too) is text that encodes as UTF-8."""
    stack: list[tuple[object, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise RequestError(f"{path or what}: nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    sub = f"{path}.{_label(key)}" if path else _label(key)
                    _check_text(key, sub)
                else:
                    sub = f"{path}[{key}]"
                stack.append((item, sub, depth + 1))
        elif isinstance(value, str):
            _check_text(value, path or what)


def _check_text(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{field}: not valid Unicode text (a lone surrogate)") from None


def decode_object(line: bytes) -> dict:
    """One JSON object from a request line: at most MAX_LINE bytes, UTF-8, no duplicate keys,
    no NaN, at most MAX_DEPTH deep, text that encodes back to UTF-8 (RequestError if not)."""
    if len(line) > MAX_LINE:
        raise RequestError(f"request: longer than {MAX_LINE} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"request: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(f"request: nested deeper than {MAX_DEPTH} levels") from None
    except RequestError:
        raise
    except ValueError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        if "digits" in reason:  # Python's own cap on int("9" * 5000)
            reason = "a number with thousands of digits"
        raise RequestError(f"request: not JSON ({reason})") from None
    if not isinstance(data, dict):
        raise RequestError("request: must be a JSON object")
    check_shape(data)
    return data


def decode_request(line: bytes) -> tuple[str, dict]:
    """One request line as (verb, fields); RequestError (naming the field) if it is not one."""
    data = decode_object(line)
    if "verb" not in data:
        raise RequestError("verb: missing (each line is a JSON object with a verb)")
    verb = data.pop("verb")
    if not isinstance(verb, str):
        raise RequestError(f"verb: must be a string, not {_short(verb)}")
    return verb, data


def _fields(request: dict, allowed: tuple[str, ...] | frozenset[str]) -> None:
    unknown = sorted(set(request) - set(allowed))
    if unknown:
        raise RequestError(f"{_label(unknown[0])}: unknown field")


def _int(
    request: dict, key: str, low: int, high: int, default: int | None = None, required=False
) -> int | None:
    value = request.get(key, default)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{key}: {_short(value)} is not a whole number from {low} to {high}")
    return value


def check_unit(name: object, runs: bool = False) -> str:
    """A meso unit name (and, where `runs`, the name of one run of a cron job's timer)."""
    if isinstance(name, str) and (UNIT_NAME.fullmatch(name) or (runs and RUN_NAME.fullmatch(name))):
        return name
    raise RequestError(
        f"unit: {_short(name)} is not a meso unit name (meso-JOB_TASK_INDEX_ATTEMPT)"
    )


def env_error(key: object, value: object) -> tuple[bool, str] | None:
    """Why a host refuses this environment variable, or None (spec.py asks the same).

    The first item says whether it is about the value (else the name).
    """
    if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
        return False, (
            f"{_short(key)} is not an environment variable name "
            "(letters, digits and _, not starting with a digit, at most 256)"
        )
    if not isinstance(value, str):
        return True, f"must be a string, not {_short(value)}"
    if "\0" in value:
        return True, "must not contain NUL characters"
    size, limit = len(_arg(value)), MAX_ARG_BYTES - len(f"--setenv={key}=")
    if size > limit:
        return True, f"is {size} bytes, more than the {limit} a host takes for this variable"
    return None


def argv_error(argv: object) -> str | None:
    """Why a host refuses this argv, or None (spec.py asks the same)."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return "must be a non-empty list of strings"
    if not argv[0]:
        return "must not start with an empty program name"
    for index, arg in enumerate(argv):
        if "\0" in arg:
            return f"[{index}] must not contain NUL characters"
        size = len(_arg(_escape(arg)))
        if size > MAX_ARG_BYTES:
            return f"[{index}] is {size} bytes, more than the {MAX_ARG_BYTES} a host takes"
    return None


def cwd_error(cwd: object) -> str | None:
    """Why a host refuses this working directory, or None (spec.py asks the same)."""
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        return "must be an absolute path (starting with /)"
    if CONTROL.search(cwd):
        return "must not contain control characters"
    if ".." in cwd.split("/"):
        return "must not contain .. (a normalized path)"
    if len(_arg(cwd)) > MAX_PATH:
        return f"must be at most {MAX_PATH} bytes"
    return None


def command_bytes(argv: list[str]) -> int:
    """What an argv takes on a command line: every argument's bytes and its NUL."""
    return sum(len(_arg(arg)) + 1 for arg in argv)


def _arg(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _escape(arg: str) -> str:
    # systemd expands $VAR in ExecStart (not % specifiers, given over D-Bus); "$$" is a "$"
    return arg.replace("$", "$$")


# -- the node's policy ---------------------------------------------------------------------------


class PolicyError(RequestError):
    """A policy (file or request) that cannot be understood; nothing launches under it."""


POLICY_KEYS = ("version", "comment", "allow_root", "task_users", "sandbox_minimum",
               "default_limits", "max_tasks", "capacity", "reserve", "devices",
               "device_plugins")  # fmt: skip


def parse_policy(data: object, partial: bool = False) -> dict:
    """A policy as the node uses it (pure): cpus in millicpus, sizes in bytes.

    Every key is optional. A whole policy (a file) takes the built-in defaults for what it
    leaves out; a partial one (a tightening sent on a connection) has only what it says.
    """
    try:
        return _parse_policy(data, partial)
    except PolicyError:
        raise
    except RequestError as exc:
        raise PolicyError(str(exc)) from None


def _parse_policy(data: object, partial: bool) -> dict:
    if not isinstance(data, dict):
        raise PolicyError("policy: must be a JSON object")
    _fields(data, POLICY_KEYS)
    base = {} if partial else _normalized_default()
    out = dict(base)
    version = data.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise PolicyError(f"version: {_short(version)} is not a policy version this host knows (1)")
    if not isinstance(data.get("comment", ""), str):
        raise PolicyError("comment: must be a string")
    if "allow_root" in data:
        if not isinstance(data["allow_root"], bool):
            raise PolicyError("allow_root: must be true or false")
        out["allow_root"] = data["allow_root"]
    if "task_users" in data:
        users = data["task_users"]
        if not isinstance(users, list) or len(users) > 1000:
            raise PolicyError("task_users: must be a list of user names")
        for user in users:
            if not isinstance(user, str) or not USER_NAME.fullmatch(user):
                raise PolicyError(f"task_users: {_short(user)} is not a user name")
        out["task_users"] = sorted(set(users))
    if "sandbox_minimum" in data:
        given = data["sandbox_minimum"]
        if not isinstance(given, dict):
            raise PolicyError("sandbox_minimum: must be an object")
        _fields(given, SANDBOX_KEYS)
        minimum = dict(base.get("sandbox_minimum", {}))
        for key, value in given.items():
            minimum[key] = _sandbox_value(key, value, "sandbox_minimum")
        out["sandbox_minimum"] = minimum
    if "default_limits" in data:
        out["default_limits"] = _limits(data["default_limits"], base.get("default_limits", {}))
    if "max_tasks" in data:
        out["max_tasks"] = _int(data, "max_tasks", 1, 10**6, required=True)
    for key in ("capacity", "reserve"):
        if key in data:
            out[key] = _amounts(data[key], key, base.get(key, {}), nullable=key == "capacity")
    if "devices" in data:
        out["devices"] = parse_devices(data["devices"], "devices")
    if "device_plugins" in data:
        out["device_plugins"] = parse_device_plugins(data["device_plugins"])
    if not partial:
        limits = out["default_limits"]
        limits["tasks_max"] = min(limits["tasks_max"], out["max_tasks"])
    return out


def _normalized_default() -> dict:
    return {
        "allow_root": False,
        "task_users": [],
        "sandbox_minimum": dict(DEFAULT_POLICY["sandbox_minimum"]),
        "default_limits": {"cpus": 100, "mem": 128 << 20, "tasks_max": 512},
        "max_tasks": DEFAULT_POLICY["max_tasks"],
        "capacity": {"cpus": None, "mem": None},
        "reserve": {"cpus": 0, "mem": 0},
    }


def _sandbox_value(key: str, value: object, where: str) -> bool | str:
    if key == "protect_system":
        if value is False:
            return "no"
        if value is True:
            return "yes"
        if value not in PROTECT_SYSTEM:
            raise RequestError(
                f"{where}.protect_system: no, yes, full or strict, not {_short(value)}"
            )
        return str(value)
    if not isinstance(value, bool):
        raise RequestError(f"{where}.{key}: must be true or false, not {_short(value)}")
    return value


def _limits(given: object, base: dict) -> dict:
    if not isinstance(given, dict):
        raise PolicyError("default_limits: must be an object with cpus, mem and tasks_max")
    _fields(given, ("cpus", "mem", "tasks_max"))
    out = dict(base)
    if "cpus" in given:
        out["cpus"] = parse_cpus(given["cpus"], "default_limits.cpus")
        if not out["cpus"]:
            raise PolicyError("default_limits.cpus: must be more than 0")
    if "mem" in given:
        out["mem"] = parse_size(given["mem"], "default_limits.mem")
        if out["mem"] < 1 << 20:
            raise PolicyError("default_limits.mem: must be at least 1MiB")
    if "tasks_max" in given:
        out["tasks_max"] = _int(given, "tasks_max", 1, 10**6, required=True)
    return out


def _amounts(given: object, key: str, base: dict, nullable: bool) -> dict:
    if not isinstance(given, dict):
        raise PolicyError(f"{key}: must be an object with cpus and mem")
    _fields(given, ("cpus", "mem"))
    out = dict(base)
    for name, parse in (("cpus", parse_cpus), ("mem", parse_size)):
        if name in given:
            value = given[name]
            out[name] = None if value is None and nullable else parse(value, f"{key}.{name}")
    return out


def tighten(policy: dict, layer: dict) -> dict:
    """`policy` as `layer` (a partial policy) narrows it; nothing in `layer` can widen it."""
    out = {**policy, "sandbox_minimum": dict(policy["sandbox_minimum"]),
           "default_limits": dict(policy["default_limits"]),
           "cap": dict(policy.get("cap", {}))}  # fmt: skip
    if "allow_root" in layer:
        out["allow_root"] = policy["allow_root"] and layer["allow_root"]
    if "task_users" in layer:
        out["task_users"] = sorted(set(policy["task_users"]) & set(layer["task_users"]))
    for key, value in layer.get("sandbox_minimum", {}).items():
        out["sandbox_minimum"][key] = _stricter(key, out["sandbox_minimum"][key], value)
    for key, value in layer.get("default_limits", {}).items():
        out["default_limits"][key] = min(out["default_limits"][key], value)
    if "max_tasks" in layer:
        out["max_tasks"] = min(policy["max_tasks"], layer["max_tasks"])
    if "devices" in layer:  # a connection may hand out fewer devices, never others
        out["devices"] = {k: [p for p in ps if p in layer["devices"].get(k, ())]
                          for k, ps in policy.get("devices", {}).items()}  # fmt: skip
    out["default_limits"]["tasks_max"] = min(out["default_limits"]["tasks_max"], out["max_tasks"])
    for key in ("cpus", "mem"):  # a capacity in a layer caps; its reserve adds to the host's
        value = layer.get("capacity", {}).get(key)
        if value is not None:
            out["cap"][key] = min(value, out["cap"].get(key, value))
        if key in layer.get("reserve", {}):
            out["reserve"] = {
                **out["reserve"],
                key: max(out["reserve"][key], layer["reserve"][key]),
            }
    return out


def _stricter(key: str, a: bool | str, b: bool | str) -> bool | str:
    if key == "protect_system":
        return max(a, b, key=PROTECT_SYSTEM.index)  # type: ignore[arg-type]
    return bool(a or b)


def node_capacity(policy: dict, measured: dict[str, int]) -> dict[str, int]:
    """What this host admits against: the policy's capacity (or what it measured), less the
    reserve, within any cap a connection set (pure)."""
    out = {}
    for key in ("cpus", "mem"):
        declared = policy["capacity"].get(key)
        total = measured.get(key, 0) if declared is None else declared
        amount = max(0, total - policy["reserve"].get(key, 0))
        cap = policy.get("cap", {}).get(key)
        out[key] = amount if cap is None else min(amount, cap)
    return out


def describe_policy(policy: dict, source: str) -> dict:
    """The policy in force, for answers (cpus in millicpus, sizes in bytes)."""
    return {**{k: v for k, v in policy.items() if k != "cap"}, "source": source,
            "connection_cap": policy.get("cap", {})}  # fmt: skip


# -- launching -----------------------------------------------------------------------------------

LAUNCH_KEYS = ("unit", "argv", "env", "cwd", "user", "cpus", "mem", "tasks_max", "runtime_sec",
               "grace_sec", "sandbox", "capacity", "description", "restart",
               "cpuset", "numa", "mem_soft", "io_weight", "devices")  # fmt: skip
TIMER_KEYS = ("schedule", "concurrency", "lease_sec", "owner")  # a cron job's, besides those


def plan_launch(
    request: dict,
    policy: dict | None = None,
    lookup_user=None,
    systemd: int = 252,
    run: bool = False,
) -> tuple[list[str], dict[str, int]]:
    """The systemd-run argv for a launch request under `policy`, and the limits it gives the
    task (pure but for the user lookup; every field checked, nothing shelled).

    A task always gets CPUQuota, MemoryMax (no swap) and TasksMax: the request's, else the
    policy's defaults. It runs as a DynamicUser, as a user on the policy's allow-list, or as
    root where the policy allows it. Its sandbox is the request's, which may only be stricter
    than the policy's minimum. On systemd >= 250 it has ExitType=cgroup: the unit (and the task)
    ends when its whole cgroup is empty, not when its main process exits, so processes it left
    behind keep it running and holding its resources (and RuntimeMaxSec and `stop` still reach
    them); stopping the unit instead once the main process exits would kill a task's
    legitimate children, and reporting it ended while they live would let admission hand its
    resources to another task. On older systemd, status reads the unit's cgroup for the same
    answer (see cgroup_populated).
    """
    policy = policy if policy is not None else parse_policy({})
    _fields(request, LAUNCH_KEYS)
    unit = check_unit(request.get("unit"), runs=run)
    argv = request.get("argv")
    problem = argv_error(argv)
    if problem:
        raise RequestError(f"argv: {problem}")
    out = ["systemd-run", f"--unit={unit}", "--quiet"]
    restart = request.get("restart", "no")
    if restart not in ("no", "always", "on-failure"):
        raise RequestError(f"restart: no, always or on-failure, not {_short(restart)}")
    if restart == "no":  # a task: it stays loaded after it ends, with its exit status
        out.append("--property=RemainAfterExit=yes")
    else:  # a service instance: systemd restarts it on this host
        out += [f"--property=Restart={restart}", "--property=RestartSec=1"]
    if systemd >= EXIT_TYPE_CGROUP:
        out.append("--property=ExitType=cgroup")
    description = request.get("description", unit)
    if not isinstance(description, str) or CONTROL.search(description) or len(description) > 200:
        raise RequestError("description: must be one line of text, at most 200 characters")
    out.append(f"--description={description}")
    env = request.get("env")
    env = {} if env is None else env
    if not isinstance(env, dict):
        raise RequestError("env: must be an object of names to strings")
    for key, value in sorted(env.items()):
        problem = env_error(key, value)
        if problem:
            raise RequestError(f"env.{key}: {problem[1]}" if problem[0] else f"env: {problem[1]}")
        out.append(f"--setenv={key}={value}")
    cwd = request.get("cwd")
    if cwd is not None:
        problem = cwd_error(cwd)
        if problem:
            raise RequestError(f"cwd: {problem}")
        out.append(f"--working-directory={cwd}")
    sandbox = _sandbox(request.get("sandbox"), policy["sandbox_minimum"])
    out += _identity(request.get("user"), sandbox, policy, lookup_user or _lookup_user)
    for key, prop in (("no_new_privileges", "NoNewPrivileges"), ("private_tmp", "PrivateTmp")):
        if sandbox[key]:
            out.append(f"--property={prop}=yes")
    if sandbox["protect_system"] != "no":
        out.append(f"--property=ProtectSystem={sandbox['protect_system']}")
    limits = _task_limits(request, policy)
    out += [f"--property=CPUQuota={limits['cpus'] / 10:g}%",
            f"--property=MemoryMax={limits['mem']}", "--property=MemorySwapMax=0",
            f"--property=TasksMax={limits['tasks_max']}", "--property=OOMPolicy=stop"]  # fmt: skip
    out += pinned_limits(request, limits)
    runtime = _int(request, "runtime_sec", 1, 10**8)
    if runtime is not None:
        out.append(f"--property=RuntimeMaxSec={runtime}")
    grace = _int(request, "grace_sec", 0, 3600, default=10)
    out.append(f"--property=TimeoutStopSec={grace}")
    _capacity_field(request.get("capacity"))
    out = [*out, "--", *(_escape(arg) for arg in argv)]
    size = command_bytes(out)
    if size > MAX_COMMAND_BYTES:
        raise RequestError(
            f"argv: with env the command line is {size} bytes, more than the "
            f"{MAX_COMMAND_BYTES} a host takes"
        )
    return out, limits


def run_argv(request: dict, policy: dict | None = None, lookup_user=None) -> list[str]:
    """The systemd-run argv alone (see plan_launch)."""
    return plan_launch(request, policy, lookup_user)[0]


def _sandbox(given: object, minimum: dict) -> dict:
    """The request's sandbox: each option as given (never below the minimum), else the
    stricter of the default and the minimum."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise RequestError(f"sandbox: must be an object with fields {list(SANDBOX_KEYS)}")
    unknown = sorted(set(given) - set(SANDBOX_KEYS))
    if unknown:
        raise RequestError(
            f"sandbox.{_label(unknown[0])}: unknown field (fields are {list(SANDBOX_KEYS)})"
        )
    out = {}
    for key in SANDBOX_KEYS:
        floor = minimum[key]
        if key not in given:
            out[key] = _stricter(key, SANDBOX_DEFAULTS[key], floor)
            continue
        value = _sandbox_value(key, given[key], "sandbox")
        if _stricter(key, value, floor) != value:
            raise RequestError(
                f"sandbox.{key}: {_short(given[key])} is looser than this host's minimum "
                f"({_short(floor)}); a request may only tighten the sandbox"
            )
        out[key] = value
    return out


def _identity(user: object, sandbox: dict, policy: dict, lookup_user) -> list[str]:
    """Who the task runs as: a DynamicUser, an allow-listed user, or root where allowed."""
    if user is None:
        if sandbox["dynamic_user"]:
            return ["--property=DynamicUser=yes"]
        if not policy["allow_root"]:
            raise RequestError(
                "sandbox.dynamic_user: false without a user runs the task as root, which "
                "this host's policy does not allow"
            )
        return []
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        raise RequestError(f"user: {_short(user)} is not a user name")
    if policy["sandbox_minimum"]["dynamic_user"]:
        raise RequestError(f"user: this host runs tasks only as a DynamicUser, not {user!r}")
    found = lookup_user(user)
    if found is None:
        raise RequestError(f"user: {user!r} does not exist on this host")
    if 0 in found:
        if not policy["allow_root"]:
            raise RequestError(f"user: {user!r} is root, which this host's policy does not allow")
    elif user not in policy["task_users"]:
        allowed = ", ".join(policy["task_users"]) or "none"
        raise RequestError(
            f"user: {user!r} is not allowed on this host (a DynamicUser, or one of: {allowed})"
        )
    return [f"--uid={user}"]


def _task_limits(request: dict, policy: dict) -> dict[str, int]:
    defaults = policy["default_limits"]
    cpus = _int(request, "cpus", 1, 10**6)
    mem = _int(request, "mem", 1 << 20, 1 << 50)
    tasks = _int(request, "tasks_max", 1, 10**6)
    if tasks is not None and tasks > policy["max_tasks"]:
        raise RequestError(
            f"tasks_max: {tasks} is more than this host allows ({policy['max_tasks']})"
        )
    return {
        "cpus": defaults["cpus"] if cpus is None else cpus,
        "mem": defaults["mem"] if mem is None else mem,
        "tasks_max": defaults["tasks_max"] if tasks is None else tasks,
    }


def _capacity_field(capacity: object) -> dict[str, int]:
    """The controller's idea of the host's capacity (old controllers send it): it can only
    lower what this host admits against."""
    if capacity is None:
        return {}
    if not isinstance(capacity, dict):
        raise RequestError("capacity: must be an object with cpus and mem")
    _fields(capacity, ("cpus", "mem"))
    out = {}
    for key in ("cpus", "mem"):
        value = capacity.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 60:
            raise RequestError(f"capacity.{key}: {_short(value)} is not a whole number")
        out[key] = value
    return out


def admission_error(
    units: list[dict], need: dict[str, int], capacity: dict[str, int]
) -> str | None:
    """Why the task would take the host past `capacity`, given the meso units on it (pure).

    Units that still hold resources (staging, running: see HOLDS_RESOURCES) count with their
    limits; ended ones do not.
    """
    for key, field in (("cpus", "millicpus"), ("mem", "memory_max")):
        held = sum((u.get(field) or 0) for u in units if u.get("state") in HOLDS_RESOURCES)
        if held + need[key] > capacity[key]:
            return (
                f"admission: {key} would exceed the host's capacity "
                f"({held} held + {need[key]} > {capacity[key]})"
            )
    return None


# -- the host: reading facts, running systemd ----------------------------------------------------


def _run(argv: list[str]) -> str:
    import subprocess

    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return done.stdout


def _systemd_run(argv: list[str]) -> subprocess.CompletedProcess:
    import subprocess

    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except OSError as exc:
        if exc.errno == errno.E2BIG:
            raise RequestError("argv: the command line is too long for this host") from None
        raise


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _lookup_user(name: str) -> tuple[int, int] | None:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


_SYSTEMD: list[int] = []


def system_state() -> str:
    """systemd's own state: running, degraded, starting, stopping, ... ("offline" when its bus
    cannot be reached, as while the host shuts down)."""
    state = _run(["systemctl", "is-system-running"]).strip()
    return state if state.isalpha() else "offline"


def systemd_version(bus: SystemdBus | None = None) -> int:
    """systemd's version (read once): over `bus` if given and it answers, else systemctl's."""
    if not _SYSTEMD:
        _SYSTEMD.append(_bus_systemd_version(bus) or _systemctl_version())
    return _SYSTEMD[0]


def _systemctl_version() -> int:
    return parse_systemd_version(_run(["systemctl", "--version"]))


def cgroup_mode() -> str:
    """This host's cgroup mode (read once: it does not change while the host runs)."""
    if not _CGROUP_MODE:
        _CGROUP_MODE.append(parse_cgroup_mode(_read("/proc/mounts")))
    return _CGROUP_MODE[0]


_CGROUP_MODE: list[str] = []


def cgroup_populated(control_group: str) -> bool | None:
    """Whether processes are left in a unit's cgroup (v2, hybrid or v1), None if unknown."""
    if not control_group.startswith("/") or ".." in control_group.split("/"):
        return None
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        try:
            return parse_populated(_read(f"{root}{control_group}/cgroup.events"))
        except OSError:
            continue
    try:
        return bool(_read(f"/sys/fs/cgroup/systemd{control_group}/cgroup.procs").strip())
    except OSError:
        return None


def _state(props: dict[str, str]) -> dict:
    """A shown unit's task state; a unit whose main process exited is still running while
    processes are left in its cgroup (only without ExitType=cgroup, on old systemd)."""
    state = task_state(props)
    exited = props.get("SubState") == "exited" and props.get("ActiveState") == "active"
    if exited and cgroup_populated(props.get("ControlGroup", "")):
        state["state"] = "running"
    # whoever launched it says so in its description (a controller marks its own units)
    state["description"] = props.get("Description", "")[:300]
    return state


def _show(units: list[str], extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """`systemctl show` of these units (timestamps in `extra` as Unix seconds)."""
    return parse_show(_run(["systemctl", "show", "--no-pager", "--timestamp=unix", "-p",
                            ",".join(UNIT_PROPERTIES + extra), *units]))  # fmt: skip


def measure(memory: dict[str, int] | None = None) -> dict[str, int]:
    """This host's CPUs (millicpus) and memory (bytes), as the kernel reports them (`memory`:
    /proc/meminfo parsed already)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    memory = memory if memory is not None else parse_meminfo(_read("/proc/meminfo"))
    return {"cpus": cpus * 1000, "mem": memory.get("MemTotal", 0)}


def load_policy(path: str | None = None) -> tuple[dict, str]:
    """The host's policy (its file, or the built-in defaults if there is none) and where it
    came from. A file that is not root's alone or does not parse is refused (PolicyError):
    nothing launches until it is fixed."""
    path = path or POLICY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return parse_policy({}), "built-in defaults"
    except OSError as exc:
        raise PolicyError(f"policy: {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        parent = os.stat(os.path.dirname(path))
        for what, st in (("file", info), ("directory", parent)):
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise PolicyError(
                    f"policy: {path}: the {what} must be owned by root and writable by root only"
                )
        if not stat.S_ISREG(info.st_mode):
            raise PolicyError(f"policy: {path}: not a regular file")
        data = os.read(fd, MAX_POLICY_BYTES + 1)
    finally:
        os.close(fd)
    return parse_policy_bytes(data, path), path


def parse_policy_bytes(data: bytes, path: str) -> dict:
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy: {path}: more than {MAX_POLICY_BYTES} bytes")
    try:
        parsed = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constant)  # fmt: skip
        check_shape(parsed, "policy")
        return parse_policy(parsed)
    except RecursionError:
        raise PolicyError(f"policy: {path}: nested too deep") from None
    except RequestError as exc:
        raise PolicyError(f"policy: {path}: {exc}") from None
    except ValueError as exc:  # not UTF-8, not JSON
        raise PolicyError(f"policy: {path}: not JSON ({str(exc).splitlines()[0][:100]})") from None


class Session:
    """One caller: the host's policy, tightened by what this connection sent (`policy`)."""

    def __init__(self, systemd_bus: bool = False) -> None:
        self.layers: list[dict] = []
        self.watched: dict = {}  # the last sample's unit listing (see watched_listing)
        self.use_bus = systemd_bus  # launch over systemd's private socket where it can
        self.bus: SystemdBus | None = None
        self.bus_failed = -BUS_RETRY
        self.boot: str | None = None  # boot_identity(), once (see kept_boot)
        self.encoded: tuple = ()  # the constant part of the last sample's answer, encoded

    def systemd_bus(self) -> SystemdBus | None:
        """This session's connection to systemd's private socket (opened again once it broke),
        or None where there is none to be had: not root, no socket, refused (tried again after
        BUS_RETRY seconds); then launches run systemd-run."""
        if self.bus is not None and self.bus.broken:
            self.drop_bus()
        now = time.monotonic()
        if self.bus is None and self.use_bus and now - self.bus_failed >= BUS_RETRY:
            if os.geteuid() != 0:  # the private socket is root's alone
                self.use_bus = False
                return None
            try:
                self.bus = SystemdBus()
            except (OSError, ValueError, DBusError):
                self.bus_failed = now
        return self.bus

    def drop_bus(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    def policy(self) -> tuple[dict, str]:
        policy, source = load_policy()
        for layer in self.layers:
            policy = tighten(policy, layer)
        return policy, source + (" (tightened by this connection)" if self.layers else "")


def status(request: dict, session: Session | None = None, runs: bool = True) -> dict:
    """The state of one task unit, cron timer or run."""
    _fields(request, ("unit",))
    unit = check_unit(request.get("unit"), runs=runs)
    bus = session.systemd_bus() if session is not None else None
    return unit_statuses([unit], bus)[unit] if bus else unit_statuses([unit])[unit]


def unit_statuses(units: list[str], bus: SystemdBus | None = None) -> dict[str, dict]:
    """status() of each of these (checked) unit names, from one `systemctl show` for them all
    (or over `bus` while it answers): a task's name shows its cron timer if one is loaded, else
    its service."""
    shown_as = {u: [f"{u}.timer", f"{u}.service"] if UNIT_NAME.fullmatch(u) else [f"{u}.service"]
                for u in units}  # fmt: skip
    names = [name for unit_names in shown_as.values() for name in unit_names]
    shown = bus_shown(bus, names) if bus is not None else None
    if shown is None:
        shown = parse_show(_run(["systemctl", "show", "--no-pager", "--timestamp=unix", "-p",
                                 ",".join(dict.fromkeys(UNIT_PROPERTIES + TIMER_PROPERTIES)),
                                 *names]))  # fmt: skip
    if len(shown) != len(names):  # systemd failed part way: no telling which block is whose
        if len(units) > 1:
            return {u: unit_statuses([u])[u] for u in units}
        shown = []
    out, at = {}, 0
    for unit, unit_names in shown_as.items():
        blocks, at = shown[at : at + len(unit_names)], at + len(unit_names)
        if len(blocks) == 2 and blocks[0].get("LoadState") == "loaded":
            out[unit] = timer_state(blocks[0])
        else:
            out[unit] = _state(blocks[-1] if blocks else {"Id": f"{unit}.service"})
    return out


def launch(request: dict, session: Session | None = None) -> dict:
    """Start the task unless its unit exists already (then report it: launching is idempotent).

    Under a host-wide lock, admission adds the request to what earlier launches were given
    (a ledger in /run) and, only if that would pass the host's capacity, rechecks against the
    units really holding resources; so two controllers racing for a host cannot overcommit it.
    The capacity is this host's own (policy, or measured, less the reserve); a `capacity` in
    the request can only lower it.
    """
    if "schedule" in request:
        return launch_timer(request, session)
    policy, _ = (session or Session()).policy()
    argv, limits = plan_launch(request, policy, systemd=systemd_version())
    unit = request["unit"]
    capacity = host_capacity(policy, request.get("capacity"))
    with ledger_lock():
        argv = pin_argv(unit, argv, request, policy)
        existing = _admit_and_run(unit, argv, limits, capacity, session)
        if existing is not None:
            return existing
        record_pins(unit, request)
    # systemd-run returns once the service has started: it runs (or already ran)
    return {"unit": f"{unit}.service", "state": "running", "exit_code": None, "signal": None,
            "reason": None, "restarts": 0, "existed": False, "limits": limits}  # fmt: skip


def host_capacity(policy: dict, asked: object) -> dict[str, int]:
    """What this host admits launches against (its policy's, or measured less the reserve); a
    capacity the request gives (`asked`) can only lower it."""
    capacity = node_capacity(policy, measure())
    for key, value in _capacity_field(asked).items():
        capacity[key] = min(capacity[key], value)
    return capacity


@contextlib.contextmanager
def ledger_lock() -> Iterator[None]:
    """The host-wide lock under which launches are admitted and leases written."""
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    with open(LEDGER + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _admit_and_run(
    unit: str,
    argv: list[str],
    limits: dict[str, int],
    capacity: dict[str, int],
    session: Session | None = None,
) -> dict | None:
    """Under the ledger's lock: admit the unit against `capacity` and start it (see
    _start_unit). None when it started; the unit's status when it exists already; RequestError
    when admission refuses or systemd refuses the unit."""
    ledger = _read_ledger()
    entry = {"unit": f"{unit}.service", "state": "running", "millicpus": limits["cpus"],
             "memory_max": limits["mem"]}  # fmt: skip
    if ledger is None or admission_error(ledger, limits, capacity):
        bus = session.systemd_bus() if session is not None else None
        held = held_units(bus) if bus is not None else held_units()
        ledger = [u for u in held if u["state"] in HOLDS_RESOURCES]
        error = admission_error(ledger, limits, capacity)
        if error:
            _write_ledger(ledger)
            current = status({"unit": unit}, runs=True)
            if current["state"] != "unknown":
                return {**current, "existed": True}
            raise RequestError(error)
    check_expires(EXPIRES.get())  # it may have waited for the ledger's lock past its deadline
    failed = _start_unit(argv, session)
    if failed is not None:
        current = status({"unit": unit}, runs=True)
        if current["state"] != "unknown":
            return {**current, "existed": True}
        via, why = failed
        system = system_state()
        if system not in ("running", "degraded"):  # the host, not the task: place it again
            raise RequestError(f"{NOT_STARTED}: the host is {system} ({via}: {why})")
        raise RequestError(f"{via} failed: {why}")
    _write_ledger([*ledger, entry])
    return None


def _start_unit(argv: list[str], session: Session | None) -> tuple[str, str] | None:
    """Start the unit of plan_launch's `argv`: over the session's connection to systemd where
    it has one and the argv translates (transient_properties), else by systemd-run. None once
    the service has started, else what failed and why (systemd's own message)."""
    planned = transient_properties(argv) if session is not None and session.use_bus else None
    bus = session.systemd_bus() if planned and session is not None else None
    if bus is not None and planned is not None:
        try:
            bus.start_unit(*planned)
            return None
        except DBusError as exc:
            if exc.name == JOB_FAILED:  # it exists, but did not start
                raise RequestError(f"systemd: {exc.message}") from None
            return "systemd", f"{exc.message} ({exc.name})"
        except (OSError, ValueError):  # the connection broke: systemd-run decides (to it, a
            session.drop_bus()  # unit that started meanwhile exists already)
    done = _systemd_run(argv)
    if done.returncode == 0:
        return None
    detail = (done.stderr or done.stdout).strip().splitlines()
    return "systemd-run", detail[-1] if detail else str(done.returncode)


def _read_ledger() -> list[dict] | None:
    """The ledger, or None if there is none or it is not ours (then units are counted)."""
    try:
        with open(LEDGER) as f:
            ledger = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(ledger, list) or not all(
        isinstance(u, dict) and u.get("state") in HOLDS_RESOURCES for u in ledger
    ):
        return None
    return ledger


def _write_ledger(units: list[dict]) -> None:
    keep = [{k: u.get(k) for k in ("unit", "state", "millicpus", "memory_max")} for u in units]
    with open(LEDGER + ".tmp", "w") as f:
        f.write(json.dumps(keep, separators=(",", ":")))  # one write (json.dump makes many)
    os.replace(LEDGER + ".tmp", LEDGER)


# -- D-Bus: starting a unit without systemd-run ---------------------------------------------------
#
# Every systemd-run costs the host an exec, libsystemd-shared's loading, a bus connection and its
# authentication. A warm node command instead keeps one connection to systemd's private socket
# (root only, peer to peer: no bus daemon, no Hello) and sends StartTransientUnit itself, with
# the very properties systemd-run sends for the same argv (transient_properties: plan_launch's
# argv stays the one truth that policy and tests reason about). What it does not know, and a
# socket it cannot use, leave the launch to systemd-run as before.
#
# The wire format, as much as that takes (D-Bus specification, "Message Protocol"): little-endian
# only, the types y n q b u i h t x d s o g a v, structs and dict entries. Values: int for the
# integers, bool for b, float for d, str for s o g, a list for an array (bytes for ay), a tuple
# for a struct or a dict entry, (signature, value) for v.

SYSTEMD_PRIVATE = "/run/systemd/private"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager"
JOB_FAILED = "meso.JobFailed"  # ours: systemd's job for the unit ended, but not "done"
BUS_RETRY = 5.0  # seconds before a session tries systemd's private socket again
PROPERTIES = "org.freedesktop.DBus.Properties"
MESO_UNIT_PATH = b"/org/freedesktop/systemd1/unit/meso_2d"  # "meso-", as systemd escapes it
UNIT_SIGNALS = ("UnitNew", "UnitRemoved")
METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
# header fields: PATH INTERFACE MEMBER ERROR_NAME REPLY_SERIAL DESTINATION SENDER SIGNATURE
F_PATH, F_INTERFACE, F_MEMBER, F_ERROR, F_REPLY, F_DESTINATION, F_SENDER, F_SIGNATURE = range(1, 9)
MAX_MESSAGE = 1 << 27  # the specification's limit
_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "u": 4, "i": 4, "h": 4, "s": 4, "o": 4,
          "a": 4, "t": 8, "x": 8, "d": 8, "(": 8, "{": 8}  # fmt: skip
_FIXED = {"y": "<B", "n": "<h", "q": "<H", "b": "<I", "u": "<I", "i": "<i", "h": "<I", "t": "<Q",
          "x": "<q", "d": "<d"}  # fmt: skip


class DBusError(Exception):
    """An error reply: its D-Bus error name and message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


@functools.lru_cache(maxsize=256)
def dbus_types(signature: str) -> tuple[str, ...]:
    """A signature's complete types: "a(sv)su" -> ("a(sv)", "s", "u") (ValueError if not)."""
    out, at = [], 0
    while at < len(signature):
        end = _type_end(signature, at)
        out.append(signature[at:end])
        at = end
    return tuple(out)


def _type_end(signature: str, at: int) -> int:
    code = signature[at : at + 1]
    if code == "a" and signature[at + 1 : at + 2] == "{":  # a dict entry: a key, a value
        end = _type_end(signature, _type_end(signature, at + 2))
        if signature[end : end + 1] != "}":
            raise ValueError(f"D-Bus signature {signature!r}: a dict entry is a key and a value")
        return end + 1
    if code == "a":
        return _type_end(signature, at + 1)
    if code == "(":
        at += 1
        while signature[at : at + 1] != ")":
            at = _type_end(signature, at)
        return at + 1
    if code and code in _ALIGN and code != "{":
        return at + 1
    raise ValueError(f"D-Bus signature {signature!r}: {code or 'its end'!r} is not supported")


def marshal(buf: bytearray, signature: str, values: list | tuple) -> None:
    """Append `values` of `signature` to `buf`, aligned from the start of `buf`."""
    types = dbus_types(signature)
    if len(types) != len(values):
        raise ValueError(f"D-Bus signature {signature!r}: {len(values)} values")
    for kind, value in zip(types, values, strict=True):
        try:
            _put(buf, kind, value)
        except struct.error as exc:  # a number out of its type's range
            raise ValueError(f"D-Bus value {value!r} of {kind!r}: {exc}") from None


def _put(buf: bytearray, kind: str, value: object) -> None:
    code = kind[0]
    buf.extend(bytes(-len(buf) % _ALIGN[code]))
    if code in _FIXED:
        buf += struct.pack(_FIXED[code], value)
    elif code in "so":
        data = value.encode()  # type: ignore[attr-defined]
        buf += struct.pack("<I", len(data)) + data + b"\0"
    elif code == "g":
        data = value.encode("ascii")  # type: ignore[attr-defined]
        buf += bytes([len(data)]) + data + b"\0"
    elif code == "v":
        inner, item = value  # type: ignore[misc]
        if len(dbus_types(inner)) != 1:
            raise ValueError(f"D-Bus variant: {inner!r} is not one complete type")
        _put(buf, "g", inner)
        _put(buf, inner, item)
    elif code == "a":
        at = len(buf)
        buf += bytes(4)
        buf.extend(bytes(-len(buf) % _ALIGN[kind[1]]))  # not counted in the length
        start = len(buf)
        for item in value:  # type: ignore[attr-defined]
            _put(buf, kind[1:], item)
        struct.pack_into("<I", buf, at, len(buf) - start)
    else:
        marshal(buf, kind[1:-1], value)  # type: ignore[arg-type]


def unmarshal(data: bytes, signature: str, at: int = 0) -> tuple[list, int]:
    """The values of `signature` in `data` from `at`, and where they end (ValueError if the
    data is not that)."""
    out = []
    try:
        for kind in dbus_types(signature):
            value, at = _get(data, kind, at)
            out.append(value)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"D-Bus data: {exc}") from None
    return out, at


def _get(data: bytes, kind: str, at: int) -> tuple[object, int]:
    code = kind[0]
    at += -at % _ALIGN[code]
    if code in _FIXED:
        (value,) = struct.unpack_from(_FIXED[code], data, at)
        return (bool(value) if code == "b" else value), at + struct.calcsize(_FIXED[code])
    if code in "sog":
        if code == "g":
            size, at = data[at], at + 1
        else:
            (size,), at = struct.unpack_from("<I", data, at), at + 4
        if data[at + size : at + size + 1] != b"\0":
            raise ValueError("D-Bus data: a string without its NUL")
        return data[at : at + size].decode(), at + size + 1
    if code == "v":
        inner, at = _get(data, "g", at)
        if len(dbus_types(inner)) != 1:  # type: ignore[arg-type]
            raise ValueError(f"D-Bus variant: {inner!r} is not one complete type")
        item, at = _get(data, inner, at)  # type: ignore[arg-type]
        return (inner, item), at
    if code == "a":
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        at += -at % _ALIGN[kind[1]]
        end, items = at + size, []
        if end > len(data):
            raise ValueError("D-Bus data: an array past the end")
        while at < end:
            item, at = _get(data, kind[1:], at)
            items.append(item)
        if at != end:
            raise ValueError("D-Bus data: an array's length")
        return (bytes(items) if kind == "ay" else items), at
    values, at = unmarshal(data, kind[1:-1], at)  # a struct or a dict entry
    return tuple(values), at


def dbus_message(kind: int, serial: int, fields: dict[int, tuple[str, object]],
                 signature: str = "", body: list | tuple = ()) -> bytes:  # fmt: skip
    """One message: its header (`fields` by code, each a (signature, value)) and body."""
    payload = bytearray()
    marshal(payload, signature, body)
    if signature:
        fields = {**fields, F_SIGNATURE: ("g", signature)}
    head = bytearray(b"l" + bytes([kind, 0, 1]) + struct.pack("<II", len(payload), serial))
    marshal(head, "a(yv)", [sorted(fields.items())])
    head.extend(bytes(-len(head) % 8))
    return bytes(head + payload)


class DBusMessage:
    """One message read: its type, serial, header and body, both raw and read only when asked
    (`fields`, `values`): signals of every kind come on systemd's private socket, and most are
    dropped unread."""

    def __init__(self, kind: int, serial: int, header: bytes, body: bytes) -> None:
        self.kind, self.serial, self.header, self.body = kind, serial, header, body
        self._fields: dict[int, object] | None = None

    @property
    def fields(self) -> dict[int, object]:
        """The header fields by code (F_PATH, F_MEMBER, ...)."""
        if self._fields is None:
            (fields,), _ = unmarshal(self.header, "a(yv)", 12)
            self._fields = {code: value for code, (_, value) in fields}
        return self._fields

    def values(self) -> list:
        return unmarshal(self.body, str(self.fields.get(F_SIGNATURE, "")))[0]


def read_message(buf: bytearray) -> DBusMessage | None:
    """Take the first whole message off `buf`, or None while it is not all there yet."""
    if len(buf) < 16:
        return None
    if buf[0:1] != b"l" or buf[3] != 1:
        raise ValueError("D-Bus: not a little-endian version 1 message")
    size, serial, fields_size = struct.unpack_from("<III", buf, 4)
    body_at = 16 + fields_size + (-(16 + fields_size) % 8)
    if body_at + size > MAX_MESSAGE:
        raise ValueError("D-Bus: a message over the size limit")
    if len(buf) < body_at + size:
        return None
    message = DBusMessage(buf[1], serial, bytes(buf[: 16 + fields_size]),
                          bytes(buf[body_at : body_at + size]))  # fmt: skip
    del buf[: body_at + size]
    return message


def _greet(sock, timeout: float) -> int:
    """Ping systemd on a connection just begun until it answers; the last serial used.

    systemd 252 leaves a message that came in the same read as the BEGIN unread until more
    data comes (checked on the lab: a call sent right after BEGIN went unanswered), so it is
    pinged again, more slowly each time, until it answers. The answers are dropped later as
    replies to no call."""
    import select

    fields = {
        F_PATH: ("o", SYSTEMD_PATH),
        F_INTERFACE: ("s", "org.freedesktop.DBus.Peer"),
        F_MEMBER: ("s", "Ping"),
        F_DESTINATION: ("s", "org.freedesktop.systemd1"),
    }
    deadline, wait, serial = time.monotonic() + timeout, 0.01, 0
    while True:
        serial += 1
        sock.sendall(dbus_message(METHOD_CALL, serial, fields))
        left = deadline - time.monotonic()
        if select.select([sock], [], [], max(0.0, min(wait, left)))[0]:
            return serial
        if left <= wait:
            raise TimeoutError("systemd did not answer on its private socket")
        wait = min(wait * 2, 1.0)


class SystemdBus:
    """One connection to systemd's private socket, kept by a warm node command.

    Signals come on it unasked (systemd sends every signal to every private connection), so a
    thread reads and drops them while no call is made, and systemd never queues them for us.
    """

    def __init__(self, path: str | None = None, timeout: float = TIMEOUT,
                 drain: bool = True) -> None:  # fmt: skip
        """`drain=False`: no thread reads the signals; the owner reads them (`watch`)."""
        import select
        import socket
        import threading

        self._select = select.select
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(path or SYSTEMD_PRIVATE)
            uid = str(os.geteuid()).encode().hex()
            sock.sendall(f"\0AUTH EXTERNAL {uid}\r\n".encode())
            said = b""
            while not said.endswith(b"\r\n") and len(said) < 512:
                got = sock.recv(512)
                if not got:
                    raise ConnectionError("systemd closed the connection while authenticating")
                said += got
            if not said.startswith(b"OK "):
                raise ConnectionError(f"systemd refused the authentication: {said[:80]!r}")
            sock.sendall(b"BEGIN\r\n")
            serial = _greet(sock, timeout)
        except BaseException:
            sock.close()
            raise
        self.sock, self.buffer, self.serial, self.broken = sock, bytearray(), serial, False
        # what the signals told of meso units since bus_listing last looked (see there), and
        # what it read of each unit: object path -> (states, properties asked, properties)
        self.changed: set[str] = set()
        self.reloaded = False
        self.units: dict[str, tuple[tuple, frozenset[str], dict[str, str]]] = {}
        # no Subscribe: systemd sends every signal to every private connection unasked (and
        # systemd 252 left Subscribe there unanswered in the lab)
        self.lock = threading.RLock()  # start_unit holds it across its call
        if drain:
            threading.Thread(target=self._drain, daemon=True).start()

    def close(self) -> None:
        import socket

        self.broken = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the draining thread
        self.sock.close()

    def call(self, member: str, signature: str = "", body: list | tuple = (),
             jobs: dict[str, str] | None = None, path: str = SYSTEMD_PATH,
             interface: str = SYSTEMD_MANAGER) -> list:  # fmt: skip
        """Call a method (the Manager's, unless `path` and `interface` say otherwise) and return
        its reply's values (DBusError for an error reply); JobRemoved signals read meanwhile go
        into `jobs` (job path -> result)."""
        return self.reply(member, signature, body, jobs, path, interface).values()

    def reply(self, member: str, signature: str = "", body: list | tuple = (),
              jobs: dict[str, str] | None = None, path: str = SYSTEMD_PATH,
              interface: str = SYSTEMD_MANAGER) -> DBusMessage:  # fmt: skip
        """call()'s reply as it came, its body not read yet (DBusError for an error reply)."""
        fields = {
            F_PATH: ("o", path),
            F_INTERFACE: ("s", interface),
            F_MEMBER: ("s", member),
            F_DESTINATION: ("s", "org.freedesktop.systemd1"),
        }
        with self.lock:
            serial = self.serial = self.serial % 0xFFFFFFFF + 1
            data = dbus_message(METHOD_CALL, serial, fields, signature, body)  # ValueError: unsent
            try:
                self.sock.sendall(data)
                while True:
                    message = self._next(jobs)
                    reply = message.kind in (METHOD_RETURN, ERROR)
                    if reply and message.fields.get(F_REPLY) == serial:
                        break
            except (OSError, ValueError):  # where the stream stands is not known any more
                self.broken = True
                raise
        if message.kind == ERROR:
            values = message.values()
            text = values[0] if values and isinstance(values[0], str) else ""
            raise DBusError(str(message.fields.get(F_ERROR, "")), text)
        return message

    def start_unit(self, name: str, properties: list[tuple[str, tuple[str, object]]]) -> None:
        """StartTransientUnit(name, "fail", properties), then wait for its job as systemd-run
        does: its result must be "done" (DBusError naming it otherwise)."""
        jobs: dict[str, str] = {}
        with self.lock:  # nothing drains while the job's end is awaited
            (job,) = self.call("StartTransientUnit", "ssa(sv)a(sa(sv))",
                               [name, "fail", properties, []], jobs)  # fmt: skip
            try:
                while job not in jobs:
                    self._next(jobs)
            except (OSError, ValueError):
                self.broken = True
                raise
        if jobs[job] != "done":
            raise DBusError(JOB_FAILED,
                            f"Job for {name} ended with result '{jobs[job]}'")  # fmt: skip

    def _next(self, jobs: dict[str, str] | None) -> DBusMessage:
        """The next message (under the lock); a JobRemoved signal is noted in `jobs`."""
        while True:
            message = read_message(self.buffer)
            if message is None:
                self._receive(self.sock.recv(65536))
                continue
            if message.kind == SIGNAL:
                self._note(message)
            is_job_end = message.kind == SIGNAL and b"JobRemoved" in message.header
            if is_job_end and jobs is not None and message.fields.get(F_MEMBER) == "JobRemoved":
                _, job, _, result = message.values()  # (id u, job o, unit s, result s)
                jobs[job] = result
            return message

    def changes(self) -> bool:
        """Whether a signal told of a change to a meso unit (or a reload) since bus_listing
        last looked, reading what has come without waiting for more (a broken connection:
        True, it cannot tell)."""
        with self.lock:
            try:
                while not self.broken and self._select([self.sock], [], [], 0)[0]:
                    self._receive(self.sock.recv(65536))
                while (message := read_message(self.buffer)) is not None:
                    if message.kind == SIGNAL:  # no call is waiting: anything else is dropped
                        self._note(message)
            except (OSError, ValueError):
                self.broken = True
            return self.broken or self.reloaded or bool(self.changed)

    def _note(self, signal: DBusMessage) -> None:
        """Under the lock: the meso unit a signal is about goes into `changed` (a reload: all
        of them); others are dropped unread."""
        at = signal.header.find(MESO_UNIT_PATH)
        if at >= 0:  # PropertiesChanged of a meso unit: its path, the one field that holds it
            end = signal.header.find(b"\0", at)  # strings end in a NUL
            path = signal.header[at : end if end > 0 else None]
            self.changed.add(path.decode("utf-8", "replace"))
        elif MESO_UNIT_PATH in signal.body and signal.fields.get(F_MEMBER) in UNIT_SIGNALS:
            self.changed.add(str(signal.values()[1]))  # UnitNew, UnitRemoved: (id s, unit o)
        elif b"Reloading" in signal.header and signal.fields.get(F_MEMBER) == "Reloading":
            self.reloaded = True

    def _receive(self, data: bytes) -> None:
        if not data:
            self.broken = True
            raise ConnectionError("systemd closed the D-Bus connection")
        self.buffer += data

    def _drain(self) -> None:
        """Read and drop what comes while no call is made, until the connection ends."""
        while not self.broken:
            try:
                self._select([self.sock], [], [])
                with self.lock:
                    if self.broken:
                        return
                    if self._select([self.sock], [], [], 0)[0]:  # a call may have read it
                        self._receive(self.sock.recv(65536))
                    while (message := read_message(self.buffer)) is not None:
                        if message.kind == SIGNAL:
                            self._note(message)
            except (OSError, ValueError):
                self.broken = True
                return


# StartTransientUnit's properties from systemd-run's options (src/run/run.c, and
# bus_append_unit_property_assignment in src/shared/bus-unit-util.c for --property=), for the
# options and properties plan_launch and pin_argv write; None for anything else.
_BOOLEANS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
_BOOLEAN_PROPERTIES = ("RemainAfterExit", "NoNewPrivileges", "PrivateTmp", "DynamicUser")
_STRING_PROPERTIES = ("Restart", "ExitType", "ProtectSystem", "OOMPolicy", "DevicePolicy",
                      "User", "Group")  # fmt: skip
_SECONDS_PROPERTIES = ("RestartSec", "RuntimeMaxSec", "TimeoutStopSec")  # sent as ...USec
_NUMBER_PROPERTIES = ("MemoryMax", "MemorySwapMax", "MemoryHigh", "TasksMax", "IOWeight")
_CPU_SET_PROPERTIES = ("AllowedCPUs", "AllowedMemoryNodes")
_IDENTITY = {"--uid": "User", "--gid": "Group", "--working-directory": "WorkingDirectory"}
DIGITS = Pattern(r"[0-9]{1,19}")
CPU_LIST = Pattern(r"[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*")


def unit_property(assignment: str) -> tuple[str, tuple[str, object]] | None:
    """One --property=NAME=VALUE as systemd-run sends it, or None if it is not one of these."""
    name, _, value = assignment.partition("=")
    if name in _BOOLEAN_PROPERTIES and value in _BOOLEANS:
        return name, ("b", _BOOLEANS[value])
    if name in _STRING_PROPERTIES and value and not CONTROL.search(value):
        return name, ("s", value)
    if name in _SECONDS_PROPERTIES and DIGITS.fullmatch(value) and int(value) < 1 << 44:
        return name[:-3] + "USec", ("t", int(value) * 1_000_000)
    if name in _NUMBER_PROPERTIES and DIGITS.fullmatch(value) and int(value) < 1 << 64:
        return name, ("t", int(value))
    if name == "CPUQuota" and re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,2})?%", value):
        permyriad = int(Decimal(value[:-1]) * 100)  # two decimals at most, as systemd parses
        return ("CPUQuotaPerSecUSec", ("t", permyriad * 100)) if permyriad else None
    if name in _CPU_SET_PROPERTIES and CPU_LIST.fullmatch(value):
        spans = [[int(n) for n in part.split("-")] for part in value.split(",")]
        if any(span[0] > span[-1] for span in spans):
            return None
        cores = sorted({c for span in spans for c in range(span[0], span[-1] + 1)})
        mask = bytearray((cores[-1] // 64 + 1) * 8)  # systemd's CPU_ALLOC_SIZE: whole longs
        for core in cores:
            mask[core // 8] |= 1 << core % 8
        return name, ("ay", bytes(mask))
    if name == "DeviceAllow" and value:
        path, _, access = value.partition(" ")
        return name, ("a(ss)", [(path, access)])
    return None


def find_executable(name: str) -> str | None:
    """The program systemd-run would run for `name`: it looks it up itself, as this does, in
    its $PATH (an executable file; None if there is none, or `name` is a relative path)."""
    if "/" in name:
        found = [name] if name.startswith("/") else []
    else:
        dirs = os.environ.get("PATH", "").split(":")
        found = [f"{d.rstrip('/')}/{name}" for d in dirs if d.startswith("/")]
    return next((p for p in found if os.path.isfile(p) and os.access(p, os.X_OK)), None)


def transient_properties(
    argv: list[str], executable=find_executable
) -> tuple[str, list[tuple[str, tuple[str, object]]]] | None:
    """The unit and the StartTransientUnit properties systemd-run would send for this argv (one
    plan_launch wrote), in its order, the program found by `executable` as systemd-run finds it;
    None for anything this does not know (then systemd-run runs: no type is ever guessed)."""
    if argv[:1] != ["systemd-run"] or "--" not in argv:
        return None
    split = argv.index("--")
    command, unit, description = argv[split + 1 :], None, None
    properties: list[tuple[str, tuple[str, object]]] = []
    identity: dict[str, str] = {}
    env: dict[str, str] = {}  # --setenv replaces an earlier one of its name, in its place
    for arg in argv[1:split]:
        option, eq, value = arg.partition("=")
        if arg == "--quiet":
            continue
        if not eq:
            return None
        if option == "--unit":
            unit = value
        elif option == "--description":
            description = value
        elif option == "--property":
            prop = unit_property(value)
            if prop is None:
                return None
            properties.append(prop)
        elif option == "--setenv" and "=" in value:
            key, _, val = value.partition("=")
            env[key] = val
        elif option in _IDENTITY:
            identity[_IDENTITY[option]] = value
        else:
            return None
    cwd = identity.get("WorkingDirectory")
    if cwd is not None and (os.path.normpath(cwd) != cwd or not cwd.startswith("/")
                            or cwd.startswith("//")):  # fmt: skip
        return None  # systemd-run would make it absolute and simple first
    if unit is None or not (UNIT_NAME.fullmatch(unit) or RUN_NAME.fullmatch(unit)):
        return None
    program = executable(command[0]) if description is not None and command else None
    if program is None:  # systemd-run says why
        return None
    command = [program, *command[1:]]
    out: list[tuple[str, tuple[str, object]]] = [("Description", ("s", description)), *properties]
    out += [(k, ("s", identity[k])) for k in ("User", "Group", "WorkingDirectory") if k in identity]
    if env:
        out.append(("Environment", ("as", [f"{k}={v}" for k, v in env.items()])))
    out.append(("ExecStart", ("a(sasb)", [(command[0], command, False)])))
    return f"{unit}.service", out


# -- cron jobs: a transient timer per task instance, fired by the host's own systemd -----------
#
# launch with a "schedule" makes `meso-X.timer` (OnCalendar=, to the millisecond, never
# persistent: the controller decides catch-up) and `meso-X.service`, which runs this program's
# `fire X` as root. A firing is checked here like any launch (the host's policy tightened as
# the connection that made the timer asked, the same sandbox and limits, admission against the
# host's capacity) and then runs as its own transient unit `meso-X-r<SCHEDULED>` (the name is
# the idempotency key: one scheduled second runs once on a host). Each firing, started or
# skipped with its reason, is one JSON line in RUNS_DIR/X.jsonl (kept over reboots), which
# `list` and `sample` report so the controller collects runs it missed while away.
#
# No two hosts fire one job: a timer fires only while its lease holds (the controller renews
# the leases of the timers it means to be where they are with every sample, see `sample`), and
# the controller places a timer elsewhere only after its host has been silent for longer than
# the lease. A host cut off keeps firing for `lease_sec`, then skips (and says why).

TIMER_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Description",
                    "NextElapseUSecRealtime", "LastTriggerUSec")  # fmt: skip
CONCURRENCY = ("forbid", "allow", "replace")


def _unix(value: str | None) -> float | None:
    """A timestamp from `systemctl show`: @SECONDS (--timestamp=unix), raw microseconds, or
    "Thu 2026-11-26 12:15:00 UTC" (timers' own times ignore --timestamp: shown with TZ=UTC)."""
    value = (value or "").strip()
    if value.startswith("@") and value[1:].replace(".", "", 1).isdigit():
        return float(value[1:])
    if value.isdigit() and int(value) > 0:
        return int(value) / 1e6
    shown = re.fullmatch(r"\w{3} (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC", value)
    if shown:
        import calendar  # here alone: its import (locale) costs every start 2 ms

        return float(calendar.timegm(time.strptime(shown.group(1), "%Y-%m-%d %H:%M:%S")))
    return None


def timer_state(props: dict[str, str]) -> dict:
    """A cron timer's `systemctl show` properties as a task state (running while it waits to
    fire), with its next and last fire times (Unix seconds)."""
    loaded = props.get("LoadState") == "loaded"
    active = props.get("ActiveState", "") in ("active", "activating", "reloading")
    state = "running" if loaded and active else ("finished" if loaded else "unknown")
    return {"unit": props.get("Id", ""), "kind": "timer", "state": state, "exit_code": None,
            "signal": None, "reason": None, "restarts": 0,
            "next": _unix(props.get("NextElapseUSecRealtime")),
            "last": _unix(props.get("LastTriggerUSec")),
            "description": props.get("Description", "")[:300]}  # fmt: skip


def _show_timers(units: list[str]) -> list[dict[str, str]]:
    return parse_show(_run(["systemctl", "show", "--no-pager", "--timestamp=unix", "-p",
                            ",".join(TIMER_PROPERTIES), *units]))  # fmt: skip


def _after(given: object) -> dict[str, int]:
    if given is None:
        return {}
    if not isinstance(given, dict) or len(given) > 100_000:
        raise RequestError("after: must be an object of timer units to record numbers")
    for unit, seq in given.items():
        check_unit(unit)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 1 << 62:
            raise RequestError(f"after.{unit}: {_short(seq)} is not a record number")
    return given


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _lease_file(owner: str) -> str:
    return f"{STATE_DIR}/leases-{owner}.json"


def renew_leases(given: object) -> None:
    """The caller (`owner`) holds these timers here as of now; its other leases lapse."""
    if not isinstance(given, dict):
        raise RequestError("leases: must be an object with owner and units")
    _fields(given, ("owner", "units"))
    owner, units = given.get("owner"), given.get("units")
    if not isinstance(owner, str) or not OWNER.fullmatch(owner):
        raise RequestError("leases.owner: must be a state's identity (hex digits)")
    if not isinstance(units, list) or len(units) > 100_000:
        raise RequestError("leases.units: must be a list of timer units")
    now = _boottime()
    renewed = {check_unit(u): now for u in units}
    with ledger_lock():
        given = _leases(owner).get("launched")
        launched = {u: t for u, t in (given if isinstance(given, dict) else {}).items()
                    if isinstance(t, int | float) and now - t < 86400}  # fmt: skip
        _write_json(_lease_file(owner), {"renewed": renewed, "launched": launched})


def _leases(owner: str) -> dict:
    """{"renewed": {timer: boottime}, "launched": {timer: boottime}}: a sample renews the
    first (replacing it: the caller's timers are all it lists); a launch adds to the second, so
    a sample asked before a launch and answered after it cannot take the new timer's lease."""
    try:
        with open(_lease_file(owner)) as f:
            leases = json.load(f)
    except (OSError, ValueError):
        return {}
    return leases if isinstance(leases, dict) else {}


def lease_age(owner: str, unit: str) -> float | None:
    """Seconds since this timer's lease was last renewed (or the timer made); None if none."""
    leases = _leases(owner)
    times = []
    for kind in ("renewed", "launched"):
        value = leases.get(kind, {}).get(unit) if isinstance(leases.get(kind), dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            times.append(float(value))
    return _boottime() - max(times) if times else None


def _write_json(path: str, data: object) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def own_program() -> str:
    """A root-owned copy of this program for timers to run: the installed file, or (streamed
    to python3) its source written once to /run."""
    source = globals().get("__nodecmd_source__")
    if isinstance(source, bytes):
        path = f"{STATE_DIR}/nodecmd-{hashlib.sha256(source).hexdigest()[:16]}.py"
        if not os.path.exists(path):
            os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(source)
            os.replace(tmp, path)
        return path
    return os.path.realpath(__file__)


def plan_timer(
    request: dict,
    policy: dict,
    program: str,
    python: str = "/usr/bin/python3",
    lookup_user=None,
    systemd: int = 252,
) -> tuple[list[str], dict, dict[str, int]]:
    """The systemd-run argv of a cron job's timer, what each firing launches (the launch
    request, checked now under `policy` as any launch is), and its limits (pure but for the
    user lookup)."""
    _fields(request, (*LAUNCH_KEYS, *TIMER_KEYS))
    unit = check_unit(request.get("unit"))
    calendars = request.get("schedule")
    if (
        not isinstance(calendars, list)
        or not 1 <= len(calendars) <= 8
        or not all(isinstance(c, str) and 0 < len(c) <= 300 for c in calendars)
        or any(CONTROL.search(c) for c in calendars)
    ):
        raise RequestError("schedule: must be a list of 1 to 8 calendar expressions (one line)")
    concurrency = request.get("concurrency", "forbid")
    if concurrency not in CONCURRENCY:
        raise RequestError(f"concurrency: forbid, allow or replace, not {_short(concurrency)}")
    lease = _int(request, "lease_sec", 1, 10**8, required=True)
    owner = request.get("owner")
    if not isinstance(owner, str) or not OWNER.fullmatch(owner):
        raise RequestError("owner: must be a state's identity (hex digits)")
    if request.get("restart", "no") != "no":
        raise RequestError("restart: the runs of a cron job are not restarted")
    run = {k: v for k, v in request.items() if k in LAUNCH_KEYS}
    _, limits = plan_launch({**run, "unit": f"{unit}-r0"}, policy, lookup_user, systemd, run=True)
    argv = ["systemd-run", f"--unit={unit}", "--quiet", f"--on-calendar={calendars[0]}",
            *(f"--timer-property=OnCalendar={c}" for c in calendars[1:]),
            "--timer-property=AccuracySec=1ms", "--timer-property=RandomizedDelaySec=0",
            "--timer-property=Persistent=no",
            f"--description={run.get('description', unit)}",
            "--", python, program, "fire", unit]  # fmt: skip
    fire_spec = {"run": run, "concurrency": concurrency, "lease_sec": lease, "owner": owner}
    return argv, fire_spec, limits


def launch_timer(request: dict, session: Session | None = None) -> dict:
    """Make a cron job's timer (idempotent: an existing one is reported). Refused like a
    launch when the host would refuse its runs, or when one run could never fit here."""
    session = session or Session()
    policy, _ = session.policy()
    argv, fire_spec, limits = plan_timer(request, policy, own_program(),
                                         sys.executable or "/usr/bin/python3",
                                         systemd=systemd_version())  # fmt: skip
    unit = request["unit"]
    current = status({"unit": unit})
    if current.get("kind") == "timer":
        return {**current, "existed": True}
    capacity = host_capacity(policy, request.get("capacity"))
    error = admission_error([], limits, capacity)
    if error:
        raise RequestError(error)
    _write_json(f"{TIMERS_DIR}/{unit}.json", {**fire_spec, "layers": session.layers})
    with ledger_lock():  # leases are also written by samples
        leases = _leases(fire_spec["owner"])
        launched = leases.get("launched") if isinstance(leases.get("launched"), dict) else {}
        _write_json(_lease_file(fire_spec["owner"]),
                    {**leases, "launched": {**launched, unit: _boottime()}})  # fmt: skip
    done = _systemd_run(argv)
    if done.returncode != 0:
        current = status({"unit": unit})
        if current.get("kind") == "timer":
            return {**current, "existed": True}
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RequestError(f"systemd-run failed: {detail[-1] if detail else done.returncode}")
    return {**status({"unit": unit}), "existed": False, "limits": limits}


def stop_timer(unit: str, before: dict, runs: bool) -> dict:
    """Remove a cron job's timer (and a firing under way); stop its runs too if `runs`."""
    _run(["systemctl", "stop", f"{unit}.timer", f"{unit}.service"])
    _run(["systemctl", "reset-failed", f"{unit}.timer", f"{unit}.service"])
    if runs:
        with _timer_lock(unit):
            for run in _runs_of(unit):
                if run["state"] in HOLDS_RESOURCES:
                    name = run["unit"].removesuffix(".service")
                    _record(unit, {"run": name, "state": "killed",
                                   "reason": "stopped with its timer"})  # fmt: skip
                    _run(["systemctl", "stop", "--no-block", run["unit"]])
    for leftover in (f"{TIMERS_DIR}/{unit}.json", f"{TIMERS_DIR}/{unit}.lock"):
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    return {**before, "state": "killed"} if before["state"] in HOLDS_RESOURCES else before


RUN_TIMES = ("ExecMainStartTimestamp", "ExecMainExitTimestamp")


def run_state(props: dict[str, str]) -> dict:
    """A cron run's unit as a task state with its limits, and when it started and ended."""
    return {**_state(props), **unit_limits(props),
            "start": _unix(props.get("ExecMainStartTimestamp")),
            "end": _unix(props.get("ExecMainExitTimestamp"))}  # fmt: skip


def _runs_of(unit: str) -> list[dict]:
    """The loaded run units of one timer, with their states."""
    listed = _run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                   "--type=service", f"{unit}-*"])  # fmt: skip
    names = [w for w in (line.split()[0] for line in listed.splitlines() if line.strip())
             if RUN_NAME.fullmatch(w.removesuffix(".service"))
             and w.removesuffix(".service").rsplit("-", 1)[0] == unit]  # fmt: skip
    return [run_state(p) for p in _show(names, RUN_TIMES)] if names else []


def _records_path(unit: str) -> str:
    return f"{RUNS_DIR}/{unit}.jsonl"


def read_records(unit: str) -> list[dict]:
    """A timer's run records, oldest first (lines that do not parse are left out)."""
    try:
        with open(_records_path(unit)) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            out.append(record)
    return out


def _record(unit: str, record: dict) -> dict:
    """Append one record (numbered on from the last); keep the last MAX_RECORDS."""
    records = read_records(unit)
    record = {"seq": (records[-1]["seq"] if records else 0) + 1, "timer": unit, **record}
    os.makedirs(RUNS_DIR, mode=0o700, exist_ok=True)
    if len(records) >= 2 * MAX_RECORDS:
        lines = [json.dumps(r) for r in records[-MAX_RECORDS:]] + [json.dumps(record)]
        tmp = f"{_records_path(unit)}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, _records_path(unit))
    else:
        with open(_records_path(unit), "a") as f:
            f.write(json.dumps(record) + "\n")
    return record


def run_reports(
    loaded: list[dict], after: dict[str, int], timers: set[str] | None = None
) -> list[dict]:
    """The runs to tell of: every record past `after` (the last MAX_REPORTED per timer) and
    every run still loaded, each as its latest record with the loaded unit's state over it
    ("loaded": true); a run recorded as started whose unit is no longer there is "gone"."""
    units = {u["unit"].removesuffix(".service"): u for u in loaded}
    try:
        files = sorted(f[:-6] for f in os.listdir(RUNS_DIR) if f.endswith(".jsonl"))
    except OSError:
        files = []
    out: dict[str, dict] = {}
    for timer in files:
        if not UNIT_NAME.fullmatch(timer):
            continue
        if timers is not None and timer not in timers and _stale(_records_path(timer)):
            with contextlib.suppress(OSError):
                os.unlink(_records_path(timer))
            continue
        records = read_records(timer)
        latest: dict[str, dict] = {}
        for record in records:
            key = record.get("run") or f"seq{record['seq']}"
            latest[key] = {**latest.get(key, {}), **record}
        fresh = {r.get("run") or f"seq{r['seq']}" for r in records
                 if r["seq"] > after.get(timer, 0)}  # fmt: skip
        keys = [k for k in latest if k in fresh or k in units]
        for key in keys[-MAX_REPORTED:]:
            report = {**latest[key], "loaded": False}
            unit = units.get(key)
            if unit is None and report.get("state") == "started" and RUN_NAME.fullmatch(key):
                unit = status({"unit": key})  # it may have started since the units were listed
                unit = None if unit["state"] == "unknown" else unit
                report["state"] = "gone" if unit is None else report["state"]
            if unit is not None:
                report.update({k: unit.get(k) for k in ("state", "exit_code", "signal", "reason",
                                                         "millicpus", "memory_max", "start",
                                                         "end")})  # fmt: skip
                report["loaded"] = True
            out[key] = report
    return list(out.values())


def _stale(path: str) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > RECORDS_KEEP
    except OSError:
        return False


def fire(
    unit: str, kind: str = "schedule", scheduled: int | None = None, wait: bool = True
) -> dict:
    """One firing of a cron job's timer (what its service runs, as root), or a trigger.

    Skipped, with the reason recorded, when the timer's lease has lapsed (a scheduled firing
    only: a trigger is the controller's own word), when its runs would be refused, when a run
    is still going and the job says forbid, or when admission refuses it; replace stops the
    running one first (`wait`: until it is gone; a trigger only starts the stop, so that the
    connection it came on is never held up). Firings of one timer take turns."""
    check_unit(unit)
    try:
        with open(f"{TIMERS_DIR}/{unit}.json") as f:
            spec = json.load(f)
        run_request, concurrency = dict(spec["run"]), spec["concurrency"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RequestError(f"unit: {unit} is not a cron timer on this host") from None
    fired = time.time()
    if kind == "schedule":
        shown = _show_timers([f"{unit}.timer"])
        last = timer_state(shown[0])["last"] if shown else None
        scheduled = int(last if last is not None else fired)
        run = f"{unit}-r{scheduled}"
    elif scheduled is not None:  # a scheduled time no host ran: caught up, under its own name
        kind, run = "catch-up", f"{unit}-r{scheduled}"
    else:
        run = f"{unit}-t{int(fired * 1000)}"
    record = {"run": run, "kind": kind, "scheduled": scheduled, "fired": round(fired, 3)}
    with _timer_lock(unit):
        if kind == "schedule":
            age = lease_age(str(spec.get("owner")), unit)
            if age is None or age > float(spec.get("lease_sec", 0)):
                heard = "never" if age is None else f"{age:.0f} s ago"
                lease = spec.get("lease_sec")
                why = (f"lease lapsed: the controller last vouched for this timer here {heard} "
                       f"(lease {lease} s); another host may hold it now")  # fmt: skip
                return _record(unit, {**record, "state": "skipped", "reason": why})
        try:
            policy, _ = load_policy()
            for layer in spec.get("layers") or []:  # as parsed when the timer was made
                policy = tighten(policy, layer)
            argv, limits = plan_launch({**run_request, "unit": run}, policy,
                                       systemd=systemd_version(), run=True)  # fmt: skip
        except RequestError as exc:
            return _record(unit, {**record, "state": "skipped", "reason": str(exc)[:500]})
        running = [] if concurrency == "allow" else [
            r for r in _runs_of(unit)
            if r["state"] in HOLDS_RESOURCES and r["unit"] != f"{run}.service"]  # fmt: skip
        if running and concurrency == "forbid":
            other = running[0]["unit"].removesuffix(".service")
            return _record(unit, {**record, "state": "skipped",
                                  "reason": f"forbid: {other} is still running"})  # fmt: skip
        if concurrency == "replace":
            for old in running:
                name = old["unit"].removesuffix(".service")
                _record(unit, {"run": name, "state": "killed", "reason": f"replaced by {run}"})
                _run(["systemctl", "stop", *([] if wait else ["--no-block"]), old["unit"]])
        capacity = host_capacity(policy, run_request.get("capacity"))
        with ledger_lock():
            try:
                existing = _admit_and_run(run, argv, limits, capacity)
            except RequestError as exc:
                return _record(unit, {**record, "state": "skipped", "reason": str(exc)[:500]})
        if existing is not None:
            return {**existing, "run": run}  # this scheduled time ran here already
        return _record(unit, {**record, "state": "started"})


@contextlib.contextmanager
def _timer_lock(unit: str):
    """One firing (or removal) of a timer at a time: its records are numbered in turn."""
    os.makedirs(TIMERS_DIR, mode=0o700, exist_ok=True)
    with open(f"{TIMERS_DIR}/{unit}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def trigger(request: dict, session: Session | None = None) -> dict:
    """Fire a cron job's timer now (its concurrency rule and admission apply); with
    "scheduled" (Unix seconds), as the run of that scheduled time (catching up a missed one:
    the run's name is that time's, so it runs once here however often it is asked)."""
    _fields(request, ("unit", "scheduled"))
    unit = check_unit(request.get("unit"))
    scheduled = _int(request, "scheduled", 0, 1 << 40)
    return fire(unit, kind="trigger", scheduled=scheduled, wait=False)


def stop(request: dict, session: Session | None = None) -> dict:
    """Stop a task (SIGTERM, SIGKILL after its grace) and unload it; report how it ended.

    With "wait": false the stop is only started (systemctl --no-block): the answer comes at
    once and the unit goes within its grace period; what is left of it (a failed unit) is
    cleaned up by a later `forget`. A cron job's timer is removed (it fires no more); its runs
    are stopped too unless "runs": false.
    """
    _fields(request, ("unit", "wait", "runs"))
    wait = request.get("wait", True)
    if not isinstance(wait, bool):
        raise RequestError(f"wait: must be true or false, not {_short(wait)}")
    runs = request.get("runs", True)
    if not isinstance(runs, bool):
        raise RequestError(f"runs: must be true or false, not {_short(runs)}")
    before = status({"unit": request.get("unit")})
    unit = request["unit"]
    if before.get("kind") == "timer":
        return stop_timer(unit, before, runs)
    if wait:
        _run(["systemctl", "stop", f"{unit}.service"])
        _run(["systemctl", "reset-failed", f"{unit}.service"])
    else:
        _run(["systemctl", "stop", "--no-block", f"{unit}.service"])
    if before["state"] in HOLDS_RESOURCES:
        return {**before, "state": "killed"}
    return before


def forget(request: dict, session: Session | None = None) -> dict:
    """Unload a unit that has ended (`unit`), or several (`units`: one `systemctl` call per
    step for them all), once the controller has stored how it ended."""
    if "units" in request:
        return _forget_units(request, session)
    current = status(request, session)
    unit = request["unit"]
    if current["state"] in HOLDS_RESOURCES:
        raise RequestError(f"unit: {unit} is still {current['state']}; stop it instead")
    _unload([unit], session.systemd_bus() if session is not None else None)
    return current


def _forget_units(request: dict, session: Session | None = None) -> dict:
    """forget of `units`: each one's status; one still holding resources is left loaded, with
    an error (stop it instead), and the others are unloaded."""
    _fields(request, ("units",))
    names = request["units"]
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_FORGET:
        raise RequestError(f"units: must be a list of 1 to {MAX_FORGET} unit names")
    try:
        units = list(dict.fromkeys(check_unit(name, runs=True) for name in names))
    except RequestError as exc:
        raise RequestError(f"units{str(exc).removeprefix('unit')}") from None
    bus = session.systemd_bus() if session is not None else None
    current = unit_statuses(units, bus)
    held = {u for u, state in current.items() if state["state"] in HOLDS_RESOURCES}
    _unload([u for u in units if u not in held], bus)
    for unit in held:
        current[unit] = {**current[unit], "error": f"still {current[unit]['state']}; stop it"}
    return {"units": current}


def _unload(units: list[str], bus: SystemdBus | None = None) -> None:
    """Stop these ended units and clear their failed state: systemd unloads them (over `bus`
    while it answers, else by systemctl)."""
    if units:
        services = [f"{unit}.service" for unit in units]
        if bus is not None and bus_unload(bus, services):
            return
        _run(["systemctl", "stop", *services])
        _run(["systemctl", "reset-failed", *services])


def list_units(request: dict | None = None, session: Session | None = None) -> dict:
    """Every meso unit (task services and cron timers, a timer under its own name) and the
    runs of cron timers: each new record (past `after`: timer -> the last seq the caller has)
    and every run whose unit is still loaded."""
    request = request or {}
    _fields(request, ("after",))
    return {**units_report(_listing(), _after(request.get("after"))), "time": time.time()}


def units_report(
    listing: tuple[list[dict], list[dict], list[dict]], after: dict, boot: str | None = None
) -> dict:
    """list's answer from a listing (tasks, timers, runs) and the records the caller has
    (`boot`: boot_identity() read already)."""
    tasks, timers, runs = listing
    loaded = {t["unit"].removesuffix(".timer") for t in timers}
    return {"boot": boot or boot_identity(), "units": tasks + timers,
            "runs": run_reports(runs, after, loaded)}  # fmt: skip


def _listing(bus: SystemdBus | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """Task units, cron timers and cron runs on this host, with their states (and limits):
    over `bus` where it answers (see bus_listing), else from systemctl."""
    if bus is not None and not bus.broken:
        try:
            return bus_listing(bus)
        except (OSError, ValueError, DBusError):
            bus.close()  # its session opens another; systemctl answers this time
    listed = _run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                   "--type=service,timer", f"{UNIT_PREFIX}*"])  # fmt: skip
    words = [line.split()[0] for line in listed.splitlines() if line.strip()]
    return _listed(words, _show, _show_timers)


def _listed(words: list[str], show, show_timers) -> tuple[list[dict], list[dict], list[dict]]:
    """_listing() of the unit names listed (`words`, as `systemctl list-units` orders them),
    each kind read by `show(names, extra)` and `show_timers(names)`."""
    # only units of meso's own form: meso-controller.service and the like are not tasks
    timer_units = [w for w in words if w.endswith(".timer") and UNIT_NAME.fullmatch(w[:-6])]
    timed = {w[:-6] for w in timer_units}  # their services only fire them: not tasks
    names = [w for w in words if w.endswith(".service") and w[:-8] not in timed
             and (UNIT_NAME.fullmatch(w[:-8]) or RUN_NAME.fullmatch(w[:-8]))]  # fmt: skip
    tasks = [w for w in names if UNIT_NAME.fullmatch(w[:-8])]
    runs = [w for w in names if RUN_NAME.fullmatch(w[:-8])]
    tasks = [{**_state(p), **unit_limits(p)} for p in show(tasks)] if tasks else []
    runs = [run_state(p) for p in show(runs, RUN_TIMES)] if runs else []
    timers = [timer_state(p) for p in show_timers(timer_units)] if timer_units else []
    return tasks, timers, runs


def held_units(bus: SystemdBus | None = None) -> list[dict]:
    """Task units and cron runs: what admission counts (timers hold nothing between runs)."""
    tasks, _, runs = _listing(bus)
    return tasks + runs


# -- D-Bus: reading the units without systemctl -------------------------------------------------
#
# A warm node command reads its units over the connection it launches on (SystemdBus): the
# names from ListUnitsByPatterns (what `systemctl list-units --all` lists, ordered as it orders
# them), then each unit's Properties.GetAll over every interface, the one call `systemctl show`
# makes per unit (so each unit is one consistent snapshot), of which only the properties the
# parsers read are decoded (the rest skipped by their lengths) and written as `systemctl show
# --timestamp=unix` prints them: the same parsers give the same answers, and no process starts.

UINT64_MAX = (1 << 64) - 1
_TIMESPANS = frozenset({"CPUQuotaPerSecUSec", "RuntimeMaxUSec"})  # microseconds, or infinity
_AMOUNTS = frozenset({"MemoryMax", "TasksMax"})  # a number, or infinity
_TIMESTAMPS = frozenset({*RUN_TIMES, "NextElapseUSecRealtime", "LastTriggerUSec"})


def shown(name: str, signature: str, value: object) -> str:
    """A property's D-Bus value as `systemctl show --timestamp=unix` prints it, as far as the
    parsers read it (timestamps in whole seconds, as it prints them)."""
    if name in _TIMESTAMPS:
        return "" if value in (0, UINT64_MAX) else f"@{value // 1_000_000}"  # type: ignore[operator]
    if name in _TIMESPANS or name in _AMOUNTS:
        if value == UINT64_MAX:
            return "infinity"
        return f"{value}us" if name in _TIMESPANS else str(value)
    if signature == "ay":
        return bytes(value).hex()  # type: ignore[call-overload]
    if signature == "b":
        return "yes" if value else "no"
    return str(value)


def read_properties(body: bytes, wanted: frozenset[str] | set[str]) -> dict[str, str]:
    """The `wanted` properties of a GetAll reply's body (a{sv}), each as shown(): only those
    are decoded, the others skipped by their lengths (ValueError if the body is not a{sv})."""
    keys = {name.encode(): name for name in wanted}
    out: dict[str, str] = {}
    unpack = struct.unpack_from
    try:
        (size,) = unpack("<I", body, 0)
        at, end = 8, 8 + size  # the entries start 8-aligned
        if end > len(body):
            raise ValueError("D-Bus data: an array past the end")
        while at < end:
            at += -at % 8
            (length,) = unpack("<I", body, at)
            key = body[at + 4 : at + 4 + length]
            at += length + 5
            signature = body[at + 1 : at + 1 + body[at]]
            at += body[at] + 2
            name = keys.get(key)
            size = _BYTE_SIZES.get(signature)
            if name is not None:
                value, at = _get(body, signature.decode(), at)
                out[name] = shown(name, signature.decode(), value)
            elif size:  # most of them: a number, a flag
                at += -at % size + size
            elif signature in (b"s", b"o"):  # a string: its length, its bytes, a NUL
                at += -at % 4
                at += unpack("<I", body, at)[0] + 5
            elif signature[:1] == b"a" and signature[1:2] in _BYTE_ALIGN:  # skipped whole
                at += -at % 4
                (length,) = unpack("<I", body, at)
                at += 4
                at += -at % _BYTE_ALIGN[signature[1:2]] + length
            else:
                at = _skip(body, signature.decode(), at)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"D-Bus data: {exc}") from None
    if at != end:
        raise ValueError("D-Bus data: an array's length")
    return out


_SIZES = {code: struct.calcsize(form) for code, form in _FIXED.items()}
_BYTE_SIZES = {code.encode(): size for code, size in _SIZES.items()}
_BYTE_ALIGN = {code.encode(): align for code, align in _ALIGN.items()}


def _skip(data: bytes, signature: str, at: int) -> int:
    """Where the values of `signature` that start at `at` end, none of them decoded."""
    for kind in dbus_types(signature):
        code = kind[0]
        at += -at % _ALIGN[code]
        if code in _SIZES:
            at += _SIZES[code]
        elif code in "so":
            at += struct.unpack_from("<I", data, at)[0] + 5
        elif code == "g":
            at += data[at] + 2
        elif code == "v":
            inner = data[at + 1 : at + 1 + data[at]].decode()
            at = _skip(data, inner, at + data[at] + 2)
        elif code == "a":
            (size,) = struct.unpack_from("<I", data, at)
            at += 4
            at += -at % _ALIGN[kind[1]] + size
        else:
            at = _skip(data, kind[1:-1], at)
    if at > len(data):
        raise ValueError("D-Bus data: a value past the end")
    return at


def bus_listing(bus: SystemdBus) -> tuple[list[dict], list[dict], list[dict]]:
    """_listing() over systemd's private socket (see above). A unit's properties read before
    are used again while no signal told of a change to it since (systemd signals every change
    of a unit to every private connection), it has no job, and it is listed in the states it
    was read in; the rest are read anew. Signals may come after the change they tell of, so a
    unit is read again whenever its states differ from those it was read in."""
    with bus.lock:
        changed, bus.changed = bus.changed, set()
        if bus.reloaded:
            bus.units.clear()
            bus.reloaded = False
    (units,) = bus.call("ListUnitsByPatterns", "asas", [[], [f"{UNIT_PREFIX}*"]])
    listed = {u[0]: u for u in units if u[0].endswith((".service", ".timer"))}

    def show(names: list[str], extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
        wanted = frozenset(UNIT_PROPERTIES + extra)
        out = []
        for name in names:
            _, _, load, active, sub, _, path, job = listed[name][:8]
            kept = bus.units.get(path)
            if (
                kept
                and kept[:2] == ((load, active, sub), wanted)
                and not job
                and path not in changed
            ):
                out.append(kept[2])
                continue
            props = bus_show(bus, path, wanted)
            states = tuple(props.get(k) for k in ("LoadState", "ActiveState", "SubState"))
            bus.units[path] = (states, wanted, props)
            out.append(props)
        return out

    listing = _listed(sorted(listed, key=_list_order), show,
                      lambda names: show(names, TIMER_PROPERTIES))  # fmt: skip
    paths = {u[6] for u in listed.values()}
    for path in [p for p in bus.units if p not in paths]:
        del bus.units[path]
    return listing


def _list_order(name: str) -> tuple[str, str]:
    """systemctl list-units' order: by unit type, then by name, case aside."""
    return name.rpartition(".")[2].lower(), name.lower()


def bus_show(bus: SystemdBus, path: str, wanted: frozenset[str]) -> dict[str, str]:
    """One unit's properties (its object's `path`) as `systemctl show -p WANTED` gives them."""
    reply = bus.reply("GetAll", "s", [""], path=path, interface=PROPERTIES)
    if reply.fields.get(F_SIGNATURE) != "a{sv}":
        raise ValueError("D-Bus: GetAll did not answer a{sv}")
    return read_properties(reply.body, wanted)


def unit_path(name: str) -> str:
    """A unit's object path: its name escaped as systemd escapes it (bus_label_escape)."""
    escaped = "".join(c if c.isascii() and (c.isalpha() or (i and c.isdigit()))
                      else "".join(f"_{b:02x}" for b in c.encode())
                      for i, c in enumerate(name))  # fmt: skip
    return f"{SYSTEMD_PATH}/unit/{escaped}"


def bus_shown(bus: SystemdBus, names: list[str]) -> list[dict[str, str]] | None:
    """What `systemctl show` gives of these units (of UNIT_PROPERTIES and TIMER_PROPERTIES), over
    the bus (systemd loads a unit asked by its path, as for systemctl); None (and the bus
    closed) if it does not answer."""
    wanted = frozenset(UNIT_PROPERTIES + TIMER_PROPERTIES)
    if bus.broken:
        return None
    try:
        (units,) = bus.call("ListUnitsByPatterns", "asas", [[], names])
        loaded = {u[0] for u in units}
        # of a task's cron timer only whether it is loaded is read (unit_statuses): one not
        # loaded is not asked for (that would load a stub of it in systemd)
        return [{"Id": name, "LoadState": "not-found"}
                if name.endswith(".timer") and name not in loaded
                else bus_show(bus, unit_path(name), wanted) for name in names]  # fmt: skip
    except (OSError, ValueError, DBusError):
        bus.close()
        return None


def bus_unload(bus: SystemdBus, services: list[str]) -> bool:
    """_unload() over the bus, as systemctl does it: StopUnit of each (waiting for their jobs),
    then ResetFailedUnit (a unit not loaded refuses both: nothing to do). False (and the bus
    closed) if it does not answer."""
    if bus.broken:
        return False
    jobs: dict[str, str] = {}
    try:
        with bus.lock:  # nothing drains while the jobs' ends are awaited
            waiting = []
            for service in services:
                with contextlib.suppress(DBusError):
                    waiting += bus.call("StopUnit", "ss", [service, "replace"], jobs)
            while any(job not in jobs for job in waiting):
                bus._next(jobs)
        for service in services:
            with contextlib.suppress(DBusError):
                bus.call("ResetFailedUnit", "s", [service])
    except (OSError, ValueError):
        bus.close()
        return False
    return True


def _bus_systemd_version(bus: SystemdBus | None) -> int:
    """The Manager's Version ("252.39-1~deb12u2") as a number; 0 if it cannot be read so."""
    if bus is None or bus.broken:
        return 0
    try:
        (value,) = bus.call("Get", "ss", [SYSTEMD_MANAGER, "Version"], interface=PROPERTIES)
    except (OSError, ValueError, DBusError):
        bus.close()
        return 0
    text = value[1] if value[0] == "s" and isinstance(value[1], str) else ""
    return parse_systemd_version(f"systemd {text}")


def bus_system_state(bus: SystemdBus) -> str:
    """system_state() over the bus: the Manager's SystemState."""
    (value,) = bus.call("Get", "ss", [SYSTEMD_MANAGER, "SystemState"], interface=PROPERTIES)
    state = value[1] if value[0] == "s" else ""
    return state if isinstance(state, str) and state.isalpha() else "offline"


# -- a sample without asking systemd: the listing is kept while the meso units stay as they were
#
# A warm node command (serve) keeps its last listing and systemd's state with the signature of
# the meso units they were read at: the transient unit files systemd writes when a unit is
# created and removes when it goes, whether each meso service's cgroup has processes (its
# cgroup.events: it changes when a task ends, and its cgroup goes), and the mtimes of systemd's
# invocation links (every unit start, a restart too, or unload on the host) and runtime
# drop-ins. A task's processes coming and going (a build's compilers) change none of it.
# Reading those is a few file reads; systemd is asked again only when one changed. A listing
# is kept only if nothing changed while systemd was asked and it agrees with the cgroups (no
# unit half-way: starting, stopping, running with no process, ended with processes left), so a
# sample after a change never answers from before it.

TRANSIENT_DIR = "/run/systemd/transient"
WATCHED_DIRS = ("/run/systemd/units", "/run/systemd/system.control")
CGROUP2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid, then unified
SETTLED = frozenset({"active", "inactive", "failed"})  # ActiveStates that stay without a change


def cgroup2_root() -> str | None:
    """Where the cgroup v2 tree is mounted (None on a v1-only host: there, always ask)."""
    for root in CGROUP2_ROOTS:
        if os.path.exists(f"{root}/cgroup.procs"):
            return root
    return None


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def unit_signature(root: str) -> tuple:
    """What changes whenever a meso unit is created, unloaded, started, or its cgroup fills
    or empties (see above): read from files, no process started, systemd not asked."""
    try:
        with os.scandir(TRANSIENT_DIR) as entries:
            files = sorted((e.name, e.inode(), e.stat(follow_symlinks=False).st_mtime_ns)
                           for e in entries if e.name.startswith(UNIT_PREFIX))  # fmt: skip
    except FileNotFoundError:
        files = []
    populated = {}
    for name, _, _ in files:
        if name.endswith(".service"):
            try:
                events = _read(f"{root}/system.slice/{name}/cgroup.events")
                populated[name] = parse_populated(events)
            except OSError:
                populated[name] = None  # no cgroup: the unit has no process
    return tuple(files), tuple(sorted(populated.items())), tuple(map(_mtime, WATCHED_DIRS))


def listing_settled(units: list[dict], populated: dict[str, bool | None]) -> bool:
    """Whether a listing agrees with the units' cgroups (pure): no unit between two states,
    each running one with processes, each ended one with none (`populated` as
    unit_signature's: a unit's cgroup has processes, has none, or is not there)."""
    for unit in units:
        if unit.get("active") not in SETTLED:
            return False
        alive = bool(populated.get(unit.get("unit", "")))
        if alive != (unit.get("state") in HOLDS_RESOURCES):
            return False
    return True


def watched_listing(
    kept: dict | None, bus: SystemdBus | None = None
) -> tuple[tuple[list[dict], list[dict], list[dict]], str]:
    """_listing() and system_state(): from `kept` (a session's last answer: signature,
    listing, system) while the meso units' signature is unchanged (see above), else from
    systemd (over `bus` if given and it answers), kept for the next time if it is settled.
    Without `kept`, always from systemd."""
    if kept is None:
        return _listing(), system_state()
    root = cgroup2_root()
    before = unit_signature(root) if root else None
    if before is not None and kept.get("signature") == before and not _told(bus):
        return kept["listing"], kept["system"]
    kept.clear()
    listing, system = _listing_and_state(bus)  # the state after the units: a shutdown that
    # took them says so
    after = unit_signature(root) if root else None
    tasks, _, runs = listing
    if (after is not None and after == before and system in ("running", "degraded")
            and listing_settled(tasks + runs, dict(after[1]))):  # fmt: skip
        kept.update(signature=after, listing=listing, system=system)
    return listing, system


def _told(bus: SystemdBus | None) -> bool:
    """Whether systemd's signals told of a change the unit signature may not show yet (a unit
    whose failed state was reset is unloaded a moment later: until then no file changes)."""
    return bus is not None and not bus.broken and bus.changes()


def _listing_and_state(bus: SystemdBus | None) -> tuple[tuple, str]:
    """_listing(), then system_state(): over `bus` while it answers, else from systemctl."""
    if bus is None:
        return _listing(), system_state()
    listing = _listing(bus)
    if not bus.broken:
        try:
            return listing, bus_system_state(bus)
        except (OSError, ValueError, DBusError):
            bus.close()
    return listing, system_state()


def logs_argv(request: dict) -> list[str]:
    """journalctl's argv for a logs request: the task's own output, not systemd's lines;
    `since` (Unix seconds) leaves out what an earlier unit of the same name wrote."""
    _fields(request, ("unit", "lines", "follow", "since"))
    unit = check_unit(request.get("unit"), runs=True)
    lines = _int(request, "lines", 1, 1_000_000, default=1000)
    since = _int(request, "since", 0, 1 << 40)
    follow = request.get("follow", False)
    if not isinstance(follow, bool):
        raise RequestError(f"follow: must be true or false, not {_short(follow)}")
    argv = ["journalctl", f"_SYSTEMD_UNIT={unit}.service", "--output=cat", "--no-pager",
            f"--lines={lines}"]  # fmt: skip
    if since is not None:
        argv.append(f"--since=@{since}")
    return [*argv, "--follow"] if follow else argv


def logs(request: dict) -> None:
    """Replace this process with journalctl for the unit (its output goes straight out)."""
    argv = logs_argv(request)
    sys.stdout.flush()
    os.execvp("journalctl", argv)  # noqa: S606 - argv list, no shell


# A meso unit's object path on systemd's bus ("-" is escaped "_2d"), and the SubStates a
# task's service reaches when it ends by itself: exited (RemainAfterExit), failed, and
# auto-restart (it ended and will start again). Not dead: that is a stop or a forget, which the
# controller asked for (one behind its back is seen at the next sample).
MESO_UNIT_PATH = b"/org/freedesktop/systemd1/unit/meso_2d"
ENDED_SUBSTATES = frozenset({"exited", "failed", "auto-restart"})


def unit_of_path(path: str) -> str:
    """The unit a systemd object path names (its last label, "_xx" hex escapes undone)."""
    label = path.rsplit("/", 1)[-1]
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), label)


def ended_unit(message: DBusMessage) -> str | None:
    """The meso unit a signal says has just ended (PropertiesChanged on its Unit interface with
    an ended SubState), else None. Most signals are told apart by their raw header and body."""
    if (message.kind != SIGNAL or MESO_UNIT_PATH not in message.header
            or b"SubState" not in message.body):  # fmt: skip
        return None
    fields = message.fields
    if fields.get(F_MEMBER) != "PropertiesChanged":
        return None
    interface, changed, _ = message.values()
    states = {name: value for name, (_, value) in changed}
    if interface != "org.freedesktop.systemd1.Unit" or states.get("SubState") not in (
        ENDED_SUBSTATES
    ):
        return None
    return unit_of_path(str(fields.get(F_PATH, "")))


def watch(request: dict) -> int:
    """Write a line (`{"ended": UNIT}`) each time a meso unit ends, as systemd signals it on its
    private socket, until the controller hangs up (stdin closes) or systemd's connection ends
    (exit 1). The controller then samples this host at once instead of at its next round: what
    it learns still comes from that sample, the line only says when to ask."""
    import select

    _fields(request, ())
    if os.geteuid() != 0:
        raise RequestError("watch: needs root (systemd's private socket)")
    try:
        bus = SystemdBus(drain=False)
    except OSError as exc:
        raise RequestError(f"watch: systemd's private socket: {exc}") from None
    out = sys.stdout.buffer
    out.write(b'{"ok": true, "watching": true}\n')
    out.flush()
    while True:
        ready = select.select([0, bus.sock], [], [])[0]
        if 0 in ready and not os.read(0, 4096):
            return 0  # the controller hung up
        if bus.sock not in ready:
            continue
        try:
            bus._receive(bus.sock.recv(65536))
            ended = []
            while (message := read_message(bus.buffer)) is not None:
                unit = ended_unit(message)
                if unit is not None:
                    ended.append(unit)
        except (OSError, ValueError) as exc:
            _print({"ok": False, "error": f"watch: systemd's connection: {exc}"})
            return 1
        try:
            out.write(b"".join(json.dumps({"ended": u}).encode() + b"\n" for u in ended))
            out.flush()
        except BrokenPipeError:
            return 0


def boot_identity() -> str:
    """The kernel's boot id and PID 1's start time: it changes when the host (or container)
    restarts, and its transient units are gone."""
    boot_id = _read("/proc/sys/kernel/random/boot_id").strip()
    start = _read("/proc/1/stat").rsplit(")", 1)[1].split()[19]
    return f"{boot_id}/{start}"


def booted_at(boot: str | None = None) -> float:
    """When this host (its PID 1: a container's own boot, not its kernel's) started, Unix time
    (`boot`: boot_identity() read already)."""
    start = int((boot or boot_identity()).rpartition("/")[2])
    return round(time.time() - _boottime() + start / os.sysconf("SC_CLK_TCK"), 1)


# -- what a warm sample reads once: a node command does not outlive its host's boot (a reboot, a
# container's restart, ends it with every other process), so its boot identity is read once per
# session; /proc/meminfo is read every time, but only its first lines parsed.

MEMORY_KEYS = ("MemTotal", "MemFree", "MemAvailable")


def kept_boot(session: Session | None) -> str:
    """boot_identity(), read once per session (every time without one)."""
    if session is None:
        return boot_identity()
    if session.boot is None:
        session.boot = boot_identity()
    return session.boot


def memory_head(text: str) -> dict[str, int]:
    """parse_meminfo() of MEMORY_KEYS only, from the lines up to the last of them (the kernel
    prints them first)."""
    found: dict[str, int] = {}
    for line in text.split("\n"):
        found.update(parse_meminfo(line))
        if all(key in found for key in MEMORY_KEYS):
            break
    return {key: found[key] for key in MEMORY_KEYS if key in found}


def sample(request: dict | None = None, session: Session | None = None) -> dict:
    """Facts about this host, its meso units and cron runs, and the capacity it admits
    launches against (0 when its policy file is broken: nothing launches there).

    `leases` ({"owner": ID, "units": [TIMER, ...]}) renews the leases of the cron timers the
    caller holds here (and drops that owner's others); `after` as for `list`."""
    request = request or {}
    _fields(request, ("leases", "after"))
    if "leases" in request:
        renew_leases(request["leases"])
    listed_at = time.time()
    listing, system = watched_listing(session.watched if session else None,
                                      session.systemd_bus() if session else None)  # fmt: skip
    listed = units_report(listing, _after(request.get("after")), kept_boot(session))
    refresh_pins(listed["units"], listed_at)
    memory = memory_head(_read("/proc/meminfo"))
    disk = os.statvfs("/")
    measured = measure(memory)
    try:
        policy, source = (session or Session()).policy()
        capacity = node_capacity(policy, measured)
        described = describe_policy(policy, source)
        topology = read_topology(policy)
    except PolicyError as exc:
        capacity, described = {"cpus": 0, "mem": 0}, {"error": str(exc)}
        topology = {"nodes": {}, "node_mem": {}, "devices": {}}
    return {
        "hostname": os.uname().nodename,
        "time": time.time(),  # this host's clock: what a request's `expires` is measured by
        "cpus": measured["cpus"] // 1000,
        "mem_total": memory.get("MemTotal", 0),
        "mem_available": memory.get("MemAvailable", memory.get("MemFree", 0)),
        "disk_total": disk.f_blocks * disk.f_frsize,
        "disk_available": disk.f_bavail * disk.f_frsize,
        "load": parse_loadavg(_read("/proc/loadavg")),
        "boot_id": listed["boot"].split("/")[0],
        "boot": listed["boot"],
        "booted": booted_at(kept_boot(session)),
        "cgroup": cgroup_mode(),
        "systemd": systemd_version(session.systemd_bus() if session else None),
        "system": system,
        "units": listed["units"],
        "runs": listed["runs"],
        "capacity": capacity,
        "policy": described,
        "topology": topology,
    }


def sample_unless_known(request: dict | None = None, session: Session | None = None) -> dict:
    """`sample`, with the digest of its units (`units_digest`); when the request's
    `units_digest` is that digest, the units are left out and `same_units: true` said instead:
    the caller holds that very list from an earlier answer. The digest is of the list's content,
    so a new connection, a restarted node command or a rebooted host answers the list again
    unless it is the same; a request without a digest gets it whole, as before."""
    request = dict(request or {})
    known = known_digest(request.pop("units_digest", None))
    return without_known_units(sample(request, session), known)


def known_digest(value: object) -> str | None:
    """A sample request's `units_digest`, checked."""
    if value is not None and not (isinstance(value, str) and UNITS_DIGEST.fullmatch(value)):
        raise RequestError("units_digest: not a digest (32 hex digits)")
    return value


def units_digest(units: list) -> str:
    """The digest of a sample's unit list: of its content, as answered."""
    listed = json.dumps(units, separators=(",", ":")).encode()
    return hashlib.blake2b(listed, digest_size=16).hexdigest()


def without_known_units(answer: dict, known: str | None, digest: str | None = None) -> dict:
    """A sample's answer with its units' digest (`digest`, if already made of them), and
    without its units if that is `known`."""
    answer["units_digest"] = digest = digest or units_digest(answer["units"])
    if digest == known:
        del answer["units"]
        answer["same_units"] = True
    return answer


def policy_verb(request: dict, session: Session | None = None) -> dict:
    """The policy in force; {"policy": {...}} first tightens it for this session."""
    _fields(request, ("policy",))
    session = session if session is not None else Session()
    if "policy" in request:
        try:
            layer = parse_policy(request["policy"], partial=True)
        except RequestError as exc:
            message = str(exc) if str(exc).startswith("policy") else f"policy.{exc}"
            raise RequestError(message) from None
        session.layers.append(layer)
    policy, source = session.policy()
    return {"policy": describe_policy(policy, source)}


HEALTH_PATH = Pattern(r"/[\x21-\x7e]{0,1023}")  # printable ASCII, no spaces
PORTS_IN_ENV = Pattern(r"(?:^|\s)MESO_PORTS=([0-9,]*)")
CHECK_SANDBOX = ("--property=DynamicUser=yes", "--property=NoNewPrivileges=yes",
                 "--property=PrivateTmp=yes", "--property=ProtectSystem=strict",
                 "--property=ProtectHome=yes", "--property=TasksMax=64",
                 "--property=MemoryMax=64M", "--property=CPUQuota=50%")  # fmt: skip


def parse_ports(environment: str) -> list[int]:
    """The task's ports from its unit's Environment= (MESO_PORTS=31000,31001)."""
    found = PORTS_IN_ENV.search(environment)
    if not found:
        return []
    return [int(p) for p in found.group(1).split(",") if p.isdigit() and 0 < int(p) < 65536]


def health_check(request: dict) -> dict:
    """What a health request asks (pure): {"kind", "target", "port", "timeout"}; RequestError
    naming the field otherwise. Exactly one of http (a path), tcp (true) or command (argv)."""
    _fields(request, ("unit", "http", "tcp", "command", "port", "timeout"))
    check_unit(request.get("unit"))
    kinds = [k for k in ("http", "tcp", "command") if request.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise RequestError("http: give exactly one of http, tcp or command")
    kind = kinds[0]
    target = request[kind]
    if kind == "http" and not (isinstance(target, str) and HEALTH_PATH.fullmatch(target)):
        raise RequestError("http: must be a path like /healthz (printable, no spaces)")
    if kind == "tcp" and target is not True:
        raise RequestError("tcp: must be true")
    if kind == "command":
        problem = argv_error(target)
        if problem:
            raise RequestError(f"command: {problem}")
    port = _int(request, "port", 0, 99, default=0)
    timeout = _int(request, "timeout", 1, 60, default=2)
    return {"kind": kind, "target": target, "port": port, "timeout": timeout}


def health(request: dict, session: Session | None = None) -> dict:
    """Check one running task, here on its host (no agent, no network path from the
    controller): http GETs a path on one of the task's own ports on 127.0.0.1 (2xx or 3xx is
    healthy); tcp connects to it; command runs as a throwaway user in a strict sandbox (exit 0
    is healthy). Only the task's own ports can be asked. {"healthy": bool, "detail": str}."""
    check = health_check(request)
    unit = request["unit"]
    shown = parse_show(_run(["systemctl", "show", "--no-pager", "-p",
                             "Id,LoadState,ActiveState,SubState,Environment",
                             f"{unit}.service"]))  # fmt: skip
    props = shown[0] if shown else {}
    if props.get("ActiveState") != "active" or props.get("SubState") != "running":
        return {"healthy": False, "detail": "not running"}
    ports = parse_ports(props.get("Environment", ""))
    if check["kind"] != "command" and check["port"] >= len(ports):
        raise RequestError(f"port: the task has no port {check['port']} (it has {len(ports)})")
    timeout = check["timeout"]
    if check["kind"] == "command":
        env = [f"--setenv=MESO_PORT{i}={p}" for i, p in enumerate(ports)]
        argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect",
                f"--property=RuntimeMaxSec={timeout}", *CHECK_SANDBOX, *env, "--",
                *(_escape(a) for a in check["target"])]  # fmt: skip
        import subprocess

        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5,
                                  check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"healthy": False, "detail": f"no answer within {timeout} s"}
        output = (done.stdout or done.stderr).strip().splitlines()
        detail = _short(output[-1], 200) if output else f"exit {done.returncode}"
        return {"healthy": done.returncode == 0, "detail": detail}
    port = ports[check["port"]]
    import http.client
    import socket

    try:
        if check["kind"] == "tcp":
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return {"healthy": True, "detail": f"port {port} accepts connections"}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", check["target"])
            code = connection.getresponse().status
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        return {"healthy": False, "detail": _short(f"{type(exc).__name__}: {exc}", 200)}
    return {"healthy": 200 <= code < 400, "detail": f"HTTP {code}"}


# -- big servers: dedicated cores, NUMA nodes, soft memory, IO weight, devices ---------------------
#
# A launch may carry `cpuset` (dedicated core IDs), `numa` (the NUMA node for its memory),
# `mem_soft` (MemoryHigh, at most its `mem`), `io_weight` (IOWeight 1-10000) and `devices`
# ({class: [path, ...]}). The node checks them against what it has: cores it has and no other
# live unit holds, devices its policy declares (`devices`, or `device_plugins`: commands that
# print one device path per line) and no other live unit holds. Dedicated units are recorded in
# PINNED_FILE; every other task runs on the shared cores (AllowedCPUs= all but the dedicated
# ones), and running shared units are moved when that set changes. Where the policy declares
# devices, every task gets DevicePolicy=closed: only those granted to it may be opened.

PINNED_KEYS = ("cpuset", "numa", "mem_soft", "io_weight", "devices")
PINNED_FILE = STATE_DIR + "/pinned.json"  # unit -> {"cores": [...], "devices": [...]}
SHARED = "shared"  # the entry in PINNED_FILE with the shared cores as last set
DEVICE_CLASS = Pattern(r"[a-z][a-z0-9_]{0,31}")
DEVICE_PATH = Pattern(r"/dev/[A-Za-z0-9_.:+-]+(?:/[A-Za-z0-9_.:+-]+){0,8}")
MAX_DEVICES = 256


def device_path_error(path: object) -> str | None:
    """Why `path` is not a device node path this project hands out (None: it is)."""
    if not isinstance(path, str) or not DEVICE_PATH.fullmatch(path) or "/../" in path + "/":
        return f"{_short(path)} is not a device path under /dev"
    return None


def parse_devices(given: object, where: str) -> dict[str, list[str]]:
    """Device classes and their paths ({gpu: [/dev/nvidia0, ...]}), checked."""
    if not isinstance(given, dict) or len(given) > 64:
        raise RequestError(f"{where}: must be an object of device classes to lists of paths")
    out: dict[str, list[str]] = {}
    for kind, paths in given.items():
        if not isinstance(kind, str) or not DEVICE_CLASS.fullmatch(kind):
            raise RequestError(f"{where}: {_short(kind)} is not a device class name")
        if not isinstance(paths, list) or len(paths) > MAX_DEVICES:
            raise RequestError(f"{where}.{kind}: must be a list of device paths")
        for path in paths:
            problem = device_path_error(path)
            if problem:
                raise RequestError(f"{where}.{kind}: {problem}")
        if len(set(paths)) != len(paths):
            raise RequestError(f"{where}.{kind}: a device is listed twice")
        out[kind] = list(paths)
    return out


def parse_device_plugins(given: object) -> dict[str, list[str]]:
    """device_plugins: {class: argv}, each command printing one device path per line."""
    if not isinstance(given, dict) or len(given) > 64:
        raise RequestError("device_plugins: must be an object of device classes to commands")
    for kind, argv in given.items():
        if not isinstance(kind, str) or not DEVICE_CLASS.fullmatch(kind):
            raise RequestError(f"device_plugins: {_short(kind)} is not a device class name")
        problem = argv_error(argv)
        if problem:
            raise RequestError(f"device_plugins.{kind}: {problem}")
    return {k: list(v) for k, v in given.items()}


def parse_cpulist(text: str) -> list[int]:
    """Core IDs from the kernel's list form: "0-3,8,10-11"."""
    cores: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cores += range(int(low), int(high or low) + 1)
    return sorted(set(cores))


def format_cpulist(cores: list[int]) -> str:
    """The kernel's (and systemd's) list form of core IDs: "0-3,8"."""
    spans: list[list[int]] = []
    for core in sorted(set(cores)):
        if spans and spans[-1][1] == core - 1:
            spans[-1][1] = core
        else:
            spans.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def parse_node_meminfo(text: str) -> int:
    """A NUMA node's MemTotal in bytes ("Node 0 MemTotal:  1024 kB")."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == "MemTotal:":
            return int(words[3]) * 1024
    return 0


def read_topology(policy: dict) -> dict:
    """This host's cores by NUMA node, each node's memory and its devices by class."""
    return {**read_cores(), "devices": policy_devices(policy)}


FACTS_TTL = 30.0  # seconds a serving node command reuses its cores and plugins' devices
_CACHED: dict[object, tuple[float, object]] = {}


def _cached(key: object, read):
    """`read()`, at most once per FACTS_TTL seconds per key (samples come every second)."""
    now = time.monotonic()
    hit = _CACHED.get(key)
    if hit is None or now - hit[0] > FACTS_TTL:
        hit = _CACHED[key] = (now, read())
    return hit[1]


def read_cores() -> dict:
    """This host's cores by NUMA node and each node's memory (from /sys, cached)."""
    return _cached("cores", _read_cores)


def _read_cores() -> dict:
    base = "/sys/devices/system/node"
    nodes: dict[str, list[int]] = {}
    node_mem: dict[str, int] = {}
    try:
        names = sorted(n for n in os.listdir(base) if re.fullmatch(r"node[0-9]{1,4}", n))
    except OSError:
        names = []
    for name in names:
        try:
            cores = parse_cpulist(_read(f"{base}/{name}/cpulist"))
            mem = parse_node_meminfo(_read(f"{base}/{name}/meminfo"))
        except (OSError, ValueError):
            continue
        if cores:
            nodes[name[4:]] = cores
            node_mem[name[4:]] = mem
    if not nodes:  # no NUMA information: one node with every online core
        nodes = {"0": parse_cpulist(_read("/sys/devices/system/cpu/online"))}
        node_mem = {"0": parse_meminfo(_read("/proc/meminfo")).get("MemTotal", 0)}
    return {"nodes": nodes, "node_mem": node_mem}


def policy_devices(policy: dict) -> dict[str, list[str]]:
    """The devices this host may hand out: its policy's, and what its plugins print."""
    devices = {k: list(v) for k, v in policy.get("devices", {}).items()}
    for kind, argv in sorted(policy.get("device_plugins", {}).items()):
        found = _cached(("plugin", *argv), lambda argv=argv: _plugin_devices(argv))
        devices[kind] = list(dict.fromkeys([*devices.get(kind, []), *found]))[:MAX_DEVICES]
    return devices


def _plugin_devices(argv: list[str]) -> list[str]:
    """The device paths a plugin command prints (none if it fails)."""
    import subprocess

    try:
        printed = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [w for w in printed.stdout.split() if device_path_error(w) is None]


def pinned_limits(request: dict, limits: dict) -> list[str]:
    """The properties of mem_soft and io_weight, and the shapes of cpuset, numa and devices,
    checked (pure); what needs the host (cores, devices, who holds them) is pin_argv's."""
    out = []
    mem_soft = _int(request, "mem_soft", 1 << 20, 1 << 50)
    if mem_soft is not None:
        if mem_soft > limits["mem"]:
            raise RequestError(f"mem_soft: {mem_soft} is more than mem ({limits['mem']})")
        out.append(f"--property=MemoryHigh={mem_soft}")
    weight = _int(request, "io_weight", 1, 10_000)
    if weight is not None:
        out.append(f"--property=IOWeight={weight}")
    cpuset = request.get("cpuset")
    if cpuset is not None and (
        not isinstance(cpuset, list) or not 0 < len(cpuset) <= 4096
        or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 65536 for c in cpuset)
        or len(set(cpuset)) != len(cpuset)
    ):  # fmt: skip
        raise RequestError("cpuset: must be a list of distinct core numbers")
    if "numa" in request and cpuset is None:
        raise RequestError("numa: only with cpuset (dedicated cores)")
    _int(request, "numa", 0, 4095)
    if "devices" in request:
        parse_devices(request["devices"], "devices")
    return out


def _read_pinned() -> dict[str, dict]:
    try:
        with open(PINNED_FILE) as f:
            pinned = json.load(f)
    except (OSError, ValueError):
        return {}
    return pinned if isinstance(pinned, dict) else {}


def _write_pinned(pinned: dict[str, dict]) -> None:
    if not pinned and not os.path.exists(PINNED_FILE):
        return
    _write_json(PINNED_FILE, pinned)


def pin_argv(unit: str, argv: list[str], request: dict, policy: dict) -> list[str]:
    """Under the ledger's lock: the launch's argv with its cores, NUMA node and devices (or
    the shared cores), after checking them against this host and the units holding theirs."""
    pinned = _read_pinned()
    wants = any(request.get(key) is not None for key in ("cpuset", "devices"))
    devices = policy_devices(policy) if wants or policy.get("devices") or policy.get(
        "device_plugins") else {}  # fmt: skip
    if not wants and not pinned and not devices:
        return argv  # the common case: nothing pinned here, nothing to read
    topology = read_cores() if wants or pinned else None
    held = {u: p for u, p in pinned.items() if u not in (f"{unit}.service", SHARED)}
    if held and _conflicts(request, held):  # the holder may have ended since the last sample
        live = {u["unit"] for u in held_units() if u.get("state") in HOLDS_RESOURCES}
        held = {u: p for u, p in held.items() if u in live}
    props, env = [], {}
    cpuset = request.get("cpuset")
    if cpuset is not None and topology is not None:
        have = {c for cores in topology["nodes"].values() for c in cores}
        taken = {c for p in held.values() for c in p.get("cores", ())}
        for core in cpuset:
            if core not in have:
                raise RequestError(f"cpuset: this host has no core {core}")
            if core in taken:
                raise RequestError(f"cpuset: core {core} is dedicated to another task")
        cores = sorted(cpuset)
        if request.get("numa") is not None:
            node = str(request["numa"])
            if node not in topology["nodes"] or not set(cores) <= set(topology["nodes"][node]):
                raise RequestError(f"numa: the cores are not all on NUMA node {node}")
            props.append(f"--property=AllowedMemoryNodes={node}")
    elif topology is not None:
        taken = {c for p in held.values() for c in p.get("cores", ())}
        cores = [c for cs in topology["nodes"].values() for c in cs if c not in taken]
    else:
        cores = []
    if cores:
        props.append(f"--property=AllowedCPUs={format_cpulist(cores)}")
        env["MESO_CPUSET"] = format_cpulist(cores)
    granted = parse_devices(request.get("devices") or {}, "devices")
    given = {d for p in held.values() for d in p.get("devices", ())}
    paths = []
    for kind, asked in sorted(granted.items()):
        known = devices.get(kind)
        if known is None:
            raise RequestError(f"devices: this host has no device class {kind!r}")
        for path in asked:
            if path not in known:
                raise RequestError(f"devices.{kind}: {path} is not one this host declares")
            if path in given:
                raise RequestError(f"devices.{kind}: {path} is given to another task")
        paths += asked
        if kind == "gpu":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(known.index(p)) for p in asked)
    if devices:  # this host hands out devices: a task opens only those granted to it
        props.append("--property=DevicePolicy=closed")
        props += [f"--property=DeviceAllow={path} rw" for path in paths]
    if paths:
        env["MESO_DEVICES"] = ",".join(paths)
    props += [f"--setenv={k}={v}" for k, v in sorted(env.items())]
    split = argv.index("--")
    return [*argv[:split], *props, *argv[split:]]


def _conflicts(request: dict, held: dict[str, dict]) -> bool:
    """Whether the request asks a core or device that a recorded unit holds."""
    cores = {c for p in held.values() for c in p.get("cores", ())}
    devices = {d for p in held.values() for d in p.get("devices", ())}
    asked = [d for paths in (request.get("devices") or {}).values() for d in paths]
    return bool(cores & set(request.get("cpuset") or ()) or devices & set(asked))


def record_pins(unit: str, request: dict) -> None:
    """Under the ledger's lock, after a launch: note a dedicated unit's cores and devices and
    move the shared units off its cores."""
    if request.get("cpuset") is None and request.get("devices") is None:
        return
    pinned = _read_pinned()
    devices = [p for paths in (request.get("devices") or {}).values() for p in paths]
    pinned[f"{unit}.service"] = {"cores": sorted(request.get("cpuset") or []),
                                 "devices": devices, "at": time.time()}  # fmt: skip
    ledger = _read_ledger() or []
    refresh_shared(pinned, [u["unit"] for u in ledger], since=-1.0)


def refresh_pins(units: list[dict], since: float) -> None:
    """At a sample: forget dedicated units that hold nothing any more (recorded before the
    units were listed, at `since`), and give their cores back to the shared units."""
    if not os.path.exists(PINNED_FILE):
        return
    live = [u["unit"] for u in units if u.get("state") in HOLDS_RESOURCES]
    with ledger_lock():
        refresh_shared(_read_pinned(), live, since)


def refresh_shared(pinned: dict[str, dict], live: list[str], since: float) -> None:
    """Keep the pinned units that are `live` (or recorded after `since`); when the shared
    cores changed, set AllowedCPUs= on every live shared unit (at runtime)."""
    kept = {u: p for u, p in pinned.items()
            if u == SHARED or u in live or p.get("at", 0) >= since}  # fmt: skip
    dedicated = {c for u, p in kept.items() if u != SHARED for c in p.get("cores", ())}
    cores = read_cores()["nodes"]
    shared = [c for cs in cores.values() for c in cs if c not in dedicated]
    if kept.get(SHARED, {}).get("cores", shared) != shared or (dedicated and SHARED not in kept):
        for name in sorted(set(live) - set(kept)):
            _run(["systemctl", "set-property", "--runtime", name,
                  f"AllowedCPUs={format_cpulist(shared)}"])  # fmt: skip
    kept[SHARED] = {"cores": shared}
    _write_pinned(kept if len(kept) > 1 else {})


VERBS = {"sample": sample, "launch": launch, "status": status, "list": list_units, "stop": stop,
         "forget": forget, "health": health, "trigger": trigger}  # fmt: skip
VERBS["sample"] = sample_unless_known  # the units left out when the caller holds them
SESSION_VERBS = {"policy": policy_verb}  # about the connection, not a task


def _read_epoch(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0


def _epoch_refusal(epoch: int, seen: int) -> RequestError:
    return RequestError(f"epoch: {epoch} is older than {seen}, the newest controller's seen "
                        "by this host: this controller is no longer the leader")  # fmt: skip


EXPIRES: contextvars.ContextVar[float | None] = contextvars.ContextVar("expires", default=None)


def check_expires(expires: object) -> float | None:
    """A request's `expires` (this host's Unix time after which its sender has stopped waiting
    for it, None: no deadline), refused once passed: a request that reaches the host late (held
    in a cut connection's buffers, delivered when the network heals) must do nothing, for its
    controller may have decided meanwhile that it never came (and launched it again)."""
    if expires is None:
        return None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires != expires:
        raise RequestError(f"expires: must be a Unix time in seconds, not {_short(expires)}")
    late = time.time() - expires
    if late > 0:
        raise RequestError(f"expires: this request came {late:.1f} s after its deadline (its "
                           "sender stopped waiting for it); nothing done")  # fmt: skip
    return float(expires)


@contextlib.contextmanager
def fenced(request: dict) -> Iterator[None]:
    """Run a request that changes the host only if its controller's `epoch` is the highest this
    host has seen (a request without one, from a single controller, is not fenced).

    Requests of the current epoch hold the state's epoch lock shared while they run; a higher epoch
    takes it exclusively to record itself, so once a new leader has been heard here, no request
    of an older one is still running or can start."""
    epoch = request.pop("epoch", None)
    owner = request.pop("epoch_state", None)
    if epoch is None and owner is None:
        yield
        return
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise RequestError(f"epoch: {_short(epoch)} is not a whole number from 0 to {MAX_EPOCH}")
    if not isinstance(owner, str) or not OWNER.fullmatch(owner):
        raise RequestError(f"epoch_state: {_short(owner)} is not a state's identity (hex)")
    path = f"{EPOCHS_DIR}/{owner}"
    os.makedirs(EPOCHS_DIR, mode=0o700, exist_ok=True)
    with open(path + ".lock", "a") as lock:
        while True:
            fcntl.flock(lock, fcntl.LOCK_SH)
            seen = _read_epoch(path)
            if epoch < seen:
                raise _epoch_refusal(epoch, seen)
            if epoch == seen:
                break
            fcntl.flock(lock, fcntl.LOCK_EX)  # a new leader: record it, alone
            seen = _read_epoch(path)
            if epoch < seen:
                raise _epoch_refusal(epoch, seen)
            if epoch > seen:
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                    f.write(f"{epoch}\n")
                os.replace(tmp, path)
            # back to shared, and look again (an even newer one may have come in between)
        yield


def answer(verb: object, request: object, session: Session | None = None) -> dict:
    """One request's answer: {"ok": true, ...} or {"ok": false, "error": "FIELD: ..."}.

    Never raises: whatever goes wrong becomes one error answer. Requests that change the host
    carry their controller's epoch when several controllers share the state (see `fenced`).
    """
    try:
        handler = VERBS.get(verb) or SESSION_VERBS.get(verb)  # type: ignore[call-overload]
    except TypeError:  # an unhashable verb
        handler = None
    if handler is None:
        return {"ok": False, "error": f"verb: {_short(verb)} is not one of {sorted(VERBS)}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request: must be a JSON object"}
    try:
        if verb in FENCED:
            request = dict(request)
            token = EXPIRES.set(check_expires(request.pop("expires", None)))
            try:
                with fenced(request):
                    return {"ok": True, **handler(request, session)}
            finally:
                EXPIRES.reset(token)
        return {"ok": True, **handler(request, session)}
    except RequestError as exc:
        return {"ok": False, "error": str(exc)[:2000]}
    except Exception as exc:
        return {
            "ok": False,
            "error": f"internal error: {type(exc).__name__}: {_short(str(exc), 200)}",
        }


def handle_line(line: bytes, session: Session) -> dict:
    """The answer to one request line (never raises)."""
    try:
        verb, request = decode_request(line)
    except RequestError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:
        return {"ok": False, "error": f"request: {type(exc).__name__}"}
    return answer(verb, request, session)


def serve(stdin=None, stdout=None) -> int:
    """Answer JSON-line requests until stdin closes (one warm process for many requests).

    A line is read MAX_LINE bytes at most; a longer one is skipped to its end, unread, and
    refused. Every line gets exactly one answer line.
    """
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    session = Session(systemd_bus=True)
    while True:
        line = stdin.readline(MAX_LINE + 1)
        if not line:
            return 0
        if len(line) > MAX_LINE:
            while line and not line.endswith(b"\n"):
                line = stdin.readline(1 << 16)
            reply = {"ok": False, "error": f"request: longer than {MAX_LINE} bytes"}
        else:
            reply = handle_line(line, session)
        try:
            stdout.write(encode_answer(reply, session))
            stdout.flush()
        except BrokenPipeError:
            return 0


CONSTANT_PART = ("capacity", "policy", "topology")  # a sample answer's last keys


def encode_answer(reply: dict, session: Session) -> bytes:
    """json.dumps(reply) as one line, the same bytes; a sample's CONSTANT_PART (its policy and
    topology: the same sample after sample) encoded again only when it changed."""
    if tuple(reply)[-len(CONSTANT_PART) :] != CONSTANT_PART:
        return json.dumps(reply).encode() + b"\n"
    constant = tuple(reply[key] for key in CONSTANT_PART)
    if not session.encoded or session.encoded[0] != constant:
        encoded = json.dumps(dict(zip(CONSTANT_PART, constant, strict=True)))[1:-1]
        session.encoded = (constant, encoded.encode())
    rest = json.dumps({k: v for k, v in reply.items() if k not in CONSTANT_PART})
    return rest[:-1].encode() + b", " + session.encoded[1] + b"}\n"


SSH_VERBS = (*VERBS, "policy", "logs", "serve", "watch")


def from_ssh(original: str | None) -> list[str]:
    """The verb and request a pinned key asked for (authorized_keys command=, via sudo).

    Anything but "VERB [ONE-JSON-OBJECT]" with a known verb is refused: the key can do
    nothing else (no shell, no other program).
    """
    import shlex

    refusal = f"this key runs only the meso node command ({', '.join(SSH_VERBS)})"
    if original is None or len(original) > MAX_LINE + 64:
        raise RequestError(refusal)
    try:
        words = shlex.split(original)
    except ValueError:
        words = []
    if not words or words[0] not in SSH_VERBS or len(words) > 2:
        raise RequestError(refusal)
    return words


def _print(reply: dict) -> None:
    print(json.dumps(reply))


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except Exception as exc:
        _print({"ok": False, "error": f"internal error: {type(exc).__name__}"})
        return 1


def _main(argv: list[str]) -> int:
    os.environ["TZ"] = "UTC"  # systemctl shows timers' times as dates: in UTC, to be read back
    if argv == ["--ssh"]:
        try:
            argv = from_ssh(os.environ.get("SSH_ORIGINAL_COMMAND"))
        except RequestError as exc:
            _print({"ok": False, "error": str(exc)})
            return 2
    if argv == ["serve"]:
        return serve()
    if len(argv) == 2 and argv[0] == "fire":  # systemd runs it for a cron timer, as root
        try:
            _print({"ok": True, **fire(argv[1])})
        except RequestError as exc:
            _print({"ok": False, "error": str(exc)})
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "check-policy":
        try:
            with open(argv[1], "rb") as f:
                policy = parse_policy_bytes(f.read(MAX_POLICY_BYTES + 1), argv[1])
        except (OSError, RequestError) as exc:
            _print({"ok": False, "error": str(exc)})
            return 1
        _print({"ok": True, "policy": describe_policy(policy, argv[1])})
        return 0
    if not argv or len(argv) > 2:
        _print({"ok": False,
                "error": f"usage: nodecmd VERB [REQUEST] ({', '.join(SSH_VERBS)})"})  # fmt: skip
        return 2
    try:
        raw = argv[1].encode("utf-8", "surrogateescape") if len(argv) == 2 else b"{}"
        request = decode_object(raw)
    except RequestError as exc:
        _print({"ok": False, "error": str(exc)})
        return 2
    if argv[0] == "logs":
        try:
            logs(request)
        except RequestError as exc:
            _print({"ok": False, "error": str(exc)})
            return 2
    if argv[0] == "watch":
        try:
            return watch(request)
        except RequestError as exc:
            _print({"ok": False, "error": str(exc)})
            return 2
    session = Session(systemd_bus=True) if argv[0] == "launch" else None
    reply = answer(argv[0], request, session)
    _print(reply)
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
