"""The execution benchmark still runs on a lab (its figures are read, not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.lab.paths import LabPaths
from tests.conftest import LAB

pytestmark = pytest.mark.lab

BENCH = Path(__file__).parents[2] / "bench" / "execution_bench.py"


def test_execution_benchmark_prints_its_figures(meso_lab):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--inventory", str(meso_lab.inventory), "--quick"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    sampling = [line for line in lines if line.startswith("sampling 3 hosts:")]
    assert len(sampling) == 5
    assert any("floor: JSON line echoed, 3 pipelined" in line for line in sampling)
    assert any("meso sample, warm, pipelined" in line for line in sampling)
    launch = next(i for i, line in enumerate(lines) if line.startswith(f"launch on {LAB}-1"))
    assert "x" in lines[launch + 1] and "meso's argv" in lines[launch + 2]
    assert "launch(), D-Bus" in lines[launch + 3] and "launch(), systemd-run" in lines[launch + 4]
    cpu = [line for line in lines if line.startswith("host CPU per launch")]
    assert len(cpu) == 5 and all("PID 1" in line for line in cpu)
    forget = [line for line in lines if line.startswith(f"forget 5 ended units on {LAB}-1")]
    assert len(forget) == 2 and all("host CPU" in line for line in forget)
    assert any(line.startswith("meso hosts -o json, embedded, cold") for line in lines)
    sandbox = [line for line in lines if line.startswith(f"host CPU per unit of `true` on {LAB}-1")]
    assert len(sandbox) == 6 and "none" in sandbox[0] and "meso's argv" in sandbox[-1]


CONTROLLER_BENCH = Path(__file__).parents[2] / "bench" / "controller_bench.py"


def test_controller_benchmark_prints_its_figures(meso_lab):
    done = subprocess.run(
        [sys.executable, str(CONTROLLER_BENCH), "--inventory", str(meso_lab.inventory), "--quick"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    figures = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert figures == [
        "meso hosts -o json, through the controller",
        "  (python starting and importing click alone",
        "meso hosts -o json, embedded (samples hosts)", "ansible all -m setup", "meso --help",
        "meso run of one 2-3 s task, through the controller, less its sleep", "GET /v1/hosts, warm "
        "connection, 50 requests", "controller CPU at idle, 3 hosts sampled every 1 s, over 3 s",
    ]  # fmt: skip


SCALE_BENCH = Path(__file__).parents[2] / "bench" / "lab_scale_bench.py"


def test_lab_scale_benchmark_prints_its_figures():
    lab = f"{LAB[:6]}s"  # its own lab, beside the session's
    done = subprocess.run([sys.executable, str(SCALE_BENCH), "--quick", "--lab", lab],
                          capture_output=True, text=True, timeout=900, check=True)  # fmt: skip
    every = done.stdout.splitlines()
    lines = [line for line in every if not line.startswith("  ")]  # the figures, not the splits
    splits = [line.strip().split(":")[0] for line in every if line.startswith("  ")]
    assert splits == ["sample, no units", "launch", "first sample after 10 ends",
                      "sample, 10 ended units", "forget",
                      "the hosts' CPU per task by process, sampling included"]  # fmt: skip
    assert "systemd (PID 1)" in done.stdout
    assert [line.split(",")[0] for line in lines[:7]] == [
        "lab up", "memory per host", "warm sample round", "CPU of one host (" + lab + "-1)",
        "batch job of 20 tasks through meso run (controller)", "CPU per task of that job (launch",
        "memory per host"]  # fmt: skip
    assert "the controller's" in lines[2].split("CPU a round")[1]
    assert "sample with 10 ended units" in lines[3]
    assert "launches/s" in lines[4] and "(meso run exit 0)" in lines[4]
    assert "tasks/s per core" in lines[5]
    tools = [line.split(":", 1)[1].split("  ")[0].strip() for line in lines[7:]]
    assert tools == ["meso run (controller, warm)", "ansible all -m command",
                     "fabric ThreadingGroup", "pyinfra exec"]  # fmt: skip
    assert all(line.startswith("`uname -r` on 3 hosts:") and "x meso" in line
               for line in lines[7:])  # fmt: skip
    assert not LabPaths.of(lab).root.exists()  # taken down afterwards
