"""The execution benchmark still runs on a lab (its figures are read, not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LAB

pytestmark = pytest.mark.lab

BENCH = Path(__file__).parents[2] / "bench" / "execution_bench.py"


def test_execution_benchmark_prints_its_figures(meso_lab):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--inventory", str(meso_lab.inventory), "--launches", "10"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert sum(line.startswith("sampling 3 hosts:") for line in lines) == 5
    assert any("ansible all -m setup" in line for line in lines)
    assert lines[-2].startswith(f"launch on {LAB}-1") and "x bare" in lines[-1]
