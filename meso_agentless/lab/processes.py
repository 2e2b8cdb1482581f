"""The processes that are lab hosts (systemd-nspawn or qemu): start, find, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST_COMMANDS = ("systemd-nspawn", "qemu-system-x86")


@dataclass(frozen=True)
class ProcessRecord:
    """A pid with its start time, so a recycled pid is never taken for our host."""

    pid: int
    start_ticks: int

    def dump(self) -> str:
        return f"{self.pid} {self.start_ticks}\n"

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            pid, ticks = path.read_text().split()
            return cls(int(pid), int(ticks))
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks and is_live(self.pid)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces; field 22 is the start time
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_table() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process on this machine."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        yield int(entry.name), int(tail.split()[1]), head.partition("(")[2]


def spawn(argv: list[str], log: Path) -> ProcessRecord:
    """Start a host process in its own session, detached from our terminal, output to `log`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ticks = _start_ticks(proc.pid)
    return ProcessRecord(proc.pid, ticks if ticks is not None else -1)


def processes_mentioning(text: str, commands: tuple[str, ...] = HOST_COMMANDS) -> list[int]:
    """Pids of processes named like `commands` (nspawn, qemu) whose command line mentions
    `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if comm.startswith(commands) and text in cmdline.replace("\0", " "):
            found.append(int(entry.name))
    return found


def container_inits(mark_file: str, mark: str) -> list[int]:
    """Pids of container inits whose root holds `mark_file` reading `mark`.

    When systemd-nspawn dies without stopping its container (SIGKILL, a session that ended),
    the container's init goes on, orphaned; this finds it by the mark its lab wrote.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == "1":
            continue
        try:
            status = (entry / "status").read_text()
            nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspid.split()[-1] != "1":
                continue  # not the first process of its own pid namespace
            if (entry / "root" / mark_file.lstrip("/")).read_text().strip() == mark:
                found.append(int(entry.name))
        except (OSError, StopIteration):
            continue
    return found


def stop(pids: list[int], grace: float) -> None:
    """SIGTERM (nspawn then halts its container cleanly), then SIGKILL what is left."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_live(pid) for pid in pids):
        time.sleep(0.1)
        _reap(pids)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(is_live(pid) for pid in pids):
        time.sleep(0.05)
        _reap(pids)


def is_live(pid: int) -> bool:
    """The process exists and is not a zombie (this machine's init may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _reap(pids: list[int]) -> None:
    """Collect our own exited children so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
