"""Allocation cycle benchmarks, in the shape of Mesos' allocator benchmarks.

H hosts and F frameworks, the cluster already half allocated by earlier tasks, P pending tasks of
mixed sizes spread over the frameworks; one cycle places what fits and explains the rest.
Prints one line per figure with its workload. Run: .venv/bin/python bench/allocator_bench.py
(--kept: only the cycles on a ClusterState kept between cycles, as the controller keeps it).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import time
import tracemalloc
from dataclasses import replace

from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Constraint, Framework, Host, RevocableTask, TaskGroup
from meso_agentless.core.offers import JobScheduler

GiB = 2**30
MiB = 2**20
SHAPES = [  # (millicpus, bytes): mixed task sizes
    (250, 256 * MiB),
    (500, 512 * MiB),
    (1000, 2 * GiB),
    (2000, 4 * GiB),
    (4000, 8 * GiB),
]
HOST_CPUS, HOST_MEM = 32_000, 128 * GiB
TOO_BIG = (48_000, 8 * GiB)  # 1% of tasks fit no host: the cycle must explain them
# the cycle is one thread of pure computation: its CPU time, which other processes on a shared
# machine do not inflate the way they do the wall time (--wall: the wall time)
clock = time.process_time


def make_cluster(hosts: int, frameworks: int, half_full: bool, rng: random.Random):
    """Hosts with racks; when half_full, earlier tasks of random frameworks hold half of each."""
    names = [f"fw{i:05d}" for i in range(frameworks)]
    held = {n: [0, 0] for n in names}
    out = []
    for i in range(hosts):
        used = [0, 0]
        if half_full:
            while used[0] < HOST_CPUS // 2:
                cpus, mem = rng.choice(SHAPES)
                owner = held[rng.choice(names)]
                used[0] += cpus
                used[1] += mem
                owner[0] += cpus
                owner[1] += mem
        out.append(
            Host(
                f"host{i:05d}",
                {"cpus": HOST_CPUS, "mem": HOST_MEM},
                ports=((31000, 32000),),
                attributes={"rack": f"r{i % 40}"},
                used={"cpus": used[0], "mem": used[1]},
            )
        )
    fws = [
        Framework(n, weight=rng.choice([1.0, 1.0, 2.0]), allocated={"cpus": c, "mem": m})
        for n, (c, m) in held.items()
    ]
    return out, fws


def make_pending(frameworks: list[Framework], tasks: int, rng: random.Random):
    """`tasks` pending tasks spread over the frameworks, in groups of 1-4 instances."""
    groups: dict[str, list[TaskGroup]] = {}
    made = 0
    while made < tasks:
        fw = frameworks[made % len(frameworks)].name
        count = min(rng.randint(1, 4), tasks - made)
        cpus, mem = rng.choice(SHAPES) if rng.random() >= 0.01 else TOO_BIG
        constraints = (Constraint("ne", "rack", "r0"),) if rng.random() < 0.1 else ()
        resources = {"cpus": cpus, "mem": mem}
        if rng.random() < 0.2:
            resources["ports"] = 1
        n = len(groups.get(fw, []))
        groups.setdefault(fw, []).append(
            TaskGroup(f"{fw}-job{n}", "task", fw, count, resources, constraints, order=n)
        )
        made += count
    return groups


def cycle_seconds(hosts, frameworks, pending, repeat: int, revocable=()):
    times, plan = [], None
    for _ in range(repeat):
        schedulers = [JobScheduler(fw, gs) for fw, gs in pending.items()]
        gc.collect()
        started = clock()
        plan = allocate(hosts, frameworks, schedulers, revocable=revocable)
        times.append(clock() - started)
    return statistics.median(times), plan


def bench_cycle(h: int, f: int, p: int, repeat: int, target: float) -> None:
    rng = random.Random(h * 7 + f)
    hosts, frameworks = make_cluster(h, f, half_full=True, rng=rng)
    pending = make_pending(frameworks, p, rng)
    seconds, plan = cycle_seconds(hosts, frameworks, pending, repeat)
    print(
        f"cycle  {h:>6} hosts x {f:>5} frameworks, half allocated, P={p:>6}: "
        f"{seconds * 1000:8.1f} ms per cycle (median of {repeat}; target <= {target * 1000:.0f} ms)"
        f"  placed {len(plan.placements)}, unplaced {len(plan.unplaced)}"
    )


def bench_kept(h: int, f: int, p: int, repeat: int, target: float) -> None:
    """bench_cycle's workload on a ClusterState kept between cycles, as the controller keeps
    it: each cycle runs on the kept state, then its placements are fed back to it (`place`)
    and, so that every cycle sees the same cluster, end again (`release`)."""
    from meso_agentless.core.cluster import ClusterState  # here: the rest runs on older trees

    rng = random.Random(h * 7 + f)
    hosts, frameworks = make_cluster(h, f, half_full=True, rng=rng)
    pending = make_pending(frameworks, p, rng)
    started = clock()
    state = ClusterState(hosts)
    built = clock() - started
    scratch, _ = cycle_seconds(hosts, frameworks, pending, 1)
    cycles, fed, ended = [], [], []
    for _ in range(repeat):
        seconds, plan = cycle_seconds(state, frameworks, pending, 1)
        started = clock()
        state.place(plan.placements)
        placed = clock()
        state.release(plan.placements)
        cycles.append(seconds)
        fed.append(placed - started)
        ended.append(clock() - placed)
    cycle, feed = statistics.median(cycles), statistics.median(fed)
    print(
        f"kept   {h:>6} hosts x {f:>5} frameworks, half allocated, P={p:>6}: "
        f"{(cycle + feed) * 1000:8.1f} ms per cycle = cycle on the kept state "
        f"{cycle * 1000:.1f} ms + its {len(plan.placements)} placements fed back "
        f"{feed * 1000:.1f} ms (median of {repeat}; target <= {target * 1000:.0f} ms); "
        f"from scratch {scratch * 1000:.1f} ms; state built once in {built * 1000:.0f} ms, "
        f"their ends fed back in {statistics.median(ended) * 1000:.1f} ms"
    )


def borrowed_cluster(h: int, f: int, rng: random.Random):
    """Half allocated as in bench_cycle, then nearly full: borrowed (revocable) tasks of the
    frameworks without a guarantee fill each host. One framework in ten is
    guaranteed an equal part of half the cluster."""
    hosts, frameworks = make_cluster(h, f, half_full=True, rng=rng)
    guaranteed = {fw.name for fw in frameworks[::10]}
    lenders = [fw.name for fw in frameworks if fw.name not in guaranteed]
    share = (h * HOST_CPUS // 2 // len(guaranteed), h * HOST_MEM // 2 // len(guaranteed))
    extra = {fw.name: [0, 0] for fw in frameworks}
    running, full = [], []
    for host in hosts:
        used = [host.used["cpus"], host.used["mem"]]
        while True:
            cpus, mem = rng.choice(SHAPES)
            if used[0] + cpus > HOST_CPUS or used[1] + mem > HOST_MEM:
                break
            owner = rng.choice(lenders)
            used[0] += cpus
            used[1] += mem
            extra[owner][0] += cpus
            extra[owner][1] += mem
            resources = {"cpus": cpus, "mem": mem}
            since = rng.random() * 3600
            running.append(RevocableTask(f"{owner}-b{len(running)}", "t", 0, owner, host.name,
                                         resources, since))  # fmt: skip
        full.append(replace(host, used={"cpus": used[0], "mem": used[1]}))
    with_guarantees = []
    for fw in frameworks:
        c, m = extra[fw.name]
        allocated = {"cpus": fw.allocated["cpus"] + c, "mem": fw.allocated["mem"] + m}
        guarantee = {"cpus": share[0], "mem": share[1]} if fw.name in guaranteed else None
        with_guarantees.append(replace(fw, allocated=allocated, guarantee=guarantee,
                                       revocable={"cpus": c, "mem": m}))  # fmt: skip
    plain = [replace(fw, guarantee=None, revocable={}) for fw in with_guarantees]
    return full, plain, with_guarantees, running


def bench_guarantees(h: int, f: int, p: int, repeat: int) -> None:
    """The same nearly full cluster and pending tasks, without and with guarantees."""
    rng = random.Random(h * 11 + f)
    hosts, plain, guaranteed, running = borrowed_cluster(h, f, rng)
    pending = make_pending(guaranteed, p, rng)
    times: dict[bool, list[float]] = {False: [], True: []}
    plans = {}
    for _ in range(repeat):  # alternately, so that a busy machine slows both alike
        for fair in (False, True):
            seconds, plans[fair] = cycle_seconds(
                hosts, guaranteed if fair else plain, pending, 1, running if fair else ()
            )
            times[fair].append(seconds)
    without, plan = statistics.median(times[False]), plans[False]
    print(
        f"plain  {h:>6} hosts x {f:>5} frameworks, full, P={p:>6}: "
        f"{without * 1000:8.1f} ms per cycle (median of {repeat})  placed "
        f"{len(plan.placements)}, unplaced {len(plan.unplaced)}"
    )
    seconds, plan = statistics.median(times[True]), plans[True]
    revocable = sum(p.revocable for p in plan.placements)
    print(
        f"fair   {h:>6} hosts x {f:>5} frameworks, {f // 10} guaranteed, {len(running)} "
        f"borrowed tasks, P={p:>6}: {seconds * 1000:8.1f} ms per cycle (median of {repeat}) = "
        f"{seconds / without:.2f}x plain (target <= 1.5x)  placed {len(plan.placements)} "
        f"({revocable} revocable), revocations {len(plan.revocations)}, "
        f"unplaced {len(plan.unplaced)}"
    )


def bench_fill(h: int, f: int, repeat: int) -> None:
    rng = random.Random(h)
    hosts, frameworks = make_cluster(h, f, half_full=False, rng=rng)
    # enough pending work to fill the cluster: on average 2 cpus per task, 16 per host... x2
    pending = make_pending(frameworks, h * 32, rng)
    seconds, plan = cycle_seconds(hosts, frameworks, pending, repeat)
    rate = len(plan.placements) / seconds
    print(
        f"fill   {h:>6} empty hosts, {f} frameworks: {len(plan.placements)} placements in "
        f"{seconds:.3f} s = {rate:,.0f} placements/s (median of {repeat}; target >= 150,000/s)"
    )
    schedulers = [JobScheduler(fw, gs) for fw, gs in pending.items()]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    plan = allocate(hosts, frameworks, schedulers)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(plan.placements) + len(plan.unplaced)
    print(
        f"memory {h:>6} hosts: plan of {len(plan.placements)} placements and "
        f"{len(plan.unplaced)} unplaced retains {(retained - before) / n:,.0f} B per task; "
        f"peak during the cycle {(peak - before) / max(1, len(plan.placements)):,.0f} B per "
        "placed task (target <= 1 KB per placed task)"
    )


def run_untimed(workload: str, cycles: int) -> None:
    """Build the 2,000-host cycle's or the fill's workload and run `cycles` cycles, untimed: for
    counting instructions (valgrind --tool=callgrind), `cycles` = 2 less `cycles` = 0."""
    if workload == "cycle":
        rng = random.Random(2_000 * 7 + 2_000)
        hosts, frameworks = make_cluster(2_000, 2_000, half_full=True, rng=rng)
        pending = make_pending(frameworks, 2_000, rng)
    else:
        rng = random.Random(2_000)
        hosts, frameworks = make_cluster(2_000, 50, half_full=False, rng=rng)
        pending = make_pending(frameworks, 2_000 * 32, rng)
    runs = [[JobScheduler(fw, gs) for fw, gs in pending.items()] for _ in range(cycles)]
    for schedulers in runs:
        allocate(hosts, frameworks, schedulers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--kept", action="store_true", help="only the kept-state cycle")
    parser.add_argument("--wall", action="store_true", help="wall time, not CPU time")
    parser.add_argument("--untimed", choices=["cycle", "fill"], help="run_untimed() only")
    parser.add_argument("--cycles", type=int, default=2, help="cycles of --untimed")
    args = parser.parse_args()
    if args.untimed:
        run_untimed(args.untimed, args.cycles)
        return
    if args.wall:
        global clock
        clock = time.perf_counter
    if args.kept:
        if args.quick:
            bench_kept(200, 200, 200, 1, 0.05)
        else:
            bench_kept(2_000, 2_000, 2_000, 5, 0.02)
            bench_kept(50_000, 6_000, 20_000, 3, 0.4)
        return
    if args.quick:
        bench_cycle(200, 200, 200, 1, 0.05)
        bench_guarantees(200, 200, 200, 1)
        bench_fill(200, 20, 1)
        return
    # a tree from before the kept state (PYTHONPATH=older tree) prints the other lines alone
    kept = importlib.util.find_spec("meso_agentless.core.cluster") is not None
    bench_cycle(2_000, 2_000, 2_000, 5, 0.02)
    bench_guarantees(2_000, 2_000, 2_000, 5)
    if kept:
        bench_kept(2_000, 2_000, 2_000, 5, 0.02)
    bench_cycle(50_000, 6_000, 20_000, 3, 1.0)
    if kept:
        bench_kept(50_000, 6_000, 20_000, 3, 0.4)
    bench_fill(2_000, 50, 3)


if __name__ == "__main__":
    main()
