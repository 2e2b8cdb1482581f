"""The allocator benchmark still runs (its figures are read by people, not asserted here)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "allocator_bench.py"


def test_quick_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["cycle", "plain", "fair", "fill", "memory"]
    assert "ms per cycle" in lines[0] and "placements/s" in lines[3] and "B per task" in lines[4]
    assert "x plain" in lines[2] and "revocations" in lines[2]


SIM_BENCH = Path(__file__).parents[2] / "bench" / "sim_bench.py"


def test_quick_simulator_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(SIM_BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["shared", "static"]
    assert all("tasks on 50 hosts" in line and "s wall" in line for line in lines)


SCALE_BENCH = Path(__file__).parents[2] / "bench" / "scale_bench.py"


def test_quick_scale_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(SCALE_BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["submit", "fill", "round", "restart", "memory"]
    assert "us CPU per host-second" in lines[2] and "reconciled in" in lines[3]
    assert "KB per host" in lines[4] and "B per task" in lines[4]
    assert ", 0 not running after it" in lines[3]


CONNECTIONS_BENCH = Path(__file__).parents[2] / "bench" / "connections_bench.py"


def test_quick_connections_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(CONNECTIONS_BENCH), "--quick"],
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["connect", "threads", "memory", "round"]
    assert "handshakes/s" in lines[0] and "per connection" in lines[1]
    assert "KB RSS" in lines[2] and "and back in" in lines[3]
