"""Refusals: not root, a missing system tool, a bad flag. One line, non-zero exit, nothing made."""

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab

MESO = [sys.executable, "-m", "meso_agentless"]


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def assert_one_line_error(done, *needles):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_not_root_is_refused_with_one_line():
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    env = {**os.environ, "MESO_LAB_ROOT": "/nonexistent/meso-lab"}
    done = run([*nobody, *MESO, "lab", "up", "--lab", "mroot"], env=env)
    assert_one_line_error(done, "must run as root", "sudo")
    assert not os.path.exists("/nonexistent/meso-lab")


@pytest.mark.parametrize(
    ("tool", "package", "flags"),
    [
        ("debootstrap", "debootstrap", []),
        ("systemd-nspawn", "systemd-container", []),
        ("qemu-system-x86_64", "qemu-system-x86", ["--vm"]),
    ],
)
def test_a_missing_tool_is_named_with_its_debian_package(tmp_path, tool, package, flags):
    """A PATH holding every tool the lab uses but one."""
    for other in ("ip", "mount", "umount", "chroot", "debootstrap", "systemd-nspawn", "mkfs.ext4",
                  "qemu-system-x86_64", "ssh"):  # fmt: skip
        if other != tool:
            (tmp_path / other).symlink_to(shutil.which(other))
    env = {**os.environ, "PATH": str(tmp_path)}
    done = run([*MESO, "lab", "up", "--lab", "mtool", *flags], env=env)
    assert_one_line_error(done, f"{tool} not found", f"apt-get install {package}")
    assert not os.path.exists("/var/lib/meso-lab/mtool")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["up", "--lab", "Bad-Name"], ["lab name 'Bad-Name' is invalid"]),
        (["up", "--lab", "mflag", "--hosts", "0"], ["--hosts"]),
        (["status", "--lab", "mnone"], ["lab 'mnone' is not up"]),
        (["ssh", "--lab", "mnone", "mnone-1"], ["lab 'mnone' is not up"]),
    ],
)
def test_bad_flags_and_unknown_labs_get_one_line(argv, needles):
    done = run([*MESO, "lab", *argv])
    assert_one_line_error(done, *needles)


def test_unknown_host_is_named(meso_lab):
    done = run([*MESO, "lab", "ssh", "--lab", meso_lab.name, "nosuch-9", "true"])
    assert_one_line_error(done, f"host 'nosuch-9' is not in lab '{meso_lab.name}'")
    assert done.returncode == 2
