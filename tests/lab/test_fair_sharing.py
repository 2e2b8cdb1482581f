"""Guarantees on the lab with a real controller: team a is idle, team b fills the cluster with
batch tasks (those on a's guarantee revocable); a submits work within its guarantee; a runs once
b's youngest borrowed tasks are revoked; b's revoked tasks are requeued and finish later;
nothing is lost or run twice."""

import os

import httpx
import pytest
import yaml

from meso_agentless.testing.controller import running_controller
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab


def job(name, framework, count, command):
    return {"job": name, "framework": framework,
            "tasks": [{"name": "t", "count": count, "command": command,
                       "resources": {"cpus": 1, "mem": "64MiB"}}]}  # fmt: skip


def test_an_idle_teams_guarantee_is_lent_then_taken_back(meso_lab, tmp_path):
    inventory = yaml.safe_load(meso_lab.inventory.read_text())
    # 3 hosts of 2 CPUs: a is guaranteed 3, the pool outside guarantees is 3
    inventory["all"]["vars"]["meso_frameworks"] = {"a": {"guarantee": {"cpus": 3}}, "b": {}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    with running_controller(path, tmp_path / "ctl") as ctl:
        api = httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=60)

        def tasks(name):
            return api.get(f"/v1/jobs/{name}").raise_for_status().json()["tasks"]

        b = job("fill", "b", 6, ["sh", "-c", 'echo "revocable=${MESO_REVOCABLE:-0}"; sleep 12'])
        assert api.post("/v1/jobs?detach=true", json=b).status_code == 201
        wait_for(lambda: sum(t["state"] == "running" for t in tasks("fill")) == 6)
        assert sorted(t["revocable"] for t in tasks("fill")) == [False] * 3 + [True] * 3
        borrowed = {t["index"] for t in tasks("fill") if t["revocable"]}
        queue = api.get("/v1/queue").json()
        lent = {f["name"]: f["lent"] for f in queue["frameworks"]}
        assert lent["a"] == {"cpus": 3.0}
        # a, idle so far, asks for its guarantee
        a = job("claim", "a", 3, ["sleep", "8"])
        assert api.post("/v1/jobs?detach=true", json=a).status_code == 201
        wait_for(lambda: all(t["state"] in ("running", "finished") for t in tasks("claim"))
                 and len(tasks("claim")) == 3, timeout=60)  # fmt: skip
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESO_")}, **ctl.env}
        queue = cli(env, "queue")  # while a's tasks run, b's revoked ones wait for room
        assert queue.returncode == 0, queue.stderr
        assert "fill" in queue.stdout and "no host fits" in " ".join(queue.stdout.split())
        explained = cli(env, "explain", "fill", "t")
        assert explained.returncode == 0, explained.stderr
        lines = explained.stdout.splitlines()
        assert lines[0].startswith("fill/t (pending: ") and len(lines) == 4  # one per host
        assert all('dimension "cpus" exhausted: 0 free, 1 needed' in line for line in lines[1:])
        revoked = [t for t in tasks("fill") if t["reason"] == "revoked"]
        assert len(revoked) == 3 and {t["state"] for t in revoked} == {"killed"}
        assert {t["index"] for t in revoked} == borrowed  # only borrowed ones, all of them
        # b's revoked tasks are requeued and finish later, under a new attempt each
        done = wait_for(lambda: (v := api.get("/v1/jobs/fill").json())["state"] == "done" and v,
                        timeout=90)  # fmt: skip
        assert done["outcome"]["code"] == 0
        per_index: dict[int, list[dict]] = {}
        for t in done["tasks"]:
            per_index.setdefault(t["index"], []).append(t)
        assert sorted(per_index) == list(range(6))  # nothing lost
        for index, attempts in per_index.items():
            finished = [t for t in attempts if t["state"] == "finished"]
            assert len(finished) == 1, (index, attempts)  # run to the end exactly once
        assert {t["index"] for t in revoked} == {
            i for i, attempts in per_index.items() if len(attempts) == 2
        }
        revoked_again = next(t for t in done["tasks"] if t["index"] == revoked[0]["index"]
                             and t["attempt"] == 2)  # fmt: skip
        logs = cli(env, "logs", "fill", f"t/{revoked_again['index']}")
        assert "revocable=1" in logs.stdout, (logs.stdout, logs.stderr)  # borrowed again
        assert wait_for(lambda: api.get("/v1/jobs/claim").json()["state"] == "done")
