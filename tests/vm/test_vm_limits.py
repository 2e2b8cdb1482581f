"""A QEMU lab host has its own kernel with cgroup v2, so systemd's limits are enforced for real."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import VM_LAB

pytestmark = pytest.mark.vm

HOST = f"{VM_LAB}-1"


def wait_inactive(lab, unit: str, timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = lab.run(HOST, ["systemctl", "show", "-p", "ActiveState,Result,MemoryMax", unit])
        props = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
        if props.get("ActiveState") in ("inactive", "failed"):
            return props
        time.sleep(0.5)
    raise AssertionError(f"{unit} still active after {timeout} s")


def test_the_guest_runs_its_own_kernel_with_cgroup_v2(meso_vm_lab):
    fs = meso_vm_lab.run(HOST, ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).stdout.strip()
    assert fs == "cgroup2fs"
    assert meso_vm_lab.run(HOST, ["uname", "-r"]).stdout.strip() != os.uname().release
    state = meso_vm_lab.run(HOST, ["systemctl", "is-system-running"]).stdout.strip()
    assert state in ("running", "degraded")


def test_memory_max_kills_a_task_that_allocates_past_it(meso_vm_lab):
    unit = "meso-oomcheck"
    start = meso_vm_lab.run(HOST, [
        "systemd-run", "--unit", unit, "-p", "MemoryMax=64M", "-p", "MemorySwapMax=0",
        "-p", "RemainAfterExit=yes",
        "python3", "-c", "b = bytearray(200 * 1024 * 1024); import time; time.sleep(5)",
    ])  # fmt: skip
    assert start.ok, start.stderr
    props = wait_inactive(meso_vm_lab, unit)
    assert props["Result"] == "oom-kill"
    assert props["MemoryMax"] == str(64 * 1024 * 1024)


def test_cpu_quota_holds_a_busy_loop(meso_vm_lab):
    unit = "meso-cpucheck"
    start = meso_vm_lab.run(HOST, [
        "systemd-run", "--unit", unit, "-p", "CPUQuota=25%",
        "python3", "-c", "while True: pass",
    ])  # fmt: skip
    assert start.ok, start.stderr
    probe = (
        "import subprocess, time\n"
        "def used():\n"
        f"    out = subprocess.run(['systemctl', 'show', '-p', 'CPUUsageNSec', '{unit}'],\n"
        "                         capture_output=True, text=True).stdout\n"
        "    return int(out.strip().split('=')[1])\n"
        "time.sleep(1)\n"
        "t0, c0 = time.monotonic(), used()\n"
        "time.sleep(5)\n"
        "t1, c1 = time.monotonic(), used()\n"
        "print((c1 - c0) / 1e9 / (t1 - t0))\n"
    )
    share = float(meso_vm_lab.run(HOST, ["python3", "-c", probe], timeout=60).stdout)
    meso_vm_lab.run(HOST, ["systemctl", "stop", unit])
    assert 0.10 < share <= 0.30, f"busy loop used {share:.0%} of a CPU under CPUQuota=25%"


def test_a_failed_up_cleans_up_after_itself(meso_vm_lab):
    """QEMU refuses a bogus accelerator after the network and disk were made: all must go."""
    env = {**os.environ, "MESO_LAB_ACCEL": "bogus"}
    done = subprocess.run(
        [sys.executable, "-m", "meso_agentless", "lab", "up", "--lab", "mbad", "--vm",
         "--hosts", "1"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "meso: error: mbad-1 stopped while booting" in done.stderr
    assert "Traceback" not in done.stderr
    netns = json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True,
                                      text=True, check=True).stdout or "[]")  # fmt: skip
    assert not [n for n in netns if n["name"].startswith("meso-mbad-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert "mb-mbad" not in links.stdout and "mv-mbad-" not in links.stdout
    assert "/var/lib/meso-lab/mbad" not in Path("/proc/self/mountinfo").read_text()
    assert not Path("/var/lib/meso-lab/mbad").exists()
