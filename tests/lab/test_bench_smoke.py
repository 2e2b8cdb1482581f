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
    assert lines[-1].startswith("meso hosts -o json, embedded, cold")
