"""Issue 11's reliability scenarios with the full counts, on a 5-host nspawn lab (root).

The same scenarios as tests/reliability (meso_agentless.testing.reliability), with:

- SIGKILL at 100 random points during launches of 64-task jobs (75 of the controller, 25 of an
  embedded `meso run`);
- 50 SSH resets (host-side sshd session processes killed) during 500 launches;
- 10 short cuts (time to unreachable, back to up), then one host of five cut for 120 s with a
  3-instance service and a batch job running;
- one host cut before a run (embedded, through the controller, and just before);
- the controller cut from 3 of 5 hosts for 120 s;
- a host rebooted under its tasks, 5 times;
- `meso status`/`meso hosts` looping during 5 + 5 runs of 100 tasks;
- a health check failing briefly then for good; a host drained under a service and a batch job.

Each prints its figures, the checks that failed and their evidence. Exit 0 if every check
passed, 1 otherwise.

Run as root: .venv/bin/python bench/reliability_bench.py [--lab NAME] [--only SCENARIO ...]
[--seed N] [--workdir DIR]. Without --lab it starts a 5-host lab named "rbench" and takes it
down afterwards; with --lab it uses that running lab (5 hosts).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from meso_agentless.lab import cluster
from meso_agentless.testing import reliability as rel
from meso_agentless.testing.lab import LabHandle, running_lab


def scenarios(seed: int) -> dict[str, Callable[[LabHandle, Path], rel.Result]]:
    return {
        "sigkill": lambda lab, d: rel.sigkill_mid_launch(lab, d, points=75, embedded_points=25,
                                                         seed=seed),
        "resets": lambda lab, d: rel.ssh_resets(lab, d, launches=500, resets=50, seed=seed),
        "cut": lambda lab, d: rel.cut_one_host(lab, d, cut_seconds=120, probes=10, seed=seed),
        "cut-before-run": lambda lab, d: rel.cut_before_run(lab, d, run_timeout=60),
        "partition": lambda lab, d: rel.controller_partitioned(lab, d, hold=120),
        **{f"reboot-{i}": (lambda lab, d: rel.reboot_host(lab, d)) for i in range(1, 6)},
        "readers": lambda lab, d: rel.readers_during_runs(lab, d, runs=5, tasks=100),
        "health-drain": lambda lab, d: rel.health_and_drain(lab, d),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", help="a running 5-host lab to use (default: start 'rbench')")
    parser.add_argument("--only", nargs="+", metavar="SCENARIO",
                        help="run these only (sigkill resets cut cut-before-run partition "
                        "reboot-1..reboot-5 readers health-drain; 'reboot' means all five)",
                        )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    chosen = scenarios(seed)
    if args.only:
        wanted = {n for o in args.only for n in chosen if n == o or n.startswith(f"{o}-")}
        unknown = [o for o in args.only if not any(n == o or n.startswith(f"{o}-") for n in chosen)]
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(unknown)}")
        chosen = {n: f for n, f in chosen.items() if n in wanted}
    print(f"seed {seed}", flush=True)
    with ExitStack() as stack:
        if args.lab:
            lab = LabHandle(cluster.require_lab(args.lab))
            stack.callback(lab.close)
        else:
            lab = stack.enter_context(running_lab("rbench", hosts=5))
        if len(lab.hosts) != 5:
            parser.error(f"lab {lab.name!r} has {len(lab.hosts)} hosts, not 5")
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        failed = []
        for name, scenario in chosen.items():
            started = time.monotonic()
            result = scenario(lab, workdir / name)
            result.figure("scenario took, s", time.monotonic() - started)
            print(f"[{name}] {result.report()}\n", flush=True)
            if not result.passed:
                failed.append(name)
    print(f"{len(chosen) - len(failed)} of {len(chosen)} scenarios passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
