"""POST /v1/plan/job on a controller over a fake fleet, and core.jobdiff: what a job file would
change (the action, the field-level diff, the placements); nothing is stored or launched."""

import dataclasses

import pytest

from meso_agentless.core import jobdiff
from meso_agentless.core.model import Framework
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

TOKEN = "p" * 32
SERVER = {"name": "server", "count": 2, "command": ["sleep", "infinity"],
          "resources": {"cpus": 0.5, "mem": "64MiB"}}  # fmt: skip
JOB = {"job": "web", "type": "service", "framework": "web", "tasks": [SERVER]}


def job(**task) -> dict:
    return {**JOB, "tasks": [{**SERVER, **task}]}


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")},
                             (Framework("web", 2.0),))  # fmt: skip
    with api_client(cluster, TOKEN) as client:
        yield client


def plan(api, body, **kw):
    done = api.post("/v1/plan/job", json=body, **kw)
    assert done.status_code == 200, done.text
    return done.json()


def running_units(api) -> set[str]:
    return {t["unit"] for j in api.get("/v1/jobs").json()["jobs"] for t in j["tasks"]
            if t["state"] == "running"}  # fmt: skip


def test_a_new_job_is_created_and_its_placements_shown_but_nothing_runs(api):
    answer = plan(api, JOB)
    assert (answer["action"], answer["current"], answer["changes"]) == ("create", None, [])
    assert answer["spec"]["tasks"][0]["resources"]["mem"] == 64 * 2**20  # as stored
    assert sorted(p["index"] for p in answer["placements"]) == [0, 1]
    assert api.get("/v1/jobs").json()["jobs"] == []


def test_the_same_file_again_changes_nothing(api):
    assert api.post("/v1/jobs", json=JOB).status_code == 201
    yaml = (
        "job: web\ntype: service\nframework: web\ntasks:\n  - name: server\n    count: 2\n"
        "    command: [sleep, infinity]\n    resources: {cpus: 500m, mem: 64MiB}\n"
    )
    answer = api.post("/v1/plan/job", content=yaml,
                      headers={"Content-Type": "application/yaml"}).json()  # fmt: skip
    assert (answer["action"], answer["changes"], answer["placements"]) == ("none", [], [])
    assert answer["current"]["state"] == "active"


def test_a_count_alone_is_a_scaling_placing_only_the_added_instances(api):
    api.post("/v1/jobs", json=JOB)
    before = running_units(api)
    answer = plan(api, job(count=3))
    assert answer["action"] == "scale"
    assert answer["scale"] == [{"task": "server", "before": 2, "after": 3}]
    assert answer["changes"] == [{"path": "tasks[0].count", "kind": "changed", "before": 2,
                                  "after": 3}]  # fmt: skip
    assert [(p["task"], p["index"]) for p in answer["placements"]] == [("server", 2)]
    assert running_units(api) == before
    assert api.get("/v1/jobs/web").json()["spec"]["tasks"][0]["count"] == 2


def test_another_field_of_a_service_is_an_update_checked_with_max_parallel_headroom(api):
    api.post("/v1/jobs", json=JOB)
    # 1.5 CPUs fit beside an old 0.5-CPU instance on a 2-CPU host: one at a time fits
    answer = plan(api, job(resources={"cpus": 1.5, "mem": "64MiB"}, env={"A": "1"}))
    assert answer["action"] == "update" and "deployment" in answer["reason"]
    assert answer["changes"] == [
        {"path": "tasks[0].resources.cpus", "kind": "changed", "before": 0.5, "after": 1.5},
        {"path": "tasks[0].env.A", "kind": "added", "before": None, "after": "1"},
    ]
    assert len(answer["placements"]) == 1 and answer["unplaced"] == []
    update = answer["update"]
    assert (update["replace"], update["max_parallel"], update["fits"]) == (2, 1, True)
    assert update["summary"].startswith("replace 2 instance(s), 1 at a time")
    assert answer["running_spec"]["tasks"][0]["resources"]["cpus"] == 0.5
    # two at a time do not fit beside the old ones (1.5 + 1.5 + 0.5 on two 2-CPU hosts)
    wide = plan(api, {**job(resources={"cpus": 1.5, "mem": "64MiB"}),
                      "update": {"max_parallel": 2}})  # fmt: skip
    assert wide["update"]["fits"] is False and "does NOT fit" in wide["update"]["summary"]
    assert len(wide["unplaced"]) == 1
    assert running_units(api) == running_units(api)  # nothing launched or stopped
    assert api.get("/v1/jobs/web").json()["spec"]["tasks"][0]["resources"]["cpus"] == 0.5


def test_a_killed_job_runs_again_and_a_done_one_does_not(api):
    api.post("/v1/jobs", json=JOB)
    api.delete("/v1/jobs/web")
    answer = plan(api, JOB)
    assert (answer["action"], answer["current"]["state"]) == ("rerun", "killed")
    assert len(answer["placements"]) == 2


def test_what_can_never_be_placed_is_said(api):
    answer = plan(api, job(resources={"cpus": 64, "mem": "64MiB"}))
    assert answer["action"] == "create" and answer["never_placeable"]
    assert "cpus" in answer["never_placeable"][0]["reason"]


@pytest.mark.parametrize(("body", "says"), [
    (job(resources={"cpus": "lots"}), "tasks[0].resources.cpus"),
    ({**JOB, "extra": 1}, "extra: unknown field"),
])  # fmt: skip
def test_a_bad_file_gets_a_422_naming_the_field(api, body, says):
    done = api.post("/v1/plan/job", json=body)
    assert done.status_code == 422 and says in done.json()["error"]


def test_it_needs_the_token(api):
    assert api.post("/v1/plan/job", json=JOB, headers={"Authorization": ""}).status_code == 401


def test_changes_walk_dicts_and_lists_in_document_order():
    before = {"a": 1, "b": {"c": [1, 2, 3]}, "d": "x"}
    after = {"a": 1, "b": {"c": [1, 5]}, "e": True, "d": "x"}
    assert jobdiff.changes(before, after) == [
        jobdiff.Change("b.c[1]", "changed", 2, 5),
        jobdiff.Change("b.c[2]", "removed", before=3),
        jobdiff.Change("e", "added", after=True),
    ]
    assert jobdiff.changes({"n": 1}, {"n": 1.0}) == [jobdiff.Change("n", "changed", 1, 1.0)]


def test_decide_mirrors_what_submit_does():
    spec = job()
    active = jobdiff.Current(state="active", run=1, spec=spec, same_inventory=True)
    assert jobdiff.decide("web", None, spec).action == "create"
    assert jobdiff.decide("web", active, spec).action == "none"
    assert jobdiff.decide("web", active, job(count=5)).action == "scale"
    assert jobdiff.decide("web", active, job(count=5, command=["true"])).action == "update"
    batch = jobdiff.Current(state="active", run=1, spec={**spec, "type": "batch"},
                            same_inventory=True)  # fmt: skip
    other = {**job(command=["true"]), "type": "batch"}
    assert jobdiff.decide("web", batch, other).action == "replace"
    moved = jobdiff.Current(state="active", run=1, spec=spec, same_inventory=False)
    assert jobdiff.decide("web", moved, spec).action == "replace"
    done = jobdiff.Current(state="done", run=3, spec=spec, same_inventory=True)
    assert jobdiff.decide("web", done, spec).reason == "job 'web' is already done (run 3)"
    assert jobdiff.decide("web", done, job(count=1)).action == "rerun"
    failed = jobdiff.Current(state="failed", run=1, spec=spec, same_inventory=True)
    assert jobdiff.decide("web", failed, spec).action == "rerun"


def test_hosts_carry_their_inventory_attributes(api):
    nodes = api.cluster.controller.nodes
    nodes["h2"] = dataclasses.replace(nodes["h2"], attributes={"rack": "b", "disk": "ssd"})
    hosts = api.get("/v1/hosts").json()["hosts"]
    assert [h["attributes"] for h in hosts] == [{}, {"rack": "b", "disk": "ssd"}]
