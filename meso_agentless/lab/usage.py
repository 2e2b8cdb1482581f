"""What each lab host costs this machine: the memory and CPU of its processes, its own disk.

A host is its nspawn (or qemu) process and everything under it. Here the containers stay in the
cgroup of whoever started them (`--keep-unit --register=no`), so no cgroup holds one host's
memory: it is added up from its processes, as RSS (what they map) and PSS (their fair share of
pages shared with other hosts, such as the image's libraries under every overlay).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from meso_agentless.lab import processes
from meso_agentless.lab.paths import LabPaths

PROC = Path("/proc")


@dataclass(frozen=True)
class HostUsage:
    name: str
    processes: int  # 0: the host is not running
    rss: int  # bytes
    pss: int  # bytes
    disk: int  # bytes in the host's own overlay layer (what it wrote over the shared image)
    cpu: float  # seconds of CPU its processes (and the children they reaped) used so far


def smaps_totals(text: str) -> tuple[int, int]:
    """(Rss, Pss) in bytes from /proc/PID/smaps_rollup."""
    found = {"Rss:": 0, "Pss:": 0}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] in found and fields[2] == "kB":
            found[fields[0]] = int(fields[1]) * 1024
    return found["Rss:"], found["Pss:"]


def stat_cpu_ticks(text: str) -> int:
    """Clock ticks of CPU from /proc/PID/stat: user and system, the process's own and those of
    the children it reaped (so a host's short-lived commands are counted too)."""
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime


def cpu_of(pids: Iterable[int]) -> float:
    """Seconds of CPU used by the processes that still exist (see stat_cpu_ticks)."""
    ticks = 0
    for pid in pids:
        try:
            ticks += stat_cpu_ticks((PROC / str(pid) / "stat").read_text())
        except OSError:
            continue  # ended meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """Seconds of CPU used by `pid` and every process under it (a controller, say)."""
    return cpu_of(descendants(pid, {p: parent for p, parent, _ in processes.process_table()}))


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process under it, from a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def memory_of(pids: Iterable[int]) -> tuple[int, int, int]:
    """(processes, RSS, PSS) of the processes that still exist."""
    count = rss = pss = 0
    for pid in pids:
        try:
            text = (PROC / str(pid) / "smaps_rollup").read_text()
        except OSError:
            continue  # ended meanwhile, or a kernel thread
        r, p = smaps_totals(text)
        count, rss, pss = count + 1, rss + r, pss + p
    return count, rss, pss


def disk_usage(top: Path) -> int:
    """Bytes allocated to `top` and everything under it (as du counts them), no links followed;
    0 if it does not exist."""
    files = [top] if not top.is_dir() else []
    for directory, _dirs, names in os.walk(top):
        files += [Path(directory, name) for name in names]
    total = 0
    for path in files:
        try:
            total += path.lstat().st_blocks * 512
        except OSError:
            continue  # removed meanwhile, or never there
    return total


def lab_usage(name: str, hosts: Iterable[str]) -> list[HostUsage]:
    """Each host's memory, disk and CPU so far; a stopped host counts no processes."""
    paths = LabPaths.of(name)
    parents = {pid: parent for pid, parent, _name in processes.process_table()}

    def one(host: str) -> HostUsage:
        record = processes.ProcessRecord.load(paths.host(host) / "pid")
        alive = record is not None and record.alive()
        pids = descendants(record.pid, parents) if alive and record else set()
        count, rss, pss = memory_of(pids)
        own = (paths.host(host) / "upper", paths.host(host) / "disk.img")  # nspawn, vm
        return HostUsage(host, count, rss, pss, sum(map(disk_usage, own)), cpu_of(pids))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, hosts))


def cpu_by_command(name: str, host: str) -> dict[tuple[int, str], tuple[float, float]]:
    """One host's processes so far: (pid, command name, PID 1 of the host marked "(PID 1)") ->
    (seconds of CPU of its own, of the children it reaped). A task's processes are reaped by
    the host's PID 1 (systemd), a command's helpers (systemctl) by the command."""
    record = processes.ProcessRecord.load(LabPaths.of(name).host(host) / "pid")
    if record is None or not record.alive():
        return {}
    table = {pid: (parent, command) for pid, parent, command in processes.process_table()}
    out = {}
    for pid in descendants(record.pid, {p: parent for p, (parent, _) in table.items()}):
        try:
            fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent, command = table[pid]
        label = f"{command} (PID 1)" if parent == record.pid else command
        ticks = os.sysconf("SC_CLK_TCK")
        out[(pid, label)] = (sum(map(int, fields[11:13])) / ticks,
                             sum(map(int, fields[13:15])) / ticks)  # fmt: skip
    return out


def cpu_split(
    before: Mapping[tuple[int, str], tuple[float, float]],
    after: Mapping[tuple[int, str], tuple[float, float]],
) -> dict[str, float]:
    """Seconds of CPU between two cpu_by_command() readings, by command name (the children a
    command reaped under "NAME children"), largest first; processes that came and went in
    between are counted by whoever reaped them."""
    spent: dict[str, float] = {}
    for (pid, label), (own, children) in after.items():
        own0, children0 = before.get((pid, label), (0.0, 0.0))
        for what, seconds in ((label, own - own0), (f"{label} children", children - children0)):
            if seconds > 0:
                spent[what] = spent.get(what, 0.0) + seconds
    return dict(sorted(spent.items(), key=lambda item: -item[1]))
