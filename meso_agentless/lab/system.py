"""Checks and helpers for the machine the lab runs on: root, system tools, running commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from meso_agentless.errors import MesoError

# tool -> the Debian package that ships it
TOOL_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "mount": "mount",
    "umount": "mount",
    "chroot": "coreutils",
    "ssh": "openssh-client",
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "mkfs.ext4": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
}

NSPAWN_TOOLS = ("ip", "mount", "umount", "chroot", "debootstrap", "systemd-nspawn")
VM_TOOLS = (*NSPAWN_TOOLS, "mkfs.ext4", "qemu-system-x86_64")


class LabError(MesoError):
    """The lab could not do what was asked."""


def require_root(what: str = "meso lab") -> None:
    """Refuse to go on unless this process is root."""
    if os.geteuid() != 0:
        raise LabError(
            f"{what} must run as root (it creates network namespaces, mounts and containers); "
            "run it with sudo"
        )


def require_tools(tools: Iterable[str]) -> None:
    """Refuse to go on when a system tool is missing, naming the Debian package that has it."""
    for tool in tools:
        if shutil.which(tool) is None:
            package = TOOL_PACKAGES.get(tool, tool)
            raise LabError(
                f"{tool} not found on PATH: install the Debian package {package} "
                f"(apt-get install {package}, or run scripts/setup)"
            )


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120.0) -> str:
    """Run a system tool (argv list, no shell) and return its stdout; raise LabError on failure."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{argv[0]} timed out after {timeout:.0f} s: {' '.join(argv)}") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(
            f"{' '.join(argv)} failed (exit {done.returncode}): {detail[-1] if detail else ''}"
        )
    return done.stdout


# Each container's systemd takes inotify instances and watches of the machine's user root; the
# kernel's defaults (128 instances) stop a lab of about 25 hosts (or several labs) from booting.
# Raised the way kind documents for its nodes, never lowered.
KERNEL_LIMITS = {
    "fs/inotify/max_user_instances": 8192,
    "fs/inotify/max_user_watches": 524288,
}


def ensure_kernel_limits(progress: Callable[[str], None], root: Path = Path("/proc/sys")) -> None:
    """Raise the kernel limits containers need (root only); LabError in one line if it cannot."""
    for key, wanted in KERNEL_LIMITS.items():
        path = root / key
        try:
            current = int(path.read_text().split()[0])
            if current >= wanted:
                continue
            path.write_text(f"{wanted}\n")
        except (OSError, ValueError) as exc:
            name = key.replace("/", ".")
            raise LabError(f"cannot raise {name} to {wanted} ({exc}): run "
                           f"'sysctl -w {name}={wanted}' as root") from None  # fmt: skip
        progress(f"raised {key.replace('/', '.')} from {current} to {wanted}")
