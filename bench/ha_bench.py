"""Failover of `meso controller` on PostgreSQL, repeated (root): two controllers on one database,
a service of 3 and a batch job of 3 running; the leader killed with SIGKILL; the standby takes
over. Each round measures the takeover (the kill to the standby's /v1/health saying leader, and
to its first cycle: every host sampled as leader, "leading at epoch N" in its log) and checks
that nothing was lost or run twice: the batch job finishes with every task on attempt 1, the
service keeps its 3 first
instances, and the units on the hosts are exactly those. The killed one is started again as the
next round's standby. Target: takeover <= 10 s (lease 5 s + takeover).

Run as root: PYTHONPATH=. .venv/bin/python bench/ha_bench.py [--rounds 20] [--lease 5]
(it starts a 3-host lab named "mha" and a temporary PostgreSQL, and takes both down afterwards)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from meso_agentless.testing.controller import ControllerProcess, start_controller
from meso_agentless.testing.lab import LabHandle, running_lab
from meso_agentless.testing.postgres import TempPostgres

SERVICE = {"job": "web", "type": "service",
           "tasks": [{"name": "s", "count": 3, "command": ["sleep", "infinity"],
                      "resources": {"cpus": 0.1, "mem": "32MiB"}}]}  # fmt: skip
TOKEN = "b" * 40
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def batch(round_: int) -> dict:
    return {"job": f"crunch{round_}",
            "tasks": [{"name": "t", "count": 3, "command": ["sleep", "4"],
                       "resources": {"cpus": 0.1, "mem": "32MiB"},
                       "restart": {"policy": "on-failure", "attempts": 2}}]}  # fmt: skip


def wait(predicate, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError("timed out")


def running_units(lab: LabHandle) -> set[str]:
    found = set()
    for host in lab.hosts:
        out = lab.run(host.name, ["systemctl", "list-units", "--no-legend", "--plain",
                                  "--state=running", "meso-*"]).stdout  # fmt: skip
        found |= {line.split()[0].removesuffix(".service") for line in out.splitlines()}
    return found


def health(c: ControllerProcess) -> dict:
    try:
        return httpx.get(f"{c.url}/v1/health", timeout=2).json()
    except httpx.HTTPError:
        return {}


def job(c: ControllerProcess, name: str) -> dict:
    return httpx.get(f"{c.url}/v1/jobs/{name}", headers=HEADERS, timeout=10).json()


def first_cycle_after(log: Path, offset: int, epoch: int) -> bool:
    """Its hosts sampled as the new leader: its first cycle (reconciliation) comes next."""
    return f"leading at epoch {epoch}: every host sampled" in log.read_text()[offset:]


def run(lab: LabHandle, rounds: int, lease: float, directory: Path) -> None:
    with TempPostgres() as pg:
        token = directory / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        extra = ("--state", pg.url, "--token-file", str(token), "--lease", str(lease))
        leader = start_controller(lab.inventory, directory / "c0", *extra)
        standby = start_controller(lab.inventory, directory / "c1", *extra)
        httpx.post(f"{leader.url}/v1/jobs", json=SERVICE, headers=HEADERS, timeout=60)
        web = wait(lambda: {t["unit"] for t in job(leader, "web")["tasks"]
                            if t["state"] == "running"} or None, 30)  # fmt: skip
        to_health, to_cycle, problems = [], [], []
        try:
            for r in range(rounds):
                name = batch(r)["job"]
                httpx.post(f"{leader.url}/v1/jobs", json=batch(r), headers=HEADERS, timeout=60)
                wait(lambda n=name: len(running_units(lab) - web) == 3 or None, 30)
                offset = len(standby.log.read_text())
                epoch = health(leader)["epoch"]
                killed = time.monotonic()
                leader.process.kill()
                leader.process.wait()
                wait(lambda s=standby: health(s).get("role") == "leader", 30)
                to_health.append(time.monotonic() - killed)
                wait(lambda s=standby, o=offset, e=epoch + 1: first_cycle_after(s.log, o, e), 30)
                to_cycle.append(time.monotonic() - killed)
                done = wait(lambda s=standby, n=name: (j := job(s, n))["outcome"] and j, 60)
                attempts = sorted((t["index"], t["attempt"], t["state"]) for t in done["tasks"])
                if attempts != [(i, 1, "finished") for i in range(3)]:
                    problems.append(f"round {r}: {name} {attempts}")
                now_web = {t["unit"] for t in job(standby, "web")["tasks"]
                           if t["state"] == "running"}  # fmt: skip
                if now_web != web or running_units(lab) != web:
                    problems.append(f"round {r}: web {sorted(now_web)}, hosts "
                                    f"{sorted(running_units(lab))}")  # fmt: skip
                print(f"round {r + 1:2}/{rounds}: leader at {to_health[-1]:.2f} s, first cycle "
                      f"at {to_cycle[-1]:.2f} s", flush=True)  # fmt: skip
                leader, standby = (
                    standby,
                    start_controller(lab.inventory, directory / f"c{r + 2}", *extra),
                )
        finally:
            for c in (leader, standby):
                if c.process.poll() is None:
                    c.stop()
            for host in lab.hosts:
                lab.run(host.name, ["sh", "-c", "systemctl stop 'meso-*'; "
                                    "systemctl reset-failed 'meso-*'"])  # fmt: skip

    def line(label: str, xs: list[float]) -> str:
        return (f"{label:38} p50 {statistics.median(xs):5.2f} s   max {max(xs):5.2f} s   "
                f"min {min(xs):5.2f} s")  # fmt: skip

    print(f"\n{rounds} failovers, lease {lease:g} s, 3 nspawn hosts, a service of 3 + a batch "
          "job of 3 each round")  # fmt: skip
    print(line("kill -9 -> standby's health: leader", to_health))
    print(line("kill -9 -> its first cycle as leader", to_cycle))
    print(f"tasks lost or run twice: {len(problems)}" + "".join(f"\n  {p}" for p in problems))
    print("target: takeover <= 10 s: " + ("met" if max(to_cycle) <= 10 else "NOT met"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--lab", default=os.environ.get("MESO_BENCH_LAB", "mha"))
    args = parser.parse_args()
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds: from 1 to 100")
    with running_lab(args.lab, hosts=3) as lab, tempfile.TemporaryDirectory() as tmp:
        run(lab, args.rounds, args.lease, Path(tmp))


if __name__ == "__main__":
    main()
