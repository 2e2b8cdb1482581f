"""Simulator speed: a mesos-paper trace of about 100,000 tasks replayed on 1,000 hosts, shared
and statically partitioned, through the real allocator. Prints one line per run: tasks, hosts,
cycles, simulated hours and wall seconds (the target: <= 30 s for 100,000 tasks on 1,000 hosts).
Run: PYTHONPATH=. .venv/bin/python bench/sim_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import time

from meso_agentless.core.model import Framework, Host
from meso_agentless.sim.events import simulate
from meso_agentless.sim.generate import HOST_CPUS, HOST_MEM, mesos_paper, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (50 hosts)")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=4500, help="seconds of arrivals")
    args = parser.parse_args()
    hosts, duration = (50, 600) if args.quick else (args.hosts, args.duration)
    rows = mesos_paper(params(7, hosts, {"duration": str(duration)}))
    tasks = sum(r.count for r in rows)
    cluster = [Host(f"node{i:05d}", {"cpus": HOST_CPUS * 1000, "mem": HOST_MEM})
               for i in range(hosts)]  # fmt: skip
    frameworks = [Framework(name) for name in ("hadoop", "spark", "mpi", "web")]
    for mode in ("shared", "static"):
        started = time.perf_counter()
        run = simulate(rows, cluster, frameworks, mode=mode)
        wall = time.perf_counter() - started
        print(f"{mode} {tasks} tasks on {hosts} hosts: {run.cycles} cycles, "
              f"{(run.end_ms - run.start_ms) / 3_600_000:.2f} simulated hours, "
              f"{wall:.1f} s wall, {tasks / wall:,.0f} tasks/s")  # fmt: skip


if __name__ == "__main__":
    main()
