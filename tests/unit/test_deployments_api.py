"""The deployment routes on a fake cluster: versions, deployment, promote, fail, revert; the
token on each; bad requests and bad update blocks are 4xx and change nothing; and the CLI's
exit 2 for a bad update block."""

import subprocess
import sys
import time

import pytest

from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

TOKEN = "d" * 32
SERVER = {"name": "s", "count": 2, "command": ["serve", "v1"],
          "resources": {"cpus": 0.5, "mem": "64MiB"}}  # fmt: skip
JOB = {"job": "web", "type": "service", "tasks": [SERVER]}


def job(update=None, **task):
    return {**JOB, **({"update": update} if update else {}), "tasks": [{**SERVER, **task}]}


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (4, "4GiB"), "h2": (4, "4GiB")})
    with api_client(cluster, TOKEN) as client:
        yield client


def test_a_canary_deployment_over_the_api(api):
    assert api.post("/v1/jobs", json=JOB).status_code == 201
    assert api.get("/v1/jobs/web/deployment").status_code == 404
    changed = job(update={"canary": 1, "min_healthy_time": 0}, command=["serve", "v2"])
    started = api.post("/v1/jobs", json=changed)
    assert started.status_code == 201 and started.json()["spec_version"] == 2
    deployment = api.get("/v1/jobs/web/deployment").json()
    assert (deployment["from_version"], deployment["to_version"]) == (1, 2)
    versions = api.get("/v1/jobs/web/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert versions["versions"][1]["changes"][0]["path"] == "tasks[0].command[1]"
    cluster = api.cluster
    for _ in range(100):
        if api.get("/v1/jobs/web/deployment").json()["state"] == "waiting":
            break
        cluster.clock.advance(1)
        cluster.fleet.refresh()
        time.sleep(0.1)  # the controller's thread runs a cycle every 0.05 s
    assert api.get("/v1/jobs/web/deployment").json()["state"] == "waiting"
    promoted = api.post("/v1/jobs/web/deployment/promote")
    assert promoted.status_code == 200 and promoted.json()["promoted"]
    assert api.post("/v1/jobs/web/deployment/promote").status_code == 409
    failed = api.post("/v1/jobs/web/deployment/fail")
    assert failed.status_code == 200 and failed.json()["state"] == "failed"
    assert failed.json()["reason"] == "failed by an operator"
    assert api.post("/v1/jobs/web/deployment/fail").status_code == 409
    reverted = api.post("/v1/jobs/web/revert", json={"version": 1})
    assert reverted.status_code == 200 and reverted.json()["spec_version"] == 3
    assert api.get("/v1/jobs/web/deployment").json()["revert"] is True
    tasks = api.get("/v1/jobs/web").json()["tasks"]
    assert {t["job_version"] for t in tasks} >= {1, 2}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("post", "/v1/jobs/web/revert", {"version": 0}, 422),
    ("post", "/v1/jobs/web/revert", {"version": 1, "x": 1}, 422),
    ("post", "/v1/jobs/web/revert", {"version": 7}, 404),
    ("post", "/v1/jobs/nosuch/revert", {"version": 1}, 404),
    ("get", "/v1/jobs/nosuch/versions", None, 404),
    ("post", "/v1/jobs/web/deployment/promote", None, 404),
])  # fmt: skip
def test_bad_requests_are_4xx(api, method, path, body, status):
    api.post("/v1/jobs", json=JOB)
    answer = getattr(api, method)(path, **({"json": body} if body is not None else {}))
    assert answer.status_code == status, answer.text
    assert api.get("/v1/jobs/web").json()["spec_version"] == 1


def test_a_bad_update_block_is_a_422_naming_the_field_and_changes_nothing(api):
    api.post("/v1/jobs", json=JOB)
    refused = api.post("/v1/jobs", json=job(update={"max_parallel": 3}))
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("update.max_parallel: 3 is more than")
    assert api.get("/v1/jobs/web").json()["spec_version"] == 1


@pytest.mark.parametrize("path", ["/v1/jobs/web/versions", "/v1/jobs/web/deployment"])
def test_every_route_needs_the_token(api, path):
    assert api.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for tail in ("/deployment/promote", "/deployment/fail"):
        answer = api.post(f"/v1/jobs/web{tail}", headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 401
    answer = api.post("/v1/jobs/web/revert", json={"version": 1},
                      headers={"Authorization": "Bearer wrong"})  # fmt: skip
    assert answer.status_code == 401


@pytest.mark.parametrize(("block", "says"), [
    ("{max_parallel: 0}", "update.max_parallel"),
    ("{canary: 9}", "update.canary: 9 is more than the task's count (2)"),
    ("{min_healthy_time: -3s}", "update.min_healthy_time"),
    ("{auto_revert: true, surge: 1}", "update.surge: unknown field"),
])  # fmt: skip
def test_the_cli_exits_2_naming_the_field(tmp_path, block, says):
    path = tmp_path / "web.yaml"
    path.write_text(f"job: web\ntype: service\nupdate: {block}\ntasks:\n  - name: s\n"
                    "    count: 2\n    command: [serve]\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "meso_agentless", "run", str(path),
                           "--state", str(tmp_path / "s.db"), "-i", str(tmp_path / "none")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_history_and_plan_lines_name_tasks_and_show_sizes():
    from meso_agentless.cli.deployments import change_lines

    spec = {"tasks": [{"name": "server"}, {"name": "worker"}]}
    changes = [
        {"path": "tasks[0].resources.mem", "kind": "changed", "before": 64 << 20,
         "after": 128 << 20},
        {"path": "tasks[1].env.A", "kind": "added", "before": None, "after": "1"},
        {"path": "update.canary", "kind": "removed", "before": 1, "after": None},
    ]  # fmt: skip
    assert change_lines(changes, spec) == [
        "~ tasks[server].resources.mem: 64MiB -> 128MiB",
        '+ tasks[worker].env.A: "1"',
        "- update.canary: 1",
    ]
