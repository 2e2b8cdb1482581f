#!/usr/bin/env python3
"""meso node command: what the controller asks of a host, answered as one JSON object.

Runs on the host, with nothing but the Python standard library. Verbs:
    sample    cpus, memory, disk, load, boot id, cgroup and systemd versions, meso units

Each fact is read by a small function and parsed by a pure one (parse_*), which the package's
tests check against fixtures of real output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

UNIT_PREFIX = "meso-"
UNIT_PROPERTIES = ("Id", "ActiveState", "SubState", "CPUQuotaPerSecUSec", "MemoryMax", "TasksMax")
TIMEOUT = 20


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


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return done.stdout


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def meso_units() -> list[dict]:
    listed = _run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                   "--type=service", f"{UNIT_PREFIX}*"])  # fmt: skip
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    if not names:
        return []
    shown = _run(["systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPERTIES), *names])
    return [unit_limits(props) for props in parse_show(shown)]


def sample() -> dict:
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
        "cgroup": parse_cgroup_mode(_read("/proc/mounts")),
        "systemd": parse_systemd_version(_run(["systemctl", "--version"])),
        "units": meso_units(),
    }


VERBS = {"sample": sample}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in VERBS:
        print(json.dumps({"error": f"usage: nodecmd {{{'|'.join(VERBS)}}}"}))
        return 2
    try:
        print(json.dumps(VERBS[argv[0]]()))
    except Exception as exc:  # one JSON error line, never a traceback on the wire
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
