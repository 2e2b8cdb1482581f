"""Cron jobs' fire-time jitter on a 5-host nspawn lab (root), through a real `meso controller`.

`--jobs` cron jobs every `--every` seconds for `--seconds`; then, for each finished run, how
late the task itself started after its scheduled time (the run prints its own start time to
its journal, read with `meso logs JOB --run UNIT`) and when the host's node command began the
firing. Prints p50, p95 and max of both, and the runs per scheduled time (must be 1).

Run as root: .venv/bin/python bench/cron_bench.py [--lab NAME] [--jobs 3] [--every 5]
[--seconds 60]. Without --lab it starts a 5-host lab "cronbench" and takes it down afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from meso_agentless.lab import cluster
from meso_agentless.testing.controller import running_controller
from meso_agentless.testing.lab import LabHandle, running_lab

MESO = [sys.executable, "-m", "meso_agentless"]
COMMAND = '["/bin/sh", "-c", "echo start $(date +%s.%N)"]'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(lab: LabHandle, workdir: Path, jobs: int, every: int, seconds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    with running_controller(lab.inventory, workdir / "ctl") as ctl:
        env.update(ctl.env)
        names = [f"bench{i}" for i in range(jobs)]
        for name in names:
            path = workdir / f"{name}.yaml"
            path.write_text(f'job: {name}\ntype: cron\nschedule: "*:*:0/{every}"\ntasks:\n'
                            f"  - name: t\n    command: {COMMAND}\n"
                            "    resources: {cpus: 0.1, mem: 32MiB}\n")  # fmt: skip
            subprocess.run([*MESO, "run", str(path)], env=env, check=True, capture_output=True)
        time.sleep(seconds + 5)
        started, fired, per_time = [], [], Counter()
        for name in names:
            view = httpx.get(f"{ctl.url}/v1/jobs/{name}", headers=ctl.headers, timeout=30).json()
            for run in view["runs"]:
                if run["state"] != "finished" or run["kind"] != "schedule":
                    continue
                per_time[(name, run["scheduled"])] += 1
                fired.append(run["fired"] - run["scheduled"])
                log = subprocess.run([*MESO, "logs", name, "--run", run["unit"]], env=env,
                                     capture_output=True, text=True, check=False)  # fmt: skip
                words = log.stdout.split()
                if len(words) >= 2 and words[0] == "start":
                    started.append(float(words[1]) - run["scheduled"])
            subprocess.run([*MESO, "kill", name], env=env, check=False, capture_output=True)
    return {
        "runs": len(started),
        "task_start_after_schedule_s": {"p50": round(percentile(started, 0.5), 3),
                                        "p95": round(percentile(started, 0.95), 3),
                                        "max": round(max(started), 3),
                                        "mean": round(statistics.fmean(started), 3)},
        "node_fire_after_schedule_s": {"p50": round(percentile(fired, 0.5), 3),
                                       "p95": round(percentile(fired, 0.95), 3),
                                       "max": round(max(fired), 3)},
        "runs_per_scheduled_time_max": max(per_time.values()),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", help="a running 5-host lab to use (default: start 'cronbench')")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--every", type=int, default=5, help="seconds between fire times")
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.lab:
            lab = LabHandle(cluster.require_lab(args.lab))
            stack.callback(lab.close)
        else:
            lab = stack.enter_context(running_lab("cronbench", hosts=5))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        figures = measure(lab, workdir, args.jobs, args.every, args.seconds)
    print(json.dumps(figures, indent=1))
    return 0 if figures["runs_per_scheduled_time_max"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
