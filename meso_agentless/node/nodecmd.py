#!/usr/bin/env python3
"""meso node command: what the controller asks of a host, answered in JSON.

Runs on the host with nothing but the Python standard library, as root (streamed to python3 by
the controller) or installed root-owned for the unprivileged meso user. Verbs:

    sample              cpus, memory, disk, load, boot id, cgroup and systemd versions, units
    launch REQUEST      start a task as a transient systemd service (admission-checked)
    status REQUEST      the state of one task unit
    list                every meso unit and its state
    stop REQUEST        stop a task (SIGTERM, then SIGKILL after its grace period)
    forget REQUEST      unload a finished unit once the controller has stored its result
    logs REQUEST        the task's journal (follow: true streams it)
    serve               answer JSON-line requests ({"verb": ..., ...}) until stdin closes

REQUEST is one JSON object. Every request is validated here: unit names must be meso's,
properties come from an allow-list, argv is a JSON list passed to systemd-run as separate
arguments (no shell ever sees it). Facts are read by small functions and parsed by pure ones
(parse_*, task_state, run_argv), which the package's tests check against real output.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys

UNIT_PREFIX = "meso-"
UNIT_NAME = re.compile(r"^meso-[a-z0-9][a-z0-9-]*_[a-z0-9][a-z0-9-]*_[0-9]+_[0-9]+$")
UNIT_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Result", "ExecMainCode", "ExecMainStatus",
    "ExecMainPID", "CPUQuotaPerSecUSec", "MemoryMax", "TasksMax", "RuntimeMaxUSec",
    "NRestarts", "InvocationID",
)  # fmt: skip
TIMEOUT = 20
STATE_DIR = "/run/meso-node"  # tmpfs: it goes with a reboot, as transient units do
LEDGER = STATE_DIR + "/ledger.json"  # what launched units were given: admission's fast path
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3  # ExecMainCode values (siginfo si_code)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes: {"MemTotal": ..., "MemAvailable": ...}."""
    out = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+):\s+(\d+)(?:\s+kB)?$", line.strip())
        if match:
            unit = 1024 if line.strip().endswith("kB") else 1
            out[match.group(1)] = int(match.group(2)) * unit
    return out


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
        total += int(float(number) * units[unit])
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


class RequestError(ValueError):
    """A request this host refuses; the message says which field."""


def check_unit(name: object) -> str:
    if not isinstance(name, str) or not UNIT_NAME.match(name):
        raise RequestError(f"unit: {name!r} is not a meso unit name (meso-JOB_TASK_INDEX_ATTEMPT)")
    return name


def _int(request: dict, key: str, low: int, high: int, default: int | None = None) -> int | None:
    value = request.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{key}: {value!r} is not a whole number from {low} to {high}")
    return value


LAUNCH_KEYS = {"unit", "argv", "env", "cwd", "user", "cpus", "mem", "tasks_max", "runtime_sec",
               "grace_sec", "sandbox", "capacity", "description", "restart"}  # fmt: skip
SANDBOX_DEFAULTS = {"no_new_privileges": True, "private_tmp": True, "protect_system": "full",
                    "dynamic_user": True}  # fmt: skip


def run_argv(request: dict) -> list[str]:
    """The systemd-run argv for a launch request (pure; every field checked, nothing shelled)."""
    unknown = set(request) - LAUNCH_KEYS
    if unknown:
        raise RequestError(f"{sorted(unknown)[0]}: unknown field")
    unit = check_unit(request.get("unit"))
    argv = request.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RequestError("argv: must be a non-empty list of strings")
    if any("\0" in a for a in argv) or not argv[0]:
        raise RequestError("argv: must not hold NUL characters or an empty program")
    out = ["systemd-run", f"--unit={unit}", "--quiet"]
    restart = request.get("restart", "no")
    if restart not in ("no", "always", "on-failure"):
        raise RequestError("restart: no, always or on-failure")
    if restart == "no":  # a task: it stays loaded after it ends, with its exit status
        out.append("--property=RemainAfterExit=yes")
    else:  # a service instance: systemd restarts it on this host
        out += [f"--property=Restart={restart}", "--property=RestartSec=1"]
    description = request.get("description", unit)
    if not isinstance(description, str) or "\n" in description or len(description) > 200:
        raise RequestError("description: must be one line of text")
    out.append(f"--description={description}")
    env = request.get("env") or {}
    if not isinstance(env, dict):
        raise RequestError("env: must be a mapping")
    for key, value in sorted(env.items()):
        if not ENV_NAME.match(str(key)) or not isinstance(value, str) or "\0" in value:
            raise RequestError(f"env: {key!r} is not a variable name with a string value")
        out.append(f"--setenv={key}={value}")
    cwd = request.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
            raise RequestError("cwd: must be an absolute path")
        out.append(f"--working-directory={cwd}")
    sandbox = dict(SANDBOX_DEFAULTS)
    given = request.get("sandbox") or {}
    if not isinstance(given, dict) or set(given) - set(SANDBOX_DEFAULTS):
        raise RequestError(f"sandbox: fields are {sorted(SANDBOX_DEFAULTS)}")
    sandbox.update(given)
    user = request.get("user")
    if user is not None:
        if not isinstance(user, str) or not USER_NAME.match(user):
            raise RequestError(f"user: {user!r} is not a user name")
        out.append(f"--uid={user}")
    elif sandbox["dynamic_user"] is True:
        out.append("--property=DynamicUser=yes")
    for key, prop in (("no_new_privileges", "NoNewPrivileges"), ("private_tmp", "PrivateTmp")):
        if sandbox[key] is True:
            out.append(f"--property={prop}=yes")
    if not all(isinstance(sandbox[k], bool) for k in SANDBOX_DEFAULTS if k != "protect_system"):
        raise RequestError("sandbox: dynamic_user, no_new_privileges, private_tmp are true/false")
    if sandbox["protect_system"] not in ("full", "strict", False, "no"):
        raise RequestError("sandbox.protect_system: full, strict or no")
    if sandbox["protect_system"] in ("full", "strict"):
        out.append(f"--property=ProtectSystem={sandbox['protect_system']}")
    cpus = _int(request, "cpus", 1, 10**6)
    if cpus is not None:
        out.append(f"--property=CPUQuota={cpus / 10:g}%")
    mem = _int(request, "mem", 1 << 20, 1 << 50)
    if mem is not None:
        out += [f"--property=MemoryMax={mem}", "--property=MemorySwapMax=0"]
    tasks = _int(request, "tasks_max", 1, 10**6)
    if tasks is not None:
        out.append(f"--property=TasksMax={tasks}")
    runtime = _int(request, "runtime_sec", 1, 10**8)
    if runtime is not None:
        out.append(f"--property=RuntimeMaxSec={runtime}")
    grace = _int(request, "grace_sec", 0, 3600, default=10)
    out.append(f"--property=TimeoutStopSec={grace}")
    # systemd expands $VAR in ExecStart (not % specifiers, given over D-Bus); "$$" is a "$"
    return [*out, "--", *(arg.replace("$", "$$") for arg in argv)]


def admission_error(units: list[dict], request: dict) -> str | None:
    """Why the task would take the host past its capacity, given the meso units on it (pure).

    Units that still hold resources count with their limits; finished ones do not.
    """
    capacity = request.get("capacity")
    if not capacity:
        return None
    for key, field in (("cpus", "millicpus"), ("mem", "memory_max")):
        limit = capacity.get(key)
        need = request.get(key) or 0
        if limit is None or not need:
            continue
        held = sum((u.get(field) or 0) for u in units
                   if u.get("active") in ("active", "activating", "deactivating", "reloading")
                   and u.get("sub") != "exited")  # fmt: skip
        if held + need > limit:
            return (
                f"admission: {key} would exceed the host's capacity "
                f"({held} held + {need} > {limit})"
            )
    return None


def _show(units: list[str]) -> list[dict[str, str]]:
    return parse_show(_run(["systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPERTIES),
                            *units]))  # fmt: skip


def status(request: dict) -> dict:
    unit = check_unit(request.get("unit"))
    return task_state(_show([f"{unit}.service"])[0])


def launch(request: dict) -> dict:
    """Start the task unless its unit exists already (then report it: launching is idempotent).

    Under a host-wide lock, admission adds the request to what earlier launches were given
    (a ledger in /run) and, only if that would pass the capacity, rechecks against the units
    really holding resources; so two controllers racing for a host cannot overcommit it.
    """
    argv = run_argv(request)
    unit = request["unit"]
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    with open(LEDGER + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = _read_ledger()
        entry = {
            "unit": f"{unit}.service",
            "millicpus": request.get("cpus"),
            "memory_max": request.get("mem"),
            "active": "active",
            "sub": "running",
        }
        if admission_error(ledger, request):
            ledger = [u for u in meso_units() if u["state"] in ("running", "staging")]
            error = admission_error(ledger, request)
            if error:
                _write_ledger(ledger)
                raise RequestError(error)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if done.returncode != 0:
            current = status({"unit": unit})
            if current["state"] != "unknown":
                return {**current, "existed": True}
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RequestError(f"systemd-run failed: {detail[-1] if detail else done.returncode}")
        _write_ledger([*ledger, entry])
    # systemd-run returns once the service has started: it runs (or already ran)
    return {"unit": f"{unit}.service", "state": "running", "exit_code": None, "signal": None,
            "reason": None, "restarts": 0, "existed": False}  # fmt: skip


def _read_ledger() -> list[dict]:
    try:
        with open(LEDGER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def _write_ledger(units: list[dict]) -> None:
    with open(LEDGER + ".tmp", "w") as f:
        json.dump(units, f)
    os.replace(LEDGER + ".tmp", LEDGER)


def stop(request: dict) -> dict:
    """Stop a task (SIGTERM, SIGKILL after its grace) and unload it; report how it ended."""
    unit = check_unit(request.get("unit"))
    before = status({"unit": unit})
    _run(["systemctl", "stop", f"{unit}.service"])
    _run(["systemctl", "reset-failed", f"{unit}.service"])
    if before["state"] in ("running", "staging"):
        return {**before, "state": "killed"}
    return before


def forget(request: dict) -> dict:
    """Unload a unit that has ended, once the controller has stored how it ended."""
    unit = check_unit(request.get("unit"))
    current = status({"unit": unit})
    if current["state"] in ("running", "staging"):
        raise RequestError(f"unit: {unit} is still {current['state']}; stop it instead")
    _run(["systemctl", "stop", f"{unit}.service"])
    _run(["systemctl", "reset-failed", f"{unit}.service"])
    return current


def list_units(request: dict | None = None) -> dict:
    listed = _run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                   "--type=service", f"{UNIT_PREFIX}*"])  # fmt: skip
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    shown = _show(names) if names else []
    return {"boot": boot_identity(), "units": [{**task_state(p), **unit_limits(p)} for p in shown]}


def logs(request: dict) -> None:
    """Replace this process with journalctl for the unit (its output goes straight out)."""
    unit = check_unit(request.get("unit"))
    lines = _int(request, "lines", 1, 1_000_000, default=1000)
    # the task's own output, not systemd's lines about the unit
    argv = ["journalctl", f"_SYSTEMD_UNIT={unit}.service", "--output=cat", "--no-pager",
            f"--lines={lines}"]  # fmt: skip
    if request.get("follow") is True:
        argv.append("--follow")
    sys.stdout.flush()
    os.execvp("journalctl", argv)  # noqa: S606 - argv list, no shell


def boot_identity() -> str:
    """The kernel's boot id and PID 1's start time: it changes when the host (or container)
    restarts, and its transient units are gone."""
    boot_id = _read("/proc/sys/kernel/random/boot_id").strip()
    start = _read("/proc/1/stat").rsplit(")", 1)[1].split()[19]
    return f"{boot_id}/{start}"


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return done.stdout


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def meso_units() -> list[dict]:
    return list_units()["units"]


def sample(request: dict | None = None) -> dict:
    memory = parse_meminfo(_read("/proc/meminfo"))
    disk = os.statvfs("/")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return {
        "hostname": os.uname().nodename,
        "cpus": cpus,
        "mem_total": memory.get("MemTotal", 0),
        "mem_available": memory.get("MemAvailable", memory.get("MemFree", 0)),
        "disk_total": disk.f_blocks * disk.f_frsize,
        "disk_available": disk.f_bavail * disk.f_frsize,
        "load": parse_loadavg(_read("/proc/loadavg")),
        "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(),
        "boot": boot_identity(),
        "cgroup": parse_cgroup_mode(_read("/proc/mounts")),
        "systemd": parse_systemd_version(_run(["systemctl", "--version"])),
        "units": meso_units(),
    }


VERBS = {"sample": sample, "launch": launch, "status": status, "list": list_units, "stop": stop,
         "forget": forget}  # fmt: skip


def answer(verb: str, request: dict) -> dict:
    """One request's answer: {"ok": true, ...} or {"ok": false, "error": "..."}."""
    if verb not in VERBS:
        return {"ok": False, "error": f"verb: {verb!r} is not one of {sorted(VERBS)}"}
    try:
        return {"ok": True, **VERBS[verb](request)}
    except RequestError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # one JSON error, never a traceback on the wire
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve() -> int:
    """Answer JSON-line requests until stdin closes (one warm process for many requests)."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
            verb = request.pop("verb")
        except (ValueError, KeyError, AttributeError):
            reply = {"ok": False, "error": "each line must be a JSON object with a verb"}
        else:
            reply = answer(verb, request)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


SSH_VERBS = (*VERBS, "logs", "serve")


def from_ssh(original: str | None) -> list[str]:
    """The verb and request a pinned key asked for (authorized_keys command=, via sudo).

    Anything but "VERB [ONE-JSON-OBJECT]" with a known verb is refused: the key can do
    nothing else (no shell, no other program).
    """
    import shlex

    try:
        words = shlex.split(original or "")
    except ValueError:
        words = []
    if not words or words[0] not in SSH_VERBS or len(words) > 2:
        raise RequestError(f"this key runs only the meso node command ({', '.join(SSH_VERBS)})")
    return words


def main(argv: list[str]) -> int:
    if argv == ["--ssh"]:
        try:
            argv = from_ssh(os.environ.get("SSH_ORIGINAL_COMMAND"))
        except RequestError as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))
            return 2
    if argv == ["serve"]:
        return serve()
    if not argv or len(argv) > 2:
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": f"usage: nodecmd VERB [REQUEST] ({sorted(VERBS)}, logs, serve)",
                }
            )
        )
        return 2
    try:
        request = json.loads(argv[1]) if len(argv) == 2 else {}
        if not isinstance(request, dict):
            raise ValueError
    except ValueError:
        print(json.dumps({"ok": False, "error": "REQUEST must be one JSON object"}))
        return 2
    if argv[0] == "logs":
        try:
            logs(request)
        except RequestError as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))
            return 2
    reply = answer(argv[0], request)
    print(json.dumps(reply))
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
