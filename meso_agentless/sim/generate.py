"""Synthetic traces. `mesos-paper` is modelled on the Mesos paper's macrobenchmark mix
(Hindman et al., NSDI 2011, section 6.1.1): four frameworks sharing one cluster.

- hadoop: a Hadoop-like batch framework; many short tasks (1 cpu, 2GiB, 20-90 s), job sizes
  heavy-tailed as in the Facebook workload (most jobs a few tasks, some hundreds).
- spark: Spark-like iterative jobs; executors that hold their memory for the whole job
  (2 cpus, 6GiB, 4-10 iterations of 30-60 s).
- mpi: Torque/MPI-like gang jobs (`gang: true`): 8-32 ranks of 1 cpu and 1GiB that start
  together or not at all, 5-15 minutes.
- web: a long-running web service (1 cpu, 1GiB instances) from the start to the end.

Hosts are assumed to have HOST_CPUS and HOST_MEM (the paper's EC2 nodes: 4 cores, 15 GB).
The batch frameworks arrive in waves: each one's arrival rate follows a sine over `period`
seconds, phase-shifted by a third of a period per framework, with amplitude `burst` (0: steady
arrivals, 1: each framework idles while another peaks). Parameters (`-p key=value`):

    duration  seconds of arrivals (default 3600)
    load      batch work offered, as a fraction of the cluster's cpus over `duration` (0.7)
    burst     amplitude of the waves, 0 to 1 (0.8)
    period    seconds of one wave (1200)
    mix       shares of the batch load, hadoop:spark:mpi (default 4:3:3)
    web       fraction of the cluster's cpus the web service holds (0.1)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meso_agentless.core.resources import CPUS, MEM
from meso_agentless.errors import UsageError
from meso_agentless.sim.trace import TraceRow

GiB = 2**30
HOST_CPUS, HOST_MEM = 4, 15 * GiB
DEFAULTS = {"duration": 3600.0, "load": 0.7, "burst": 0.8, "period": 1200.0, "mix": "4:3:3",
            "web": 0.1}  # fmt: skip
BATCH = ("hadoop", "spark", "mpi")


@dataclass(frozen=True)
class Params:
    seed: int
    hosts: int
    duration: float
    load: float
    burst: float
    period: float
    mix: tuple[float, float, float]
    web: float


def params(seed: int, hosts: int, raw: Mapping[str, str]) -> Params:
    """The generator's parameters from `key=value` strings; UsageError names a bad one."""
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise UsageError(f"--param {sorted(unknown)[0]}: unknown (known: {', '.join(DEFAULTS)})")
    if hosts < 1 or hosts > 100_000:
        raise UsageError("--hosts must be from 1 to 100000")
    values: dict[str, float] = {}
    for key in ("duration", "load", "burst", "period", "web"):
        text = raw.get(key, str(DEFAULTS[key]))
        try:
            values[key] = float(text)
        except ValueError:
            raise UsageError(f"--param {key}: {text!r} is not a number") from None
        if not math.isfinite(values[key]) or values[key] < 0:
            raise UsageError(f"--param {key}: must be a finite number, at least 0")
    if not 1 <= values["duration"] <= 10**7 or not 1 <= values["period"] <= 10**7:
        raise UsageError("--param duration and period: from 1 to 10000000 seconds")
    if values["burst"] > 1 or values["web"] >= 1 or values["load"] > 10:
        raise UsageError("--param burst: 0 to 1; web: 0 to below 1; load: 0 to 10")
    try:
        mix = tuple(float(x) for x in str(raw.get("mix", DEFAULTS["mix"])).split(":"))
    except ValueError:
        mix = ()
    if len(mix) != 3 or any(not math.isfinite(x) or x < 0 for x in mix) or not sum(mix):
        raise UsageError("--param mix: three shares hadoop:spark:mpi like 4:3:3")
    return Params(seed, hosts, values["duration"], values["load"], values["burst"],
                  values["period"], mix, values["web"])  # type: ignore[arg-type]  # fmt: skip


def mesos_paper(p: Params) -> list[TraceRow]:
    """The trace (deterministic for the same parameters)."""
    rng = random.Random(p.seed)  # noqa: S311 - a reproducible workload, not a secret
    rows: list[TraceRow] = []
    web = round(p.web * p.hosts * HOST_CPUS)
    if web:
        rows.append(_row(0, "web", "web", "frontend", web, 1000, GiB, None))
    cluster_cpu_seconds = p.hosts * HOST_CPUS * p.duration
    scale = max(1.0, p.hosts / 96)  # job sizes grow with the cluster, like the paper's
    whole = sum(p.mix)
    for k, name in enumerate(BATCH):
        budget = p.load * cluster_cpu_seconds * p.mix[k] / whole
        make = _JOBS[name]
        phase = 2 * math.pi * k / 3
        spent, n = 0.0, 0
        while spent < budget:
            # arrival times of an inhomogeneous Poisson process, by thinning: rate follows
            # 1 + burst * sin(...); jobs are drawn until the framework's budget is spent
            t = rng.uniform(0, p.duration)
            rate = 1 + p.burst * math.sin(2 * math.pi * t / p.period - phase)
            if rng.uniform(0, 1 + p.burst) > rate:
                continue
            job = make(rng, scale)
            n += 1
            spent += sum(count * cpus / 1000 * seconds for _, count, cpus, _, seconds, _ in job)
            for task, count, cpus, mem, seconds, gang in job:
                rows.append(_row(round(t), name, f"{name}-{n:05d}", task, count, cpus, mem,
                                 seconds, gang))  # fmt: skip
    return sorted(rows, key=lambda r: r.key)


Job = list[tuple[str, int, int, int, int, bool]]  # task, count, millicpus, bytes, seconds, gang


def _hadoop(rng: random.Random, scale: float) -> Job:
    kind = rng.random()
    if kind < 0.5:
        count = rng.randint(1, 5)
    elif kind < 0.85:
        count = rng.randint(10, 40)
    else:
        count = rng.randint(100, 200)
    maps = max(1, round(count * scale))
    job: Job = [("map", maps, 1000, 2 * GiB, rng.randint(20, 90), False)]
    if count >= 10:
        job.append(("reduce", max(1, maps // 10), 1000, 2 * GiB, rng.randint(30, 120), False))
    return job


def _spark(rng: random.Random, scale: float) -> Job:
    executors = max(1, round(rng.randint(8, 24) * scale))
    seconds = sum(rng.randint(30, 60) for _ in range(rng.randint(4, 10)))
    return [("executor", executors, 2000, 6 * GiB, seconds, False)]


def _mpi(rng: random.Random, scale: float) -> Job:
    ranks = max(2, round(rng.choice([8, 16, 16, 32]) * scale))
    return [("rank", ranks, 1000, GiB, rng.randint(300, 900), True)]


_JOBS: dict[str, Callable[[random.Random, float], Job]] = {
    "hadoop": _hadoop,
    "spark": _spark,
    "mpi": _mpi,
}


def _row(submit: int, framework: str, job: str, task: str, count: int, cpus: int, mem: int,
         seconds: int | None, gang: bool = False) -> TraceRow:  # fmt: skip
    return TraceRow(
        line=0,
        submit_ms=submit * 1000,
        framework=framework,
        job=job,
        task=task,
        count=count,
        resources={CPUS: cpus, MEM: mem},
        duration_ms=None if seconds is None else seconds * 1000,
        gang=gang,
    )


GENERATORS = {"mesos-paper": mesos_paper}
