"""Build (or reuse) a wheelhouse of a package and all its dependencies, on the machine running
Ansible, so that a host that cannot reach the package index installs with `pip --no-index`.

    python wheelhouse.py --package PACKAGE --cache DIR [--force] [--keep N] [-- PIP_ARGS...]

PACKAGE is what `pip wheel` takes: a requirement (`meso-agentless==0.1.0`), a wheel or sdist
file, or a directory holding a project (a checkout). Wheels are built by the Python running this
script (`python -m pip wheel`), so they fit hosts of the same Python minor version and platform.

A build is cached in DIR/KEY, where KEY hashes what is built: the requirement as written, or the
bytes of the file, or every file of the directory (hidden files and directories, `__pycache__`,
`*.egg-info` and top-level `build/` and `dist/` left out; in a git work tree, only files git does
not ignore), together with this Python's version, the platform and PIP_ARGS. A directory is built
from a copy of exactly the files hashed, so the wheel never holds anything the key did not see
(setuptools otherwise reuses a stale build/ in the checkout). So the wheelhouse is rebuilt when
the package changes, and only then (or with --force; an unpinned requirement never changes: pin
it, or pass --force to pick up a new release).

DIR/KEY also holds wheels.tar, the same wheels in one archive (sent to a host in one transfer).
Prints one JSON object on stdout: {"changed", "key", "dir", "archive", "wheels", "python"};
pip's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

SKIPPED_NAMES = frozenset({"__pycache__", "node_modules"})
SKIPPED_TOP = frozenset({"build", "dist"})
ARCHIVE = "wheels.tar"


def skipped(relative: str) -> bool:
    """A path (relative, with /) that never goes into a build."""
    parts = relative.split("/")
    return (
        parts[0] in SKIPPED_TOP
        or any(p.startswith(".") or p in SKIPPED_NAMES or p.endswith(".egg-info") for p in parts)
    )  # fmt: skip


def git_files(root: Path) -> list[str] | None:
    """Files git tracks or would track (not ignored) under root; None outside a git work tree."""
    if shutil.which("git") is None:
        return None
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        return None
    return [name for name in listed.stdout.decode().split("\0") if name]


def walked_files(root: Path) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        relative_dir = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirs[:] = [d for d in dirs if not skipped(prefix + d)]
        found.extend(prefix + name for name in files)
        # os.walk lists a symlink to a directory among the directories and does not follow it
        found.extend(prefix + d for d in dirs if Path(directory, d).is_symlink())
    return found


def project_files(root: Path) -> list[str]:
    """The files of a project directory that go into its build, sorted."""
    listed = git_files(root)
    names = walked_files(root) if listed is None else listed
    # a tracked file deleted from the work tree is gone from the build too
    return sorted(n for n in set(names) if not skipped(n) and is_file_or_link(root / n))


def is_file_or_link(path: Path) -> bool:
    """A regular file or a symlink (to anything, even nothing); not a directory (a submodule)."""
    return path.is_symlink() or path.is_file()


def tree_digest(root: Path, names: Iterable[str]) -> str:
    """Hash of the files' names and contents; a symlink counts by its target, never followed
    (a checkout may link to files outside it that change or do not exist)."""
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        if path.is_symlink():
            content = b"symlink:" + os.readlink(path).encode()
        else:
            content = b"file:" + hashlib.sha256(path.read_bytes()).digest()
            if os.access(path, os.X_OK):
                content += b":x"
        digest.update(name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def source_of(package: str) -> dict:
    """What identifies the package's content: a directory's files, a file's bytes, or the
    requirement string itself."""
    path = Path(package).expanduser()
    if path.is_dir():
        root = path.resolve()
        return {"directory": str(root), "files": tree_digest(root, project_files(root))}
    if path.is_file():
        return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"requirement": package}


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def build_key(package: str, pip_args: Sequence[str]) -> str:
    identity = {
        "source": source_of(package),
        "python": python_tag(),
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "pip_args": list(pip_args),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def copy_project(root: Path, names: Iterable[str], into: Path) -> None:
    """Copy exactly the listed files (symlinks as symlinks) to a fresh directory."""
    for name in names:
        source, target = root / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def pip_wheel(package: str, pip_args: Sequence[str], wheel_dir: Path, scratch: Path) -> None:
    path = Path(package).expanduser()
    target = package
    if path.is_dir():
        root = path.resolve()
        copy = scratch / "src" / root.name
        copy_project(root, project_files(root), copy)
        target = str(copy)
    argv = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheel_dir), *pip_args, target]
    done = subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wheelhouse: pip wheel {package} failed (exit {done.returncode})")


def prune(cache: Path, keep: int, current: Path) -> None:
    """Keep the `keep` most recently used builds (the current one always)."""
    builds = sorted(
        (d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in [b for b in builds if b != current][max(keep - 1, 0) :]:
        shutil.rmtree(old, ignore_errors=True)


def wheelhouse(package: str, cache: Path, pip_args: Sequence[str], force: bool, keep: int) -> dict:
    """Build into the cache unless it holds this key already; one run at a time per cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return locked_wheelhouse(package, cache, pip_args, force, keep)


def locked_wheelhouse(
    package: str, cache: Path, pip_args: Sequence[str], force: bool, keep: int
) -> dict:
    key = build_key(package, pip_args)
    built = cache / key
    changed = force or not built.is_dir()
    if changed:
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as scratch:
            wheel_dir = Path(scratch) / "wheels"
            wheel_dir.mkdir()
            pip_wheel(package, pip_args, wheel_dir, Path(scratch))
            if not any(wheel_dir.glob("*.whl")):
                raise SystemExit(f"wheelhouse: pip wheel {package} made no wheels")
            shutil.rmtree(built, ignore_errors=True)
            wheel_dir.rename(built)  # complete or absent, never half-built
    wheels = sorted(p.name for p in built.glob("*.whl"))
    archive = built / ARCHIVE
    if not archive.exists():
        write_archive(built, wheels, archive)
    os.utime(built)  # most recently used
    prune(cache, keep, built)
    return {
        "changed": changed,
        "key": key,
        "dir": str(built),
        "archive": str(archive),
        "wheels": wheels,
        "python": python_tag(),
    }


def write_archive(directory: Path, wheels: Sequence[str], archive: Path) -> None:
    """The wheels in one uncompressed tar (they are zips already), to send in one transfer;
    the same wheels make the same bytes (no times, no owners)."""

    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
        return info

    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in wheels:
            tar.add(directory / name, arcname=name, filter=plain)
    partial.rename(archive)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--package", required=True, help="a requirement, a file or a directory")
    parser.add_argument("--cache", required=True, type=Path, help="where builds are kept")
    parser.add_argument("--force", action="store_true", help="build again even if cached")
    parser.add_argument("--keep", type=int, default=3, help="builds to keep (default 3)")
    parser.add_argument("pip_args", nargs="*", help="more arguments for pip wheel (after --)")
    args = parser.parse_args(argv)
    result = wheelhouse(args.package, args.cache.expanduser(), args.pip_args, args.force, args.keep)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
