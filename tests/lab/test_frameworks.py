"""Frameworks as their own schedulers, on the lab: the example sweep (examples/sweep, a program
that knows only HTTP) beside a `meso run` service of another framework, sharing the cluster by
DRF; every item done exactly once, one killed with `meso kill` retried by the sweep; the sweep
killed and started again within its failover timeout launches nothing twice; past the timeout
its tasks are killed."""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from meso_agentless.testing.controller import running_controller
from tests.lab.common import cli, units, wait_for

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
SWEEP = ROOT / "examples/sweep/sweep.py"
WEB = """\
job: web-fill
framework: web
type: service
tasks:
  - name: server
    count: 12
    command: ["sleep", "600"]
    resources: {cpus: 0.5, mem: 64MiB}
"""


@pytest.fixture
def lab(meso_lab):
    """The lab with no meso unit running (earlier tests' leftovers would take capacity)."""
    for unit, host in units(meso_lab).items():
        meso_lab.run(host, ["systemctl", "stop", f"{unit}.service"])
    return meso_lab


def start_sweep(ctl, directory, *args):
    out = open(directory / "sweep.log", "ab")  # noqa: SIM115 - the process writes it
    argv = [sys.executable, str(SWEEP), "--controller", ctl.url, "--token-file",
            str(ctl.token_file), "--state", str(directory / "sweep.state"),
            "--out", str(directory / "results.json"), *args]  # fmt: skip
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def framework_tasks(client, name):
    found = {f["name"]: f for f in client.get("/v1/frameworks").json()["frameworks"]}
    return found.get(name, {}).get("tasks", 0)


def sweep_jobs(client):
    return [j for j in client.get("/v1/jobs").json()["jobs"] if j["framework"] == "sweep"]


def running(client):
    return [j for j in sweep_jobs(client) if j["counts"].get("running")]


def test_the_sweep_and_a_service_share_the_cluster_and_every_item_runs_once(lab, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    web = tmp_path / "web.yaml"
    web.write_text(WEB)
    with (
        running_controller(lab.inventory, tmp_path / "ctl") as ctl,
        httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as client,
    ):
        env.update(ctl.env)
        sweep = start_sweep(ctl, tmp_path, "--items", "96", "--seconds", "4")
        wait_for(lambda: framework_tasks(client, "sweep") >= 10, timeout=60)
        assert cli(env, "run", "--detach", str(web)).returncode == 0
        # both want more than the cluster has (12 slots): DRF gives each half
        wait_for(lambda: framework_tasks(client, "web") >= 6, timeout=60)
        samples = []
        for _ in range(20):
            samples.append((framework_tasks(client, "sweep"), framework_tasks(client, "web")))
            time.sleep(0.5)
        victim = None
        while victim is None:  # a task killed mid-way (not one that ended just before)
            newest = max(wait_for(lambda: running(client), timeout=30),
                         key=lambda j: j["submitted"])  # fmt: skip
            assert cli(env, "kill", newest["job"]).returncode == 0  # retried by the sweep
            killed = client.get(f"/v1/jobs/{newest['job']}").json()["tasks"][-1]["state"]
            victim = newest["job"] if killed == "killed" else None
        assert sweep.wait(timeout=240) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        jobs = {j["job"]: j for j in sweep_jobs(client)}
        assert cli(env, "kill", "web-fill").returncode == 0
    print("sweep and web tasks, every 0.5 s:", samples)
    webs = [w for _, w in samples]
    assert min(webs) >= 5 and max(webs) <= 7, samples
    assert max(s for s, _ in samples) <= 7 and statistics.median(s for s, _ in samples) >= 5
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["results"] == {str(p): p * p for p in range(96)}
    assert results["launches"] == 97
    for name, job in jobs.items():  # one finished attempt each; the victim's in a second run
        assert [t["state"] for t in job["tasks"]] == ["finished"], name
        assert (job["run"], job["tasks"][0]["attempt"]) == ((2, 2) if name == victim else (1, 1))
    assert not [u for u in units(lab) if u.startswith("meso-sweep-")]


def test_failover_within_the_timeout_launches_nothing_twice_and_past_it_kills(lab, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with (
        running_controller(lab.inventory, tmp_path / "ctl") as ctl,
        httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as client,
    ):
        sweep = start_sweep(ctl, first, "--items", "16", "--seconds", "6", "--failover", "30")
        wait_for(lambda: len(running(client)) >= 8, timeout=60)
        sweep.kill()  # SIGKILL: no teardown; its stream drops
        sweep.wait()
        out = {u for u in units(lab) if u.startswith("meso-sweep-")}
        assert out
        time.sleep(2)
        assert out <= set(units(lab))  # within the failover timeout: still running
        sweep = start_sweep(ctl, first, "--failover", "30", "--items", "16", "--seconds", "6")
        assert sweep.wait(timeout=180) == 0, (first / "sweep.log").read_text()[-3000:]
        jobs = sweep_jobs(client)
        assert len(jobs) == 16
        before = {j["job"] for j in jobs}
        for job in jobs:  # none launched twice: one attempt each, finished
            assert [t["state"] for t in job["tasks"]] == ["finished"], job["job"]
        results = json.loads((first / "results.json").read_text())["results"]
        assert results == {str(p): p * p for p in range(16)}

        sweep = start_sweep(ctl, second, "--items", "6", "--seconds", "120", "--failover", "3")
        wait_for(lambda: len(running(client)) == 6, timeout=60)
        sweep.kill()
        sweep.wait()
        wait_for(lambda: not [u for u in units(lab) if u.startswith("meso-sweep-")], timeout=30)
        killed = [j["state"] for j in sweep_jobs(client) if j["job"] not in before]
        assert killed == ["killed"] * 6
        assert client.post("/v1/frameworks/sweep/reconcile").status_code == 404
