"""The controller at scale, on simulated hosts (meso_agentless.testing.simfleet): the real loop,
store and allocator against thousands of in-process fake hosts, fake clock, real SQLite.

For each fleet size (--hosts), with --per-host tasks on every host (jobs of --job-size tasks):
- submit: from submitting the first job to all its tasks placed and launched (cycles, wall time),
  then the rest of the jobs until every host holds --per-host tasks;
- round: one sample round of every host (Fleet.refresh) and one controller cycle, steady state
  (nothing changes): wall time, and the controller's CPU (process CPU less what the fake hosts
  spent answering) per host per second at a 1 s interval. Target: 10,000 hosts on one core
  (<= 100 us per host-second);
- daemon: what the long-running controller runs (Fleet.start: one sampler thread asking every
  answering host in a round each interval) against what it ran before (a thread per host, each
  sampling its host every interval), side by side on the same hosts for --daemon-seconds of
  real time at a 1 s interval: threads used, samples per host-second (1.0: every host every
  interval), and the CPU of a sample, everything the fleet runs included (process CPU less the
  fake hosts', over the samples taken): a host's CPU per second at a 1 s interval; beside it
  the fake hosts' own CPU a sample and the process's CPU a second (the fake hosts answer in
  the same process, under the same GIL: a round fits in the interval only while both fit in
  the one core the process gets); and `forked`: the same rounds with the hosts answering from
  a process of their own (testing.forked), so the process's CPU is the controller's alone;
- restart: a new controller on the same store and hosts, its first round (sample every host,
  reconcile every task with what the hosts run). Target: <= 5 s for 100,000 tasks;
- memory (tracemalloc, Python heap): what a new controller holds after its first round, on the
  empty fleet (per host, target <= 50 KB) and on the full one (per task, target <= 1 KB), and
  the peak of that round.

Run: .venv/bin/python bench/scale_bench.py [--hosts 1000 10000] [--per-host 10] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import Fleet
from meso_agentless.hosts.plane import Plane
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster
from meso_agentless.testing.forked import forked
from meso_agentless.testing.simfleet import SimPlane, sim_cluster


def batch_job(name: str, count: int) -> Job:
    return Job.model_validate({
        "job": name, "type": "batch",
        "tasks": [{"name": "t", "count": count, "command": ["sleep", "86400"],
                   "resources": {"cpus": 1, "mem": "1GiB"}}],
    })  # fmt: skip


def running(cluster: FakeCluster) -> int:
    return sum(1 for _ in cluster.plane.running())


def until_running(cluster: FakeCluster, target: int, limit: int = 60) -> int:
    """Cycles (each a sample round and a controller cycle, 1 s apart) until `target` run."""
    for cycles in range(1, limit + 1):
        cluster.step()
        if running(cluster) >= target:
            return cycles
    raise RuntimeError(f"only {running(cluster)} of {target} tasks running after {limit} cycles")


class Spent:
    """Wall time and the controller's CPU time (the process's, less the fake hosts') of a span:
    on a busy machine the CPU time is the figure to read."""

    def __init__(self, plane: SimPlane) -> None:
        self.plane = plane

    def __enter__(self) -> Spent:
        self.wall, self.cpu = time.perf_counter(), time.process_time() - self.plane.cpu_seconds
        self.fake = self.plane.cpu_seconds
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.plane.cpu_seconds - self.cpu
        self.fake = self.plane.cpu_seconds - self.fake  # the fake hosts' own

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s ({self.cpu:6.2f} s CPU)"


def per_host_threads(fleet: Fleet, stopping: threading.Event) -> list[threading.Thread]:
    """Before rounds: a thread per host, each sampling its host every interval."""

    def watch(host: str) -> None:
        while not stopping.is_set():
            start = time.monotonic()
            fleet.sample_one(host)
            stopping.wait(max(0.0, start + fleet.interval - time.monotonic()))

    threads = [threading.Thread(target=watch, args=(h,), daemon=True) for h in fleet.plane.hosts]
    for thread in threads:
        thread.start()
    return threads


def sampling(plane: SimPlane, mode: str, seconds: float, interval: float) -> str:
    """`seconds` of a fleet sampling every host every `interval` in `mode` (rounds, as
    Fleet.start; threads, one a host; or forked: rounds, the hosts answering from a process of
    their own): threads, samples and CPU per host-second."""
    if mode == "forked":
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with forked(plane) as remote:
            line = _sampling(plane, remote, "forked", seconds, interval)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return line.replace(
            " the fake hosts' own   0 us a sample",
            f" the fake hosts' {child / seconds:4.2f} s a second in their own process",
        )
    return _sampling(plane, plane, mode, seconds, interval)


def _sampling(plane: SimPlane, asked: Plane, mode: str, seconds: float, interval: float) -> str:
    fleet = Fleet(asked, SystemClock(), interval=interval)
    samples = [0]
    fleet.sampled = lambda _s, _ok: samples.__setitem__(0, samples[0] + 1)  # one thread each
    before, peak, stopping = threading.active_count(), [0], threading.Event()

    def count_threads() -> None:
        while not stopping.wait(interval / 10):
            peak[0] = max(peak[0], threading.active_count() - before - 1)

    counter = threading.Thread(target=count_threads, daemon=True)
    counter.start()
    with Spent(plane) as spent:
        if mode in ("rounds", "forked"):
            fleet.start()
            time.sleep(seconds)
            fleet.stop()
        else:
            threads = per_host_threads(fleet, stopping)
            time.sleep(seconds)
            stopping.set()
            for thread in threads:
                thread.join()
    stopping.set()
    counter.join()
    per_sample = spent.cpu / max(1, samples[0])
    fake = spent.fake / max(1, samples[0])
    return (
        f"{mode + ':':8} {peak[0]:6} threads, {samples[0] / len(plane.hosts) / spent.wall:4.2f} "
        f"samples per host-second, {per_sample * 1e6:4.0f} us CPU a sample (so one core keeps "
        f"up with {interval / per_sample:,.0f} hosts); the fake hosts' own {fake * 1e6:3.0f} us "
        f"a sample, the process's CPU {(spent.cpu + spent.fake) / spent.wall:4.2f} s a second"
    )


def held(make: Callable[[], FakeCluster]) -> tuple[int, int, FakeCluster]:
    """Python heap a new controller allocates and keeps through its first round, and the peak
    during it (the fake hosts' own state was made before, and is not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        cluster = make()
        cluster.step()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current, peak, cluster


def measure(hosts: int, per_host: int, job_size: int, rounds: int, out: Callable,
            daemon_seconds: float = 5.0, interval: float = 1.0) -> None:  # fmt: skip
    total = hosts * per_host
    with tempfile.TemporaryDirectory() as tmp:
        cluster = sim_cluster(Path(tmp), hosts)
        plane = cluster.plane
        assert isinstance(plane, SimPlane)
        cluster.step()
        host_bytes, _, cluster = held(cluster.restarted)

        first_job = min(job_size, total)
        with Spent(plane) as spent:
            cluster.controller.submit(batch_job("j1", first_job))
            cycles = until_running(cluster, first_job)
        out(f"submit  {hosts:>6} hosts: a {first_job}-task job placed and launched in {spent} "
            f"({cycles} cycles)")  # fmt: skip
        if total > first_job:
            with Spent(plane) as spent:
                for n, left in enumerate(range(total - first_job, 0, -job_size), start=2):
                    cluster.controller.submit(batch_job(f"j{n}", min(job_size, left)))
                cycles = until_running(cluster, total)
            out(f"fill    {hosts:>6} hosts: the other {total - first_job} tasks launched in "
                f"{spent} ({cycles} cycles)")  # fmt: skip

        samples, ticks = [], []
        for _ in range(rounds):
            cluster.clock.advance(1.0)
            with Spent(plane) as sample:
                cluster.fleet.refresh()
            with Spent(plane) as tick:
                cluster.controller.tick()
            samples.append(sample)
            ticks.append(tick)
        sample = min(samples, key=lambda s: s.cpu)
        tick = min(ticks, key=lambda s: s.cpu)
        cpu = sample.cpu + tick.cpu
        out(f"round   {hosts:>6} hosts, {total} tasks: sample round {sample}, cycle {tick}: "
            f"{cpu / hosts * 1e6:4.0f} us CPU per host-second (target <= 100: "
            f"{hosts / cpu:,.0f} hosts on one core)")  # fmt: skip

        for mode in ("threads", "rounds", "forked"):
            out(f"daemon  {hosts:>6} hosts, {daemon_seconds:g} s at a {interval:g} s "
                f"interval: {sampling(plane, mode, daemon_seconds, interval)}")  # fmt: skip

        with Spent(plane) as spent:
            restarted = cluster.restarted()
            restarted.step()
        lost = sum(r.state.value != "running" for r in restarted.controller.store.tasks())
        out(f"restart {hosts:>6} hosts: {total} tasks reconciled in {spent} (target <= 5 s for "
            f"100,000), {lost} not running after it")  # fmt: skip

        all_bytes, peak, _ = held(restarted.restarted)
        task_bytes = (all_bytes - host_bytes) / total
        out(f"memory  {hosts:>6} hosts: {host_bytes / hosts / 1024:5.1f} KB per host "
            f"(target <= 50), {task_bytes:6.0f} B per task (target <= 1024), peak of a "
            f"reconcile {peak / total:6.0f} B per task; max RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-host", type=int, default=10)
    parser.add_argument("--job-size", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--daemon-seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 hosts")
    args = parser.parse_args()
    interval = 1.0
    if args.quick:
        args.hosts, args.per_host, args.job_size, args.rounds = [50], 4, 100, 1
        args.daemon_seconds, interval = 0.5, 0.1
    for hosts in args.hosts:
        measure(hosts, args.per_host, args.job_size, args.rounds,
                lambda s: print(s, flush=True), args.daemon_seconds, interval)  # fmt: skip


if __name__ == "__main__":
    main()
