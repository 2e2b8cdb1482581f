"""Bring a lab up, report on it, cut and heal its hosts, and take it down without leftovers."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paramiko

from meso_agentless.hosts import ssh
from meso_agentless.lab import mounts, network, processes
from meso_agentless.lab.aptproxy import PORT as APT_PROXY_PORT
from meso_agentless.lab.hostfiles import LAB_MARK_FILE, HostFile, host_files
from meso_agentless.lab.images import Image, ensure_image, recipe_for
from meso_agentless.lab.inventory import render_inventory
from meso_agentless.lab.keys import known_hosts_line, new_keypair
from meso_agentless.lab.layout import HostLayout, LabLayout, Mode, choose_subnet, plan_lab
from meso_agentless.lab.paths import LabPaths, accel, cache_root, labs_root
from meso_agentless.lab.system import (
    NSPAWN_TOOLS,
    VM_TOOLS,
    LabError,
    ensure_kernel_limits,
    require_root,
    require_tools,
    run,
)

Progress = Callable[[str], None]
READY_STATES = ("running", "degraded")
NOLOGIN = "/run/nologin"  # while it exists, pam_nologin lets no user but root log in
NOLOGIN_GRACE = 5.0  # seconds a booted host may refuse users before it is given a hand
USER_SESSIONS = "systemd-user-sessions.service"  # what removes NOLOGIN at the end of boot
BOOT_TIMEOUT = {"nspawn": 90.0, "vm": 300.0}


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    process: str  # running / stopped
    network: str  # connected / cut
    systemd: str  # what `systemctl is-system-running` says, or why it could not be asked


def load(name: str) -> LabLayout | None:
    """The layout of lab `name` as `up` recorded it, or None; LabError (one line) if its state
    file cannot be read as one (`down` needs none of it: it finds what is on the machine)."""
    path = LabPaths.of(name).state
    try:
        return LabLayout.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise LabError(f"lab {name!r}: its state file {path} is unreadable ({why}); "
                       f"run 'meso lab down --lab {name}'") from None  # fmt: skip


def require_lab(name: str) -> LabLayout:
    lab = load(name)
    if lab is None:
        raise LabError(f"lab {name!r} is not up: run 'meso lab up' first")
    return lab


@contextmanager
def _locked(name: str) -> Iterator[None]:
    locks = labs_root() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(
    name: str, count: int, mode: Mode, cpus: int, mem_mib: int, progress: Progress, numa: int = 1
) -> LabLayout:
    """Start a lab of `count` hosts; harmless when the same lab is already up."""
    require_root()
    require_tools(VM_TOOLS if mode == "vm" else NSPAWN_TOOLS)
    with _locked(name):
        current = load(name)
        if current is not None and all(_host_process_alive(name, h) for h in current.hosts):
            if (len(current.hosts), current.mode) != (count, mode):
                raise LabError(
                    f"lab {name!r} is already up with {len(current.hosts)} {current.mode} hosts; "
                    f"run 'meso lab down' first to change it"
                )
            _wait_all_ready(current, progress)
            progress(f"lab {name!r} is already up")
            return current
        _teardown(name, progress)  # the remains of an earlier lab whose processes are gone
        ensure_kernel_limits(progress)
        image = ensure_image(cache_root(), recipe_for(mode == "vm"), progress)
        taken = network.routed_networks()
        taken += [lab.network for lab in _other_labs(name)]
        lab = plan_lab(name, count, choose_subnet(taken), mode, cpus, mem_mib, numa)
        try:
            _create(lab, image, progress)
        except BaseException:
            progress("start failed: cleaning up")
            _teardown(name, progress)
            raise
        return lab


def down(name: str, progress: Progress) -> None:
    """Stop every host of the lab and remove its processes, mounts, namespaces, links and files."""
    require_root()
    require_tools(("ip", "umount"))
    with _locked(name):
        _teardown(name, progress)


def restart(name: str, host_name: str, progress: Progress) -> None:
    """Power-cycle one host: its processes end, it boots again (a new boot identity) with its
    disk as it was; transient units do not survive, as on a real server."""
    require_root()
    with _locked(name):
        lab = require_lab(name)
        host = lab.host(host_name)
        host_dir = LabPaths.of(name).host(host.name)
        record = processes.ProcessRecord.load(host_dir / "pid")
        if record is not None and record.alive():
            processes.stop([record.pid], grace=15.0)
        for pid in processes.container_inits(LAB_MARK_FILE, name):
            if Path(f"/proc/{pid}/root/etc/hostname").read_text().strip() == host.name:
                processes.stop([pid], grace=0.0)
        image = ensure_image(cache_root(), recipe_for(lab.mode == "vm"), progress)
        _start(lab, host, image, host_dir)
        _wait_ready(lab, LabPaths.of(name), host, time.monotonic() + BOOT_TIMEOUT[lab.mode],
                    progress)  # fmt: skip
        progress(f"{host.name} restarted")


def set_connected(name: str, host_name: str, connected: bool) -> None:
    require_root()
    lab = require_lab(name)
    network.set_connected(lab, lab.host(host_name), connected)


def status(name: str) -> tuple[LabLayout, list[HostStatus]]:
    require_root()
    lab = require_lab(name)
    paths = LabPaths.of(name)

    def one(host: HostLayout) -> HostStatus:
        alive = _host_process_alive(name, host)
        connected = network.is_connected(host)
        state = "-"
        if alive and connected:
            try:
                state = _systemd_state(paths, host, timeout=5.0)
            except ssh.SSHError as exc:
                state = f"unreachable ({exc})"
        return HostStatus(
            host.name,
            host.address,
            "running" if alive else "stopped",
            "connected" if connected else "cut",
            state,
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        return lab, list(pool.map(one, lab.hosts))


def ssh_argv(name: str, host_name: str, command: list[str]) -> list[str]:
    """The ssh command line that logs into a lab host with strict host key checking."""
    lab = require_lab(name)
    host = lab.host(host_name)
    paths = LabPaths.of(name)
    return [
        "ssh",
        "-i", str(paths.key),
        "-o", f"UserKnownHostsFile={paths.known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes" if command else "BatchMode=no",
        f"root@{host.address}",
        *command,
    ]  # fmt: skip


# -- creating ------------------------------------------------------------------------------------


def _create(lab: LabLayout, image: Image, progress: Progress) -> None:
    paths = LabPaths.of(lab.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    login = new_keypair(f"meso-lab-{lab.name}")
    _write(paths.key, login.private_openssh, 0o600)
    _write(paths.key.with_suffix(".pub"), (login.public_openssh + "\n").encode(), 0o644)

    network.create_bridge(lab)
    known = []
    for host in lab.hosts:
        host_key = new_keypair(f"root@{host.name}")
        known.append(known_hosts_line([host.name, host.address], host_key.public_openssh))
        files = host_files(
            lab,
            host,
            machine_id=uuid.uuid4().hex,
            host_key_private=host_key.private_openssh,
            host_key_public=host_key.public_openssh,
            authorized_key=login.public_openssh,
        )
        network.create_host_network(lab, host)
        _prepare_root(paths.host(host.name), image, files)
    _write(paths.known_hosts, "".join(known).encode(), 0o644)
    paths.state.write_text(json.dumps(lab.to_dict(), indent=2))

    if lab.mode == "vm":
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda h: _make_disk(paths.host(h.name)), lab.hosts))
    _start_apt_proxy(lab, paths)
    progress(f"starting {_hosts(len(lab.hosts))} ({lab.mode}) on {lab.subnet}")
    for host in lab.hosts:
        _start(lab, host, image, paths.host(host.name))
    _wait_all_ready(lab, progress)
    paths.inventory.write_text(render_inventory(lab, paths.key, paths.known_hosts))
    progress(f"lab {lab.name!r} is up; inventory: {paths.inventory}")


def _start_apt_proxy(lab: LabLayout, paths: LabPaths) -> None:
    """The hosts' only way out: HTTP to the Debian mirror, for apt (see lab/aptproxy.py)."""
    mirror = urlsplit(recipe_for(False).mirror).hostname or "deb.debian.org"
    argv = [sys.executable, "-m", "meso_agentless.lab.aptproxy", lab.gateway, str(APT_PROXY_PORT),
            f"{paths.root}/", mirror, "deb.debian.org", "security.debian.org"]  # fmt: skip
    record = processes.spawn(argv, paths.root / "aptproxy.log")
    (paths.root / "aptproxy.pid").write_text(record.dump())


def _prepare_root(host_dir: Path, image: Image, files: list[HostFile]) -> None:
    """An overlay of the shared image with this host's own files written on top."""
    merged = host_dir / "root"
    mounts.mount_overlay(image.root, host_dir / "upper", host_dir / "work", merged)
    for item in files:
        target = merged / item.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if target.exists() or target.is_symlink():
            target.unlink()
        _write(target, item.content, item.mode)


def _make_disk(host_dir: Path) -> None:
    """A VM's disk: an ext4 image made from its overlay, which is then no longer needed."""
    disk = host_dir / "disk.img"
    run(["mkfs.ext4", "-q", "-F", "-L", "meso-root", "-d", str(host_dir / "root"), str(disk), "4G"],
        timeout=600)  # fmt: skip
    mounts.unmount_under(host_dir / "root")


def _start(lab: LabLayout, host: HostLayout, image: Image, host_dir: Path) -> None:
    if lab.mode == "vm":
        argv = [
            "ip", "netns", "exec", host.netns,
            "qemu-system-x86_64",
            "-name", host.name,
            "-accel", accel(),
            "-m", str(lab.mem_mib), "-smp", str(lab.cpus),
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet",
            "-drive", f"file={host_dir / 'disk.img'},if=virtio,format=raw",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
            "-nodefaults", "-display", "none", "-serial", f"file:{host_dir / 'console.log'}",
            *numa_argv(lab.cpus, lab.mem_mib, lab.numa),
        ]  # fmt: skip
    else:
        argv = [
            "systemd-nspawn",
            "--directory", str(host_dir / "root"),
            "--machine", host.name,
            "--boot", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{host.netns}",
            "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
        ]  # fmt: skip
    record = processes.spawn(argv, host_dir / "process.log")
    (host_dir / "pid").write_text(record.dump())


def numa_argv(cpus: int, mem_mib: int, nodes: int) -> list[str]:
    """QEMU's arguments for a guest whose CPUs and memory are split evenly over `nodes` NUMA
    nodes (none for one)."""
    if nodes <= 1:
        return []
    per_cpu, per_mem = cpus // nodes, mem_mib // nodes
    argv = []
    for n in range(nodes):
        first = n * per_cpu
        argv += [
            "-object",
            f"memory-backend-ram,id=numa{n},size={per_mem}M",
            "-numa",
            f"node,nodeid={n},cpus={first}-{first + per_cpu - 1},memdev=numa{n}",
        ]
    return argv


def _wait_all_ready(lab: LabLayout, progress: Progress) -> None:
    paths = LabPaths.of(lab.name)
    deadline = time.monotonic() + BOOT_TIMEOUT[lab.mode]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda h: _wait_ready(lab, paths, h, deadline, progress), lab.hosts))
    progress(
        f"{_hosts(len(lab.hosts))} up, answering over SSH ({time.monotonic() - started:.1f} s)"
    )


def _wait_ready(
    lab: LabLayout, paths: LabPaths, host: HostLayout, deadline: float,
    progress: Progress | None = None,
) -> None:  # fmt: skip
    """Until systemd in the host says running or degraded and users other than root may log
    in, over SSH with its real host key. A boot that ended with /run/nologin still there (seen
    under load, the host degraded) gets systemd-user-sessions restarted once (its start removes
    the file), after NOLOGIN_GRACE seconds, and says so."""
    last, refused_since, nudged = "no answer", None, False
    while time.monotonic() < deadline:
        if not _host_process_alive(lab.name, host):
            raise LabError(f"{host.name} stopped while booting: {_log_tail(paths, host)}")
        try:
            last = _systemd_state(paths, host, timeout=max(1.0, deadline - time.monotonic()))
            if last in READY_STATES:
                return
            if NOLOGIN not in last:
                refused_since = None
            elif refused_since is None:
                refused_since = time.monotonic()
            elif not nudged and time.monotonic() - refused_since >= NOLOGIN_GRACE:
                nudged = True
                _run_on(paths, host, ["systemctl", "restart", USER_SESSIONS], timeout=10.0)
                if progress:
                    progress(f"{host.name}: boot ended with users refused ({last}); "
                             f"restarted {USER_SESSIONS}")  # fmt: skip
        except ssh.SSHError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise LabError(
        f"{host.name} did not come up within {BOOT_TIMEOUT[lab.mode]:.0f} s: {last}; "
        f"see {paths.host(host.name)}"
    )


def _systemd_state(paths: LabPaths, host: HostLayout, timeout: float) -> str:
    """What `systemctl is-system-running --wait` says, with a note when the host still refuses
    users other than root (pam_nologin: /run/nologin, gone once boot lets users in): a host
    is not up for the least-privileged key until it lets that user in."""
    client = _root_client(paths, host, timeout)
    try:
        argv = ["systemctl", "is-system-running", "--wait"]
        state = ssh.run_argv(client, argv, timeout=timeout).stdout.strip()
        if state in READY_STATES and ssh.run_argv(client, ["test", "-e", NOLOGIN], timeout).ok:
            listed = ssh.run_argv(client, ["systemctl", "--failed", "--plain", "--no-legend"],
                                  timeout).stdout  # fmt: skip
            failed = [line.split()[0] for line in listed.splitlines() if line.strip()]
            return (f"{state}, but users other than root are refused ({NOLOGIN}; failed units: "
                    f"{', '.join(failed) or 'none'})")  # fmt: skip
        return state
    finally:
        client.close()


def _run_on(paths: LabPaths, host: HostLayout, argv: list[str], timeout: float) -> None:
    client = _root_client(paths, host, timeout)
    try:
        ssh.run_argv(client, argv, timeout=timeout)
    finally:
        client.close()


def _root_client(paths: LabPaths, host: HostLayout, timeout: float) -> paramiko.SSHClient:
    """A connection to the host as root, with the lab's key and the host's real key."""
    return ssh.connect(host.address, user="root", key_file=paths.key,
                       known_hosts=paths.known_hosts, timeout=min(timeout, 5.0))  # fmt: skip


def _log_tail(paths: LabPaths, host: HostLayout) -> str:
    for log in ("console.log", "process.log"):
        try:
            lines = (paths.host(host.name) / log).read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        if lines:
            return lines[-1]
    return "no output"


def _host_process_alive(name: str, host: HostLayout) -> bool:
    record = processes.ProcessRecord.load(LabPaths.of(name).host(host.name) / "pid")
    return record is not None and record.alive()


def _other_labs(name: str) -> list[LabLayout]:
    root = labs_root()
    if not root.exists():
        return []
    others = [p.name for p in root.iterdir() if p.is_dir() and p.name not in (name, ".locks")]
    return [lab for lab in map(load, others) if lab is not None]


def _hosts(n: int) -> str:
    return f"{n} host" if n == 1 else f"{n} hosts"


def _write(path: Path, content: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.chmod(path, mode)


# -- tearing down --------------------------------------------------------------------------------


def _teardown(name: str, progress: Progress) -> None:
    """Remove everything of lab `name` that exists, found on the machine rather than trusted."""
    paths = LabPaths.of(name)
    pids = processes.processes_mentioning(f"{paths.root}/")
    if pids:
        progress(f"stopping {len(pids)} host processes")
        processes.stop(pids, grace=15.0)
    proxies = processes.processes_mentioning(f"{paths.root}/", ("python",))
    processes.stop(proxies, grace=2.0)
    orphans = processes.container_inits(LAB_MARK_FILE, name)
    if orphans:
        progress(f"stopping {len(orphans)} orphaned containers")
        processes.stop(orphans, grace=0.0)
    mounts.unmount_under(paths.root)
    network.remove_lab_network(name)
    for leftover in Path("/run/systemd/nspawn/propagate").glob(f"{name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if paths.root.exists():
        shutil.rmtree(paths.root)
