"""The controller as a service, side by side in one run on lab hosts (root).

- `meso hosts -o json` as a whole process: through a running controller, embedded (samples every
  host itself), and `ansible all -m setup`. Target: <= 0.1 s through the controller.
- `meso --help` as a whole process. Target: <= 0.15 s.
- `meso run` of a job of one 2-3 s task through the controller, as a whole process, less the
  task's sleep: how soon its end is seen (sampled every 1 s, and at once when the host's watch
  says it ended) and reported. Target: <= one interval and a process start (1.5 s). And how
  long after the task ended its end was reported (the unit's start in its host's journal, plus
  its sleep).
- `GET /v1/hosts` on a warm HTTP connection (httpx), p50 and p99. Target: p99 <= 10 ms.
- The controller's own CPU at idle, every host sampled every second, over --idle seconds.
  Target: <= 3% of one core.

Run as root: .venv/bin/python bench/controller_bench.py [--inventory PATH] [--rounds N] [--no-watch]
(`--quick`: one round, 50 requests, 3 s idle: the suite's smoke run)
(without --inventory it starts a 3-host lab named "bench" and takes it down afterwards)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from meso_agentless.hosts import ssh
from meso_agentless.inventory import Node, load_inventory
from meso_agentless.lab import cluster
from meso_agentless.testing.controller import running_controller

BIN = Path(sys.executable).parent
MESO, ANSIBLE = str(BIN / "meso"), str(BIN / "ansible")


def timed(argv: list[str], env: dict[str, str], rounds: int) -> float:
    """Median wall time of running argv `rounds` times (after one warm-up run)."""
    return side_by_side([argv], env, rounds)[0]


def side_by_side(commands: list[list[str]], env: dict[str, str], rounds: int) -> list[float]:
    """Median wall time of each command, run in turns (one of each per round, after a warm-up
    round), so that the machine's ups and downs fall on all of them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for i in range(rounds + 1):
        for argv, spent in zip(commands, times, strict=True):
            started = time.perf_counter()
            # no timeout: with one, subprocess polls for the end, adding up to 50 ms to each run
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)  # fmt: skip
            if i:
                spent.append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def run_and_end(job: Path, env: dict[str, str], inventory: str, rounds: int) -> tuple[float, float]:
    """Medians over `rounds` of `meso run --again JOB` (one task sleeping 2 s and a different
    tenth of a second each round, so that its end falls anywhere between two samples) less
    its sleep, and of how long after the task ended its "finished" line came: the end is when
    its host's systemd logged the unit "Started" (journal, same clock: lab hosts share this
    kernel) plus its sleep."""
    nodes = {n.name: n for n in load_inventory(inventory).nodes}
    walls, ends = [], []
    for i in range(rounds):
        sleep = 2 + (i * 3 % 10) / 10
        job.write_text(f"job: quick\ntasks:\n  - name: t\n    command: [sleep, '{sleep}']\n"
                       "    resources: {cpus: 0.1, mem: 32MiB}\n")  # fmt: skip
        started = time.perf_counter()
        process = subprocess.Popen([MESO, "run", "--again", str(job)], env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        finished, placed = None, None
        for line in process.stderr:  # type: ignore[union-attr]
            if ": finished" in line:
                finished = time.time()
            placed = placed or re.search(r"\[0\] placed on (\S+) \(attempt (\d+)\)", line)
        if process.wait() != 0 or finished is None or placed is None:
            raise SystemExit(f"meso run {job} failed (exit {process.returncode})")
        walls.append(time.perf_counter() - started - sleep)
        host, attempt = placed.groups()
        ends.append(finished - unit_started(nodes[host], f"meso-quick_t_0_{attempt}") - sleep)
    return statistics.median(walls), statistics.median(ends)


def unit_started(node: Node, unit: str) -> float:
    """When systemd on the host last logged that it started `unit` (Unix seconds)."""
    client = ssh.connect(node.address, user=node.user, port=node.port,
                         key_file=Path(node.key_file) if node.key_file else None,
                         known_hosts=node.known_hosts_path())  # fmt: skip
    try:
        out = ssh.run_argv(client, ["journalctl", "-o", "short-unix", "--no-pager", "-u", unit],
                           timeout=30).stdout  # fmt: skip
    finally:
        client.close()
    # the last start: an earlier run of the bench on this lab started a unit of the same name
    return float([line.split()[0] for line in out.splitlines() if " Started " in line][-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(
    inventory: str, rounds: int, requests: int, idle: float, out: Callable, watch: bool = True
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    extra = [] if watch else ["--no-watch"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_controller(inventory, Path(tmp), *extra) as ctl,
    ):
        remote = {**base, **ctl.env}  # a client needs nothing but the address and token
        embedded = {**base, "MESO_INVENTORY": inventory, "MESO_STATE": f"{tmp}/embedded.db"}
        floor, hosts_remote = side_by_side(
            [[sys.executable, "-c", "import click, json, socket"], [MESO, "hosts", "-o", "json"]],
            remote, rounds,
        )  # fmt: skip
        hosts_embedded = timed([MESO, "hosts", "-o", "json"], embedded, rounds)
        setup = timed([ANSIBLE, "all", "-i", inventory, "-m", "ansible.builtin.setup"], base,
                      max(1, rounds // 3))  # fmt: skip
        help_time = timed([MESO, "--help"], base, rounds)
        job = Path(tmp) / "quick.yaml"
        quick_run, end_seen = run_and_end(job, remote, inventory, rounds)
        out(f"meso hosts -o json, through the controller:   {hosts_remote * 1000:7.1f} ms "
            f"(target <= 100 ms)")  # fmt: skip
        out(f"  (python starting and importing click alone:   {floor * 1000:7.1f} ms)")
        out(f"meso hosts -o json, embedded (samples hosts): {hosts_embedded * 1000:7.1f} ms "
            f"({hosts_embedded / hosts_remote:.1f}x)")  # fmt: skip
        out(f"ansible all -m setup:                         {setup * 1000:7.1f} ms "
            f"({setup / hosts_remote:.1f}x)")  # fmt: skip
        out(f"meso --help:                                  {help_time * 1000:7.1f} ms "
            f"(target <= 150 ms)")  # fmt: skip
        out(f"meso run of one 2-3 s task, through the controller, less its sleep: "
            f"{quick_run * 1000:7.1f} ms (target <= 1500 ms); its end seen "
            f"{end_seen * 1000:.0f} ms after it ended")  # fmt: skip
        with httpx.Client(base_url=ctl.url, headers=ctl.headers) as http:
            http.get("/v1/hosts").raise_for_status()
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                http.get("/v1/hosts").raise_for_status()
                latencies.append(time.perf_counter() - started)
        out(f"GET /v1/hosts, warm connection, {requests} requests: "
            f"p50 {percentile(latencies, 50) * 1000:.2f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.2f} ms (target p99 <= 10 ms)")  # fmt: skip
        time.sleep(2)  # let the requests' own work settle
        before, started = cpu_seconds(ctl.process.pid), time.monotonic()
        time.sleep(idle)
        used = (cpu_seconds(ctl.process.pid) - before) / (time.monotonic() - started)
        hosts = len(httpx.get(f"{ctl.url}/v1/hosts", headers=ctl.headers).json()["hosts"])
        out(f"controller CPU at idle, {hosts} hosts sampled every 1 s, over {idle:.0f} s: "
            f"{used * 100:.2f}% of one core (target <= 3%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="one round, 50 requests, 3 s idle")
    parser.add_argument("--no-watch", dest="watch", action="store_false",
                        help="the controller without watches")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.idle = 1, 50, 3.0

    def out(line: str) -> None:
        print(line, flush=True)

    if args.inventory:
        run(args.inventory, args.rounds, args.requests, args.idle, out, args.watch)
        return
    layout = cluster.up("bench", 3, "nspawn", 2, 4096, progress=lambda _m: None)
    try:
        run(str(cluster.LabPaths.of(layout.name).inventory), args.rounds, args.requests,
            args.idle, out, args.watch)  # fmt: skip
    finally:
        cluster.down("bench", progress=lambda _m: None)


if __name__ == "__main__":
    main()
