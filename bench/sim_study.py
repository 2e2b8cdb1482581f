"""The shared-vs-static study of issue 16: mesos-paper traces on 96 simulated hosts
(bench/sim/hosts-96.yml), the default mix and a few others, shared and statically partitioned.
Prints one markdown table row per scenario; writes the default scenario's plots.
Run: PYTHONPATH=. .venv/bin/python bench/sim_study.py [--plots docs/sim]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meso_agentless.controller.planning import declared_hosts
from meso_agentless.core.model import Framework
from meso_agentless.inventory import load_inventory
from meso_agentless.sim.events import simulate
from meso_agentless.sim.generate import mesos_paper, params
from meso_agentless.sim.report import summarize

INVENTORY = Path(__file__).parent / "sim" / "hosts-96.yml"
SCENARIOS = {  # name -> generator parameters (the rest are the defaults)
    "default (load 0.7, burst 0.8, mix 4:3:3, web 0.1)": {},
    "steady arrivals (burst 0)": {"burst": "0"},
    "strong waves (burst 1)": {"burst": "1"},
    "light load (load 0.4)": {"load": "0.4"},
    "heavy load (load 0.95)": {"load": "0.95"},
    "mostly hadoop (mix 8:1:1)": {"mix": "8:1:1"},
    "bigger web service (web 0.2)": {"web": "0.2"},
    "weights sized to the load (28:21:21:10)": {},
}
WEIGHTS = {  # scenario -> framework weights instead of the inventory's (equal) ones
    "weights sized to the load (28:21:21:10)": {"hadoop": 28, "spark": 21, "mpi": 21, "web": 10},
}
FRAMEWORKS = ("hadoop", "spark", "mpi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plots", help="directory for the default scenario's plots")
    parser.add_argument("--seeds", default="7", help="comma-separated seeds (default 7)")
    args = parser.parse_args()
    cluster = load_inventory(str(INVENTORY))
    hosts = declared_hosts(cluster)
    print("| scenario | seed | cpu util shared / static (x) | mem util shared / static | "
          "makespan shared / static (shorter) | p95 completion s shared / static: "
          + ", ".join(FRAMEWORKS) + " | never placed (static) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n, (name, raw) in enumerate(SCENARIOS.items()):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows = mesos_paper(params(seed, len(hosts), raw))
            frameworks = cluster.frameworks
            if name in WEIGHTS:
                frameworks = [Framework(f, w) for f, w in WEIGHTS[name].items()]
            runs = {m: simulate(rows, hosts, frameworks, mode=m) for m in ("shared", "static")}
            s, t = (summarize(runs[m]) for m in ("shared", "static"))
            cpu = (s["utilization"]["cpus"]["mean"], t["utilization"]["cpus"]["mean"])
            mem = (s["utilization"]["mem"]["mean"], t["utilization"]["mem"]["mean"])
            span = (s["makespan_s"], t["makespan_s"])
            p95 = ", ".join(
                f"{s['frameworks'][f]['completion_s']['p95']:g} / "
                f"{t['frameworks'][f]['completion_s']['p95']:g}"
                for f in FRAMEWORKS
            )
            unplaced = sum(u["instances"] for u in t["unplaced"])
            print(f"| {name} | {seed} | {cpu[0]:.1%} / {cpu[1]:.1%} ({cpu[0] / cpu[1]:.2f}x) | "
                  f"{mem[0]:.1%} / {mem[1]:.1%} | {span[0]:g} s / {span[1]:g} s "
                  f"({1 - span[0] / span[1]:.0%}) | {p95} | {unplaced} |", flush=True)  # fmt: skip
            if args.plots and n == 0 and seed == int(args.seeds.split(",")[0]):
                from meso_agentless.sim.plot import plot

                plot(runs, args.plots, "mesos-paper, 96 hosts, seed 7")


if __name__ == "__main__":
    main()
