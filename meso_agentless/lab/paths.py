"""Where a lab keeps its files on this machine, and the lab's settings (MESO_LAB_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def labs_root() -> Path:
    return Path(os.environ.get("MESO_LAB_ROOT", "/var/lib/meso-lab"))


def cache_root() -> Path:
    return Path(os.environ.get("MESO_LAB_CACHE", "/var/cache/meso-lab"))


def default_lab() -> str:
    return os.environ.get("MESO_LAB", "lab")


def mirror(default: str) -> str:
    """The Debian mirror lab images are built from."""
    return os.environ.get("MESO_LAB_MIRROR", default)


def accel() -> str:
    """QEMU's accelerator for VM hosts: tcg, or kvm where it works."""
    return os.environ.get("MESO_LAB_ACCEL", "tcg")


@dataclass(frozen=True)
class LabPaths:
    """The files of one lab under the labs root."""

    root: Path

    @classmethod
    def of(cls, name: str) -> LabPaths:
        return cls(labs_root() / name)

    @property
    def state(self) -> Path:
        return self.root / "lab.json"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    def host(self, name: str) -> Path:
        return self.root / "hosts" / name
