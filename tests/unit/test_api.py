"""The HTTP API on a controller over a fake fleet: every route, the token, and what hostile or
malformed requests get (a 4xx naming the field, never a 500, nothing stored)."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from meso_agentless.core.model import Framework
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

TOKEN = "t" * 32
JOB = {"job": "web", "type": "service", "framework": "web",
       "tasks": [{"name": "server", "count": 2, "command": ["sleep", "infinity"],
                  "resources": {"cpus": 0.5, "mem": "64MiB"}}]}  # fmt: skip
YAML_JOB = """\
job: batch
tasks:
  - name: t
    count: 1
    command: ["true"]
    resources: {cpus: 0.25, mem: 32MiB}
"""


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")},
                             (Framework("web", 2.0),))  # fmt: skip
    with api_client(cluster, TOKEN) as client:
        yield client


def test_health_needs_no_token_and_every_other_route_does(api):
    assert api.get("/v1/health", headers={"Authorization": ""}).json()["ok"] is True
    paths = api.get("/v1/openapi.json").json()["paths"]
    routes = [(m.upper(), p) for p, ms in paths.items() for m in ms if p != "/v1/health"]
    routes.append(("GET", "/v1/openapi.json"))
    assert len(routes) >= 13
    for method, path in routes:
        path = path.replace("{name}", "web")
        for bad in ("", "Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
            done = api.request(method, path, headers={"Authorization": bad})
            assert done.status_code == 401, (method, path, bad)
            assert "bearer token" in done.json()["error"]


def test_submit_json_then_the_same_again_then_another_spec(api):
    done = api.post("/v1/jobs", json=JOB)
    assert done.status_code == 201, done.text
    view = done.json()
    assert view["state"] == "active" and len(view["tasks"]) == 2
    assert {t["state"] for t in view["tasks"]} == {"running"}
    assert api.post("/v1/jobs", json=JOB).status_code == 200
    scaled = api.post("/v1/jobs", json={**JOB, "tasks": [{**JOB["tasks"][0], "count": 3}]})
    assert scaled.status_code == 201 and len(scaled.json()["tasks"]) == 3  # a count: a scale
    batch = {**JOB, "job": "b", "type": "batch"}
    assert api.post("/v1/jobs", json=batch).status_code == 201
    conflict = api.post("/v1/jobs", json={**batch, "priority": 60})
    assert conflict.status_code == 409 and "another spec" in conflict.json()["error"]
    assert [j["job"] for j in api.get("/v1/jobs").json()["jobs"]] == ["web", "b"]


def test_submit_yaml_and_read_one_job(api):
    done = api.post("/v1/jobs", content=YAML_JOB, headers={"Content-Type": "application/yaml"})
    assert done.status_code == 201, done.text
    one = api.get("/v1/jobs/batch").json()
    assert one["job"] == "batch" and one["tasks"][0]["host"] in ("h1", "h2")
    assert api.get("/v1/jobs/nosuch").status_code == 404


@pytest.mark.parametrize(("body", "kind", "status", "says"), [
    ({**JOB, "tasks": [{**JOB["tasks"][0], "resources": {"cpus": "lots"}}]}, "json", 422,
     "tasks[0].resources.cpus"),
    ({**JOB, "extra": 1}, "json", 422, "extra: unknown field"),
    ([1, 2], "json", 422, "a job is a mapping"),
    ("{not json", "raw-json", 422, "body: not JSON"),
    ("[" * 100_000, "raw-json", 422, "body: not JSON"),
    ("job: [unclosed", "yaml", 422, "invalid YAML"),
    ("job: x\ntasks:\n  - name: t\n    command: [a]\n    count: -1\n", "yaml", 422,
     "line 5: tasks[0].count"),
    ("x" * (2 << 20), "yaml", 413, "request body over"),
    ("job: x", "text/plain", 422, "content-type"),
])  # fmt: skip
def test_bad_jobs_get_a_4xx_naming_the_field_and_store_nothing(api, body, kind, status, says):
    if kind == "json":
        done = api.post("/v1/jobs", json=body)
    else:
        ctype = {"raw-json": "application/json", "yaml": "application/yaml"}.get(kind, kind)
        done = api.post("/v1/jobs", content=body, headers={"Content-Type": ctype})
    assert done.status_code == status, done.text
    assert says in done.json()["error"]
    assert "Traceback" not in done.text
    assert api.get("/v1/jobs").json() == {"jobs": []}


def test_a_job_that_could_never_fit_is_422_with_the_reasons_and_stores_nothing(api):
    huge = {**JOB, "tasks": [{**JOB["tasks"][0], "resources": {"cpus": 64}}]}
    done = api.post("/v1/jobs", json=huge)
    assert done.status_code == 422
    body = done.json()
    assert body["error"] == 'cannot be placed: no host fits: dimension "cpus" exhausted on 2 hosts'
    assert body["unplaced"][0] == {"task": "server", "index": 0, "reason": body["error"][18:]}
    assert api.get("/v1/jobs").json() == {"jobs": []}


def test_scale_kill_and_their_bad_requests(api):
    api.post("/v1/jobs", json=JOB)
    scaled = api.post("/v1/jobs/web/scale", json={"task": "server", "count": 3})
    assert scaled.status_code == 200 and len(scaled.json()["tasks"]) == 3
    bad = api.post("/v1/jobs/web/scale", json={"task": "server", "count": -1})
    assert bad.status_code == 422 and bad.json()["error"].startswith("count:")
    assert api.post("/v1/jobs/web/scale", json={"task": "nosuch", "count": 1}).status_code == 404
    assert api.post("/v1/jobs/nosuch/scale", json={"task": "x", "count": 1}).status_code == 404
    killed = api.delete("/v1/jobs/web")
    assert killed.status_code == 200
    assert {s["state"] for s in killed.json()["stopped"]} == {"killed"}
    assert api.get("/v1/jobs/web").json()["state"] == "killed"
    assert api.cluster.plane.running() == {}


def test_hosts_and_frameworks_with_run_time_changes(api):
    api.post("/v1/jobs", json=JOB)
    hosts = api.get("/v1/hosts").json()["hosts"]
    assert [h["host"] for h in hosts] == ["h1", "h2"]
    assert all(h["state"] == "up" and h["capacity"]["cpus"] == 2.0 for h in hosts)
    assert sum(h["allocated"].get("cpus", 0) for h in hosts) == 1.0
    assert api.get("/v1/hosts/h2").json()["host"] == "h2"
    assert api.get("/v1/hosts/h9").status_code == 404
    web = api.patch("/v1/frameworks/web", json={"weight": 3, "quota": {"cpus": 0, "mem": "1GiB"}})
    assert web.status_code == 200, web.text
    assert web.json()["weight"] == 3.0 and web.json()["quota"] == {"cpus": 0.0, "mem": 1 << 30}
    frameworks = {f["name"]: f for f in api.get("/v1/frameworks").json()["frameworks"]}
    assert frameworks["web"]["share"] == 0.25 and frameworks["web"]["tasks"] == 2
    assert api.patch("/v1/frameworks/nosuch", json={"weight": 1}).status_code == 404
    for bad in ({"weight": -1}, {"weight": "x"}, {"quota": {"cpus": "lots"}}, {"nope": 1}, {}):
        done = api.patch("/v1/frameworks/web", json=bad)
        assert done.status_code == 422, (bad, done.text)


def test_plan_answers_like_meso_plan_and_launches_nothing(api):
    done = api.post("/v1/plan", json={"jobs": [JOB, {**JOB, "job": "huge", "tasks": [
        {**JOB["tasks"][0], "count": 1, "resources": {"cpus": 64}}]}]})  # fmt: skip
    assert done.status_code == 200, done.text
    result = done.json()
    assert set(result) == {"placements", "unplaced", "shares", "revocations", "unreachable"}
    assert len(result["placements"]) == 2
    assert 'dimension "cpus" exhausted on 2 hosts' in result["unplaced"][0]["reason"]
    assert api.cluster.plane.running() == {}
    assert api.post("/v1/plan", json={"jobs": [JOB, JOB]}).status_code == 422
    assert "jobs[0]" in api.post("/v1/plan", json={"jobs": [{"job": 1}]}).json()["error"]


def test_metrics_parse_with_prometheus_own_parser(api):
    api.post("/v1/jobs", json=JOB)
    api.get("/v1/jobs/nosuch")
    text = api.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    tasks = {s.labels["state"]: s.value for s in families["meso_tasks"].samples}
    assert tasks == {"running": 2.0}
    hosts = {s.labels["state"]: s.value for s in families["meso_hosts"].samples}
    assert hosts == {"up": 2.0}
    shares = {s.labels["framework"]: s.value
              for s in families["meso_framework_dominant_share"].samples}  # fmt: skip
    assert shares["web"] == 0.25
    codes = {(s.labels["method"], s.labels["code"]) for s in families["meso_api_requests"].samples
             if s.name == "meso_api_requests_total"}  # fmt: skip
    assert ("POST", "201") in codes and ("GET", "404") in codes
    assert "meso_cycle_seconds" in families and "meso_allocation_seconds" in families


def test_events_stream_task_states_for_one_job(api):
    with api.stream("GET", "/v1/events?job=web") as stream:
        api.post("/v1/jobs", json=JOB)
        events = []
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if any(e["kind"] == "job" and "code" in e["data"] for e in events):
                break
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "job" and "placed" in kinds and "task" in kinds
    assert events[-1]["data"]["code"] == 0 and events[-1]["message"] == (
        "web: service up: 2 instances running"
    )
    assert all(e["job"] == "web" for e in events)


def test_the_openapi_document_describes_the_routes_and_the_job_schema(api):
    document = api.get("/v1/openapi.json").json()
    assert {"/v1/jobs", "/v1/hosts", "/v1/frameworks/{name}", "/v1/events"} <= set(
        document["paths"]
    )
    assert "Job" in document["components"]["schemas"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["job", "tasks", "type", "name", "command", "count",
                                       "resources", "cpus", "framework", "x"]), children,
                      max_size=5),
    max_leaves=20,
))  # fmt: skip
def test_no_request_body_gets_a_500(api, body):
    text = json.dumps(body)  # NaN and Infinity too: Python's JSON reader takes them
    json_type = {"Content-Type": "application/json"}
    for path in ("/v1/jobs", "/v1/plan", "/v1/jobs/web/scale"):
        done = api.post(path, content=text, headers=json_type)
        assert done.status_code < 500, (path, body, done.text)
        assert "error" in done.json() or done.status_code < 300
    done = api.patch("/v1/frameworks/web", content=text, headers=json_type)
    assert done.status_code < 500, (body, done.text)


def test_framework_changes_are_strict_and_a_quota_can_be_lifted(api):
    for bad in ({"weight": "2"}, {"weight": True}, {"weight": 5e-324}, {"weight": 0.0001}):
        done = api.patch("/v1/frameworks/web", json=bad)
        assert done.status_code == 422, (bad, done.text)
        assert done.json()["error"].startswith("weight")
    assert api.patch("/v1/frameworks/web", json={"quota": {"cpus": 1}}).json()["quota"] == {
        "cpus": 1.0}  # fmt: skip
    lifted = api.patch("/v1/frameworks/web", json={"quota": None})
    assert lifted.status_code == 200 and lifted.json()["quota"] == {}


def test_a_trailing_slash_is_not_a_way_around_the_token(api):
    done = api.get("/v1/jobs/", headers={"Authorization": ""}, follow_redirects=False)
    assert done.status_code in (401, 404)


def test_logs_of_a_task_on_an_unreachable_host_say_so_at_once(api):
    api.post("/v1/jobs", json=JOB)
    host = api.get("/v1/jobs/web").json()["tasks"][0]["host"]
    api.cluster.plane.cut(host)
    for _ in range(6):  # judged by its last answer: five seconds of silence
        api.cluster.clock.advance(1)
        api.cluster.fleet.refresh()
    done = api.get("/v1/jobs/web/logs", params={"task": "server", "index": 0})
    assert done.status_code == 503 and "unreachable" in done.json()["error"]


def test_running_the_same_active_job_again_tells_its_followers_the_outcome_again(api):
    api.post("/v1/jobs", json=JOB)
    for _ in range(20):
        if api.get("/v1/jobs/web").json()["outcome"]:
            break
        api.cluster.controller.tick()
    with api.stream("GET", "/v1/events?job=web") as stream:
        assert api.post("/v1/jobs", json=JOB).status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["kind"] == "job" and "code" in event["data"]:
                    break
    assert event["message"] == "web: service up: 2 instances running"


def test_a_done_job_posted_again_answers_its_outcome_and_runs_only_with_again(api):
    assert api.post("/v1/jobs", content=YAML_JOB,
                    headers={"Content-Type": "application/yaml"}).status_code == 201  # fmt: skip
    for _ in range(20):
        if api.get("/v1/jobs/batch").json()["state"] == "done":
            break
        for unit in list(api.cluster.plane.running()):
            api.cluster.plane.finish(unit)
        api.cluster.step()
    before = api.get("/v1/jobs/batch").json()
    assert before["state"] == "done"
    posted = {"content": YAML_JOB, "headers": {"Content-Type": "application/yaml"}}
    same = api.post("/v1/jobs", **posted)
    assert same.status_code == 200 and same.json()["run"] == before["run"]
    assert same.json()["outcome"]["message"].startswith("already done (run 1)")
    bad = api.post("/v1/jobs?again=perhaps", **posted)
    assert bad.status_code in (400, 422) and "again" in bad.json()["error"]
    assert api.get("/v1/jobs/batch").json()["run"] == before["run"]
    rerun = api.post("/v1/jobs?again=true", **posted)
    assert rerun.status_code == 201 and rerun.json()["run"] == before["run"] + 1
