"""Base root filesystems for lab hosts: built once with debootstrap, cached by their recipe."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from meso_agentless.lab import mounts, paths
from meso_agentless.lab.system import LabError, run

# Bump when customize() changes what ends up in an image: it is part of the cache key.
RECIPE_VERSION = 1
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "procps",
)
VM_PACKAGES = ("linux-image-amd64", "e2fsprogs")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """What goes into an image; its hash names the cache entry."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    kernel: bool
    version: int = RECIPE_VERSION

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        kind = "vm" if self.kernel else "base"
        return f"{self.suite}-{kind}-{hashlib.sha256(blob).hexdigest()[:12]}"


@dataclass(frozen=True)
class Image:
    """A built image: a root directory, and for VMs the kernel and initrd inside it."""

    root: Path
    recipe: Recipe

    @property
    def kernel(self) -> Path:
        return _newest(self.root / "boot", "vmlinuz-")

    @property
    def initrd(self) -> Path:
        return _newest(self.root / "boot", "initrd.img-")


def recipe_for(vm: bool) -> Recipe:
    mirror = paths.mirror(DEFAULT_MIRROR)
    packages = BASE_PACKAGES + (VM_PACKAGES if vm else ())
    return Recipe(suite="bookworm", mirror=mirror, packages=packages, kernel=vm)


def ensure_image(cache: Path, recipe: Recipe, progress: Progress) -> Image:
    """Return the cached image for `recipe`, building it first if it is not there."""
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    final = images / recipe.key
    with open(images / f"{recipe.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".meso-image.json").exists():
            return Image(final, recipe)
        building = images / f"{recipe.key}.building"
        _remove_tree(building)
        try:
            _debootstrap(recipe, building, progress)
            _customize(recipe, building)
            (building / ".meso-image.json").write_text(json.dumps(asdict(recipe), indent=2))
            building.rename(final)
        except BaseException:
            _remove_tree(building)
            raise
    return Image(final, recipe)


def _debootstrap(recipe: Recipe, target: Path, progress: Progress) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(target),
        recipe.mirror,
    ]
    started = time.monotonic()
    progress(f"building the lab's {recipe.key} image with debootstrap (once; it is cached)")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: list[str] = []
    for line in proc.stdout or ():
        line = line.rstrip()
        tail = [*tail[-9:], line]
        if line.startswith("I: "):
            progress(f"debootstrap: {line[3:]}")
    if proc.wait() != 0:
        raise LabError(
            f"debootstrap failed (exit {proc.returncode}) after "
            f"{time.monotonic() - started:.0f} s: {tail[-1] if tail else ''}"
        )
    progress(f"base image built in {time.monotonic() - started:.0f} s")


def _customize(recipe: Recipe, root: Path) -> None:
    """Make the image neutral: every host gets its own host key and machine id at creation."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    if recipe.kernel:
        run(["chroot", str(root), "systemctl", "enable", "systemd-networkd"])


def _newest(folder: Path, prefix: str) -> Path:
    found = sorted(folder.glob(f"{prefix}*"))
    if not found:
        raise LabError(f"no {prefix}* in {folder}: the VM image has no kernel")
    return found[-1]


def _remove_tree(path: Path) -> None:
    """Remove a half-built image, unmounting what debootstrap may have left mounted in it."""
    if path.exists():
        mounts.unmount_under(path)
        shutil.rmtree(path, ignore_errors=False)
