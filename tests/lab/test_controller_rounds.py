"""`meso controller` samples its hosts in rounds: a host cut off costs one round its deadline
once, leaves the round (suspect, then unreachable) and is asked again on its own until it
answers; the other hosts keep being sampled every interval, and their tasks are untouched."""

import itertools
import json
import os
import time

import httpx
import pytest

from meso_agentless.testing.controller import running_controller
from tests.conftest import LAB
from tests.lab.common import cli, units

pytestmark = pytest.mark.lab

CUT = f"{LAB}-3"
TWO_A_HOST = [{"op": "max_per", "attribute": "hostname", "value": 2}]  # two on each host
STEADY = {
    "job": "steady",
    "type": "service",
    "tasks": [
        {
            "name": "s",
            "count": 6,
            "command": ["sleep", "infinity"],
            "resources": {"cpus": 0.1, "mem": "16MiB"},
            "constraints": TWO_A_HOST,
        }
    ],
}


def processes(lab, placed: dict[str, str]) -> dict[str, str]:
    """unit -> its main process and restarts, as systemd on its host says."""
    shown = {}
    for unit, host in placed.items():
        out = lab.run(host, ["systemctl", "show", "-p", "MainPID,NRestarts", f"{unit}.service"])
        shown[unit] = out.stdout.strip()
    return shown


def watch_hosts(http: httpx.Client, until, log: list[tuple[float, dict]]) -> None:
    """GET /v1/hosts every 0.2 s until `until()`: (when, host -> (state, last_seen)) each."""
    while not until():
        hosts = http.get("/v1/hosts").json()["hosts"]
        log.append((time.monotonic(), {h["host"]: (h["state"], h["last_seen"]) for h in hosts}))
        time.sleep(0.2)


def test_a_cut_host_leaves_the_round_and_the_others_keep_being_sampled_every_interval(
    meso_lab, tmp_path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    env["MESO_INVENTORY"] = str(meso_lab.inventory)
    job = tmp_path / "steady.yaml"
    job.write_text(json.dumps(STEADY))  # JSON is YAML
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        env.update(ctl.env)
        try:
            assert cli(env, "run", str(job)).returncode == 0
            placed = {u: h for u, h in units(meso_lab).items() if u.startswith("meso-steady_")}
            assert sorted(placed.values()) == sorted([h.name for h in meso_lab.hosts] * 2)
            healthy = {u: h for u, h in placed.items() if h != CUT}
            before = processes(meso_lab, healthy)
            with httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as http:
                log: list[tuple[float, dict]] = []
                with meso_lab.cut_off(CUT):
                    cut_at = time.monotonic()
                    watch_hosts(http, lambda: time.monotonic() > cut_at + 12, log)
                watch_hosts(http, lambda: log[-1][1][CUT][0] == "up", log)
            time.sleep(2)  # a cycle or two with every host back: nothing relaunched
            status = json.loads(cli(env, "status", "steady", "-o", "json").stdout)["jobs"][0]
            after = {u: h for u, h in units(meso_lab).items() if u.startswith("meso-steady_")}
            still = processes(meso_lab, healthy)
        finally:
            cli(env, "kill", "steady")

    states = [hosts[CUT][0] for _, hosts in log]
    went = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert went[0] == "up" and went[-1] == "up", went
    assert went.index("suspect") < went.index("unreachable"), went  # then up again, healed
    for name in {h.name for h in meso_lab.hosts} - {CUT}:
        assert {hosts[name][0] for _, hosts in log} == {"up"}
        seen = sorted({hosts[name][1] for when, hosts in log if when <= cut_at + 12})
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        # sampled about every interval (1 s) throughout: the cut host's deadline (3 s) held up
        # one round at most, then it was out of the round
        assert len(seen) >= 8, seen
        assert sum(gap > 2.5 for gap in gaps) <= 1 and max(gaps) < 3 + 1 + 1.5, gaps
    # the tasks on the healthy hosts were never touched (same processes, never restarted), and
    # no task was lost or run twice: the same six units, each its task's first attempt
    assert still == before
    assert after == placed
    tasks = sorted((t["task"], t["index"], t["attempt"], t["state"]) for t in status["tasks"])
    assert tasks == [("s", i, 1, "running") for i in range(6)]
