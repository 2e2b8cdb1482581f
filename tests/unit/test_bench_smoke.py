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


def quick_run(bench: str) -> list[str]:
    """What `bench/BENCH --quick` prints, line by line."""
    argv = [sys.executable, str(Path(__file__).parents[2] / "bench" / bench), "--quick"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          check=True).stdout.splitlines()  # fmt: skip


def test_quick_scale_benchmark_prints_its_figures():
    lines = quick_run("scale_bench.py")
    assert [line.split()[0] for line in lines] == ["submit", "fill", "round", "daemon", "daemon",
                                                   "daemon", "restart", "memory"]  # fmt: skip
    assert "us CPU per host-second" in lines[2] and "reconciled in" in lines[6]
    assert "threads:" in lines[3] and "rounds:" in lines[4] and "us CPU a sample" in lines[4]
    assert "forked:" in lines[5] and "in their own process" in lines[5]
    assert "KB per host" in lines[7] and "B per task" in lines[7]
    assert ", 0 not running after it" in lines[6]


def test_quick_connections_benchmark_prints_its_figures():
    lines = quick_run("connections_bench.py")
    assert [line.split()[0] for line in lines] == ["connect", "threads", "memory", "round"]
    assert "handshakes/s" in lines[0] and "per connection" in lines[1]
    assert "KB RSS" in lines[2] and "and back in" in lines[3]


def test_quick_kept_state_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--kept"], capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    (line,) = done.stdout.splitlines()
    assert line.startswith("kept") and "placements fed back" in line and "from scratch" in line


def test_the_allocator_benchmark_runs_its_cycles_untimed_for_callgrind():
    done = subprocess.run([sys.executable, str(BENCH), "--untimed", "cycle", "--cycles", "1"],
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    assert done.stdout == ""  # the counts are callgrind's
