"""GET /v1/queue and /v1/jobs/NAME/explain on a controller over a fake fleet: the order, the
reasons, the shares with guarantees, and bad requests."""

import pytest

from meso_agentless.core.model import Framework
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

TOKEN = "t" * 32


def job(name, framework, count, cpus=1, **extra):
    return {"job": name, "framework": framework, **extra,
            "tasks": [{"name": "t", "count": count, "command": ["sleep", "1000"],
                       "resources": {"cpus": cpus, "mem": "64MiB"}}]}  # fmt: skip


@pytest.fixture
def api(tmp_path):
    frameworks = (Framework("a", guarantee={"cpus": 3000}), Framework("b", quota={"cpus": 3000}))
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")}, frameworks)
    with api_client(cluster, TOKEN) as client:
        yield client


def test_the_queue_in_placing_order_with_reasons_and_shares(api):
    # b (limit 3 CPUs) asks 4 of the 4 CPUs: 1 from the pool, 2 borrowed from a's guarantee
    assert api.post("/v1/jobs?detach=true", json=job("wide", "b", 4)).status_code == 201
    queue = api.get("/v1/queue").json()
    frameworks = {f["name"]: f for f in queue["frameworks"]}
    assert frameworks["a"]["guarantee"] == {"cpus": 3.0}
    assert frameworks["a"]["below_guarantee"] is True
    assert frameworks["a"]["lent"] == {"cpus": 2.0}
    assert frameworks["b"]["limit"] == {"cpus": 3.0}
    assert frameworks["b"]["allocated"]["cpus"] == 3.0
    assert frameworks["b"]["borrowed"]["cpus"] == 2.0
    (wide,) = queue["pending"]
    assert (wide["position"], wide["indexes"]) == (1, "3")
    assert wide["reason"].startswith("quota of framework b reached: cpus 3 of 3")
    # two jobs of b's wait behind its limit: the one of higher priority goes first
    api.post("/v1/jobs?detach=true", json=job("low", "b", 1))
    api.post("/v1/jobs?detach=true", json=job("high", "b", 1, priority=90))
    order = [p["job"] for p in api.get("/v1/queue?framework=b").json()["pending"]]
    assert order == ["high", "wide", "low"]
    assert api.get("/v1/queue?framework=a").json()["pending"] == []


def test_explain_answers_for_every_host(api):
    api.post("/v1/jobs?detach=true", json=job("fill", "a", 4))
    api.post("/v1/jobs?detach=true", json=job("more", "a", 1))
    answer = api.get("/v1/jobs/more/explain").json()
    assert answer["framework"] == "a"
    (task,) = answer["tasks"]
    assert task["pending"] == [0]
    assert task["hosts"] == [
        {"host": "h1", "reason": 'dimension "cpus" exhausted: 0 free, 1 needed'},
        {"host": "h2", "reason": 'dimension "cpus" exhausted: 0 free, 1 needed'},
    ]
    assert api.get("/v1/jobs/more/explain?task=t").json() == answer


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/v1/jobs/nope/explain", 404, "no job 'nope'"),
    ("/v1/jobs/more/explain?task=zz", 404, "has no task 'zz'"),
    ("/v1/queue?framework=nope", 404, "no framework 'nope'"),
    ("/v1/queue?framework=Bad_Name", 422, "framework"),
])  # fmt: skip
def test_bad_queue_and_explain_requests(api, path, status, message):
    api.post("/v1/jobs?detach=true", json=job("more", "a", 1))
    done = api.get(path)
    assert done.status_code == status, done.text
    assert message in done.text
