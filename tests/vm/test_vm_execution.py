"""Through the execution plane on a QEMU host, where cgroup v2 enforces limits."""

import time

import pytest

from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.inventory import load_inventory
from tests.conftest import VM_LAB

pytestmark = pytest.mark.vm


def test_a_task_over_its_memory_limit_is_reported_oom_killed(meso_vm_lab):
    plane = ExecutionPlane(load_inventory(str(meso_vm_lab.inventory)).nodes, timeout=30)
    unit = "meso-oom_task_0_1"
    hog = "b = bytearray(200 * 1024 * 1024); import time; time.sleep(30)"
    launched = plane.launch(f"{VM_LAB}-1", {"unit": unit, "argv": ["python3", "-c", hog],
                                      "mem": 64 << 20, "cpus": 500})  # fmt: skip
    assert launched["state"] in ("running", "failed")
    deadline = time.monotonic() + 120
    while (status := plane.status(f"{VM_LAB}-1", unit))["state"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert (status["state"], status["reason"]) == ("failed", "oom-killed")
    plane.forget(f"{VM_LAB}-1", unit)
    plane.close()
