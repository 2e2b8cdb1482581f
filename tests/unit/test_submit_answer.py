"""POST /v1/jobs answers once the job and its first placements are stored, without waiting for
every launch: a job of thousands of tasks takes longer to launch than a client waits for an
answer. The launches go on on the controller's thread; nothing is launched twice."""

import threading
import time

import pytest

from meso_agentless.api.routes import jobs as job_routes
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster, FakeHost, FakePlane

TOKEN = "t" * 32
JOB = {"job": "many", "type": "batch",
       "tasks": [{"name": "t", "count": 6, "command": ["sleep", "10"],
                  "resources": {"cpus": 0.5, "mem": "64MiB"}}]}  # fmt: skip


class SlowLaunches(FakePlane):
    """Hosts whose launches wait until `go` is set."""

    def __init__(self) -> None:
        super().__init__({n: FakeHost(n, 4, 8 << 30) for n in ("h1", "h2")})
        self.go = threading.Event()
        self.waiting = threading.Event()  # a launch is held

    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict:
        self.waiting.set()
        assert self.go.wait(60), "never let go"
        return super().launch(host, request, timeout)


@pytest.fixture
def slow(tmp_path, monkeypatch):
    monkeypatch.setattr(job_routes, "FIRST_CYCLE", 0.2)
    plane = SlowLaunches()
    with api_client(FakeCluster.on(tmp_path, plane), TOKEN) as client:
        try:
            yield client, plane
        finally:
            plane.go.set()


def test_the_answer_comes_once_placed_and_the_launches_go_on_after_it(slow):
    api, plane = slow
    done = api.post("/v1/jobs", json=JOB)
    assert done.status_code == 201, done.text
    view = done.json()
    assert plane.waiting.is_set() and not plane.started  # answered with every launch held
    assert sorted((t["index"], t["state"]) for t in view["tasks"]) == [
        (i, "staging") for i in range(6)]  # fmt: skip
    assert all(t["host"] in ("h1", "h2") for t in view["tasks"])  # placed: intents stored

    plane.go.set()
    deadline = time.monotonic() + 30
    while (state := api.get("/v1/jobs/many").json())["state"] != "done":
        assert time.monotonic() < deadline, state
        for unit in list(plane.running()):
            plane.finish(unit)
        api.cluster.clock.advance(1.0)
        api.cluster.fleet.refresh()  # the runner's own cycles record what the hosts say
        time.sleep(0.05)
    assert state["outcome"]["code"] == 0
    assert sorted(plane.started.values()) == [1] * 6  # each launched once
    assert sorted((t["index"], t["attempt"]) for t in state["tasks"]) == [
        (i, 1) for i in range(6)]  # fmt: skip
    assert api.post("/v1/jobs", json=JOB).status_code == 200  # done already: not run again
    assert sorted(plane.started.values()) == [1] * 6


def test_a_scale_answers_once_placed_too(slow):
    api, plane = slow
    plane.go.set()
    service = {**JOB, "job": "svc", "type": "service"}
    assert api.post("/v1/jobs", json=service).status_code == 201
    plane.go.clear()
    plane.waiting.clear()
    scaled = api.post("/v1/jobs/svc/scale", json={"task": "t", "count": 8})
    assert scaled.status_code == 200, scaled.text
    assert plane.waiting.is_set() and len(plane.started) == 6
    states = sorted((t["index"], t["state"]) for t in scaled.json()["tasks"])
    assert states == [(i, "running") for i in range(6)] + [(6, "staging"), (7, "staging")]
    plane.go.set()
    deadline = time.monotonic() + 30
    while len(plane.started) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    api.cluster.fleet.refresh()
    assert sorted(plane.started.values()) == [1] * 8
