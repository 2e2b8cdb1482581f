"""Mounts the lab makes (overlayfs per host) and how to find and remove them."""

from __future__ import annotations

from pathlib import Path

from meso_agentless.lab.system import run


def mount_points() -> list[Path]:
    """Every mount point on this machine, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            # field 5 is the mount point, with spaces and such escaped as octal
            raw = line.split()[4]
            points.append(Path(raw.encode().decode("unicode_escape")))
    return points


def unmount_under(top: Path) -> None:
    """Unmount everything at or below `top`, deepest first."""
    top = top.resolve()
    below = [p for p in mount_points() if p == top or top in p.parents]
    for point in sorted(set(below), key=lambda p: len(p.parts), reverse=True):
        run(["umount", "--lazy", str(point)], check=False)


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    for folder in (upper, work, merged):
        folder.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
