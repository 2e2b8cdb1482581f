"""A handle on a running lab for tests: run commands on its hosts, cut and heal them.

Use it from pytest through the fixtures in `meso_agentless.testing.pytest_plugin`, or directly:

    with running_lab("mytest", hosts=3) as lab:
        lab.run("mytest-1", ["systemctl", "is-system-running"])
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from meso_agentless.hosts import ssh
from meso_agentless.lab import cluster, processes
from meso_agentless.lab.hostfiles import LAB_MARK_FILE
from meso_agentless.lab.layout import HostLayout, LabLayout, Mode
from meso_agentless.lab.paths import LabPaths


@dataclass
class LabHandle:
    """A lab that is up, with one cached SSH connection per host."""

    layout: LabLayout
    _clients: dict[str, paramiko.SSHClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def hosts(self) -> tuple[HostLayout, ...]:
        return self.layout.hosts

    @property
    def paths(self) -> LabPaths:
        return LabPaths.of(self.name)

    @property
    def inventory(self) -> Path:
        return self.paths.inventory

    def connect(self, host: str, timeout: float = 5.0) -> paramiko.SSHClient:
        """A new connection to `host` as root, its host key checked against the lab's file."""
        return ssh.connect(
            self.layout.host(host).address,
            user="root",
            key_file=self.paths.key,
            known_hosts=self.paths.known_hosts,
            timeout=timeout,
        )

    def run(self, host: str, argv: list[str], timeout: float = 30.0) -> ssh.CommandResult:
        """Run argv on `host` over a cached connection (reconnecting if it dropped)."""
        with self._lock:
            client = self._clients.get(host)
            transport = client.get_transport() if client else None
            if transport is None or not transport.is_active():
                client = self._clients[host] = self.connect(host)
        return ssh.run_argv(client, argv, timeout=timeout)

    def restart(self, host: str) -> None:
        """Power-cycle `host` (a new boot; transient units gone)."""
        self.drop_connection(host)
        cluster.restart(self.name, host, progress=lambda _msg: None)

    def cut(self, host: str) -> None:
        self.drop_connection(host)
        cluster.set_connected(self.name, host, False)

    def heal(self, host: str) -> None:
        cluster.set_connected(self.name, host, True)

    @contextmanager
    def cut_off(self, host: str) -> Iterator[None]:
        """Within the block, `host` is off the network; healed afterwards, whatever happens."""
        self.cut(host)
        try:
            yield
        finally:
            self.heal(host)

    def reset_ssh(self, host: str) -> int:
        """Kill every SSH session process of `host` (SIGKILL, from this machine, by pid), as a
        network reset would: each connection to it drops at once, mid-request or not; sshd
        itself (its listener) goes on, so new connections work. Nspawn hosts only. Returns
        how many processes were killed."""
        init = self._init_pid(host)
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        killed = 0
        for pid, ppid, comm in processes.process_table():
            if comm != "sshd" or ppid == init:  # the listener is the one systemd started
                continue
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != namespace:
                    continue
                os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                continue  # it ended meanwhile
            killed += 1
        self.drop_connection(host)  # ours was one of them
        return killed

    def _init_pid(self, host: str) -> int:
        """This machine's pid of the host's PID 1 (its container's init)."""
        for pid in processes.container_inits(LAB_MARK_FILE, self.name):
            try:
                with open(f"/proc/{pid}/root/etc/hostname") as f:
                    if f.read().strip() == host:
                        return pid
            except OSError:
                continue
        raise LookupError(f"{host}: no running container of lab {self.name!r}")

    def drop_connection(self, host: str) -> None:
        with self._lock:
            client = self._clients.pop(host, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for host in list(self._clients):
            self.drop_connection(host)


@contextmanager
def running_lab(
    name: str,
    hosts: int = 3,
    mode: Mode = "nspawn",
    cpus: int = 2,
    mem_mib: int = 4096,
    numa: int = 1,
) -> Iterator[LabHandle]:
    """Bring a lab up for the block and take it down afterwards."""
    layout = cluster.up(name, hosts, mode, cpus, mem_mib, progress=lambda _msg: None, numa=numa)
    handle = LabHandle(layout)
    try:
        yield handle
    finally:
        handle.close()
        cluster.down(name, progress=lambda _msg: None)
