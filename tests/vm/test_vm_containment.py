"""Hostile tasks on a QEMU host (cgroup v2 enforces the limits): a fork bomb, a memory bomb and
a CPU hog are contained, and reported failed (oom-killed) or still running, never `finished`
while any of their processes is left."""

import time

import pytest

from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.inventory import load_inventory
from tests.conftest import VM_LAB

pytestmark = pytest.mark.vm

HOST = f"{VM_LAB}-1"
# The main process starts the hostile part in the background and exits 0 at once: the unit's
# main process is gone, its cgroup is not.
FORK_BOMB = """
import os, time
if os.fork() == 0:
    while True:          # every process forks for ever; the tasks limit stops them
        try:
            os.fork()
        except OSError:
            time.sleep(0.2)
"""
MEMORY_BOMB = "b = bytearray(400 * 1024 * 1024); import time; time.sleep(60)"
CPU_HOG = "while True: pass"


@pytest.fixture(scope="module")
def plane(meso_vm_lab):
    plane = ExecutionPlane(load_inventory(str(meso_vm_lab.inventory)).nodes, timeout=60)
    yield plane
    plane.close()


def shown(lab, unit: str, *props: str) -> dict[str, str]:
    out = lab.run(HOST, ["systemctl", "show", "-p", ",".join(props), unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def states_for(plane, unit: str, seconds: float, until_exited: bool = False) -> list[dict]:
    """The task's state every half second for a while (or until it ends, or, with
    `until_exited`, until its main process has exited and a few more looks)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(plane.status(HOST, unit))
        if seen[-1]["state"] in ("finished", "failed", "killed"):
            break
        exited = [s for s in seen if s["exit_code"] is not None]
        if until_exited and len(exited) >= 6:  # three seconds after its main process exited
            break
        time.sleep(0.5)
    return seen


def test_a_fork_bomb_is_held_by_its_tasks_limit_and_never_reported_finished(plane, meso_vm_lab):
    unit = "meso-forkbomb_t_0_1"
    plane.launch(HOST, {"unit": unit, "argv": ["python3", "-c", FORK_BOMB], "cpus": 200,
                        "mem": 256 << 20, "tasks_max": 48})  # fmt: skip
    seen = states_for(plane, unit, 120, until_exited=True)  # a slow (TCG) guest: be patient
    assert {s["state"] for s in seen} == {"running"}, seen[-1]
    assert seen[-1]["exit_code"] == 0  # its main process is gone; its children are not
    props = shown(meso_vm_lab, unit, "TasksCurrent", "TasksMax", "SubState")
    assert 40 <= int(props["TasksCurrent"]) <= 48 == int(props["TasksMax"]), props
    # the host still answers, and counts the bomb as holding what it was given
    held = [u for u in plane.host(HOST).request("list")["units"] if u["unit"] == unit + ".service"]
    assert held[0]["state"] == "running" and held[0]["millicpus"] == 200
    assert plane.stop(HOST, unit)["state"] == "killed"
    assert shown(meso_vm_lab, unit, "LoadState")["LoadState"] == "not-found"
    alive = meso_vm_lab.run(HOST, ["pgrep", "-f", "os.fork"]).stdout.strip()
    assert not alive, alive


def test_a_memory_bomb_is_oom_killed_and_reported_failed(plane):
    unit = "meso-membomb_t_0_1"
    argv = ["sh", "-c", f"python3 -c '{MEMORY_BOMB}' & exit 0"]  # the bomb outlives its parent
    plane.launch(HOST, {"unit": unit, "argv": argv, "cpus": 500, "mem": 64 << 20})
    seen = states_for(plane, unit, 120)
    assert all(s["state"] == "running" for s in seen[:-1]), seen
    assert (seen[-1]["state"], seen[-1]["reason"]) == ("failed", "oom-killed"), seen[-1]
    plane.forget(HOST, unit)


def test_a_cpu_hog_is_held_to_its_quota_and_stays_running(plane, meso_vm_lab):
    unit = "meso-cpuhog_t_0_1"
    argv = ["sh", "-c", f"python3 -c '{CPU_HOG}' & exit 0"]
    plane.launch(HOST, {"unit": unit, "argv": argv, "cpus": 250, "mem": 64 << 20})
    time.sleep(2)
    first = int(shown(meso_vm_lab, unit, "CPUUsageNSec")["CPUUsageNSec"])
    started = time.monotonic()
    seen = states_for(plane, unit, 6)
    used = int(shown(meso_vm_lab, unit, "CPUUsageNSec")["CPUUsageNSec"]) - first
    share = used / 1e9 / (time.monotonic() - started)
    assert {s["state"] for s in seen} == {"running"} and seen[-1]["exit_code"] == 0
    assert 0.1 < share <= 0.32, f"the hog used {share:.0%} of a CPU under a quota of 25%"
    assert plane.stop(HOST, unit)["state"] == "killed"
