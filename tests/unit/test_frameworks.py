"""Frameworks that schedule their own tasks (the scheduler API) on a fake fleet: offers in DRF
order, accept, decline with filters, suppress and revive, bad accepts, failover, takeover,
reconcile; and the pure parts (OfferTaker, over_offer, choose_ports, refused-offer filters)."""

import json

import pytest

from meso_agentless.controller.loop import JobConflict
from meso_agentless.controller.schedulers import (
    FAILOVER,
    OFFER_TIMEOUT,
    NotSubscribed,
    OfferConflict,
)
from meso_agentless.core.allocator import allocate
from meso_agentless.core.model import Filter, Framework, Host, TaskGroup
from meso_agentless.core.offers import JobScheduler, OfferTaker, choose_ports, over_offer
from meso_agentless.errors import UsageError
from meso_agentless.spec import job_from_text
from meso_agentless.taskspec import framework_task
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

GiB = 1 << 30


@pytest.fixture
def cluster(tmp_path, state):
    """On each store: SQLite and PostgreSQL."""
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")}, state=state)
    cluster.controller.schedulers.start()
    cluster.step()
    return cluster


def subscribe(cluster, name, failover=None):
    events = []
    stream = cluster.controller.schedulers.subscribe(name, failover, callback=events.append)
    return stream, events


def offers(events):
    return [o for e in events if e.kind == "offers" for o in e.data["offers"]]


def task(name, cpus=0.5, mem="256MiB", **more):
    return {"name": name, "argv": ["sleep", "60"], "resources": {"cpus": cpus, "mem": mem}, **more}


def accept(cluster, framework, offer_ids, *tasks):
    checked = [framework_task(framework, t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    return cluster.controller.schedulers.accept(framework, offer_ids, checked)


def test_two_frameworks_that_want_everything_are_offered_half_each(cluster):
    _, a = subscribe(cluster, "alpha")
    _, b = subscribe(cluster, "beta")
    cluster.step()
    for events in (a, b):
        assert sum(o["resources"]["cpus"] for o in offers(events)) == 2  # of 4
        assert len({o["host"] for o in offers(events)}) == len(offers(events))  # one per host
    offer = offers(a)[0]
    assert offer["expires"] == pytest.approx(cluster.clock.time() + OFFER_TIMEOUT, abs=2)
    count = len(offers(a)) + len(offers(b))
    cluster.step()  # held offers are not offered again
    assert len(offers(a)) + len(offers(b)) == count


def test_alone_a_framework_is_offered_whole_hosts(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    assert sorted((o["host"], o["resources"]["cpus"], o["resources"]["mem"])
                  for o in offers(events)) == [("h1", 2, 4 * GiB), ("h2", 2, 4 * GiB)]  # fmt: skip


def test_accept_launches_ordinary_jobs_and_the_rest_of_the_offer_goes_back(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    first = offers(events)
    host = first[0]["host"]
    launched = accept(cluster, "alpha", [first[0]["offer_id"]], task("t1"), task("t2", cpus=1))
    assert [t["job"] for t in launched] == ["alpha-t1", "alpha-t2"]
    assert {t["host"] for t in launched} == {host} and {t["state"] for t in launched} == {"running"}
    job = cluster.controller.store.job("alpha-t1")
    assert job.framework == "alpha" and job.type == "batch"
    assert cluster.plane.where("meso-alpha-t1_task_0_1") == host
    updates = [e.data for e in events if e.kind == "update"]
    assert {(u["task_id"], u["state"]) for u in updates} == {("t1", "running"), ("t2", "running")}
    cluster.step()
    again = [o for o in offers(events) if o["host"] == host and o not in first]
    assert again and again[0]["resources"]["cpus"] == 0.5  # what the two tasks left
    cluster.plane.finish("meso-alpha-t1_task_0_1", 0)
    cluster.step()
    assert ("t1", "finished") in {(e.data["task_id"], e.data["state"]) for e in events
                                  if e.kind == "update"}  # fmt: skip
    assert cluster.controller.store.job("alpha-t1").state == "done"
    shares = {f.name: f.allocated for f in cluster.controller.frameworks_holding(
        cluster.controller.store.tasks_in(["running"]))}  # fmt: skip
    assert shares["alpha"]["cpus"] >= 1000  # t2, and whatever it holds in offers


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("over", "more than the offers hold: cpus"),
        ("host", "is not the host of the offers"),
        ("unknown", "is not an offer held by this framework"),
        ("twice", "is named twice"),
        ("port", "port 80 is not in the offers"),
        ("dup", "is given twice"),
    ],
)
def test_a_bad_accept_launches_nothing_and_gives_the_offer_back(cluster, case, message):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    other = "h2" if offer["host"] == "h1" else "h1"
    ids, tasks = [offer["offer_id"]], [task("t1")]
    if case == "over":
        tasks = [task("t1", cpus=1.5), task("t2", cpus=1)]
    elif case == "host":
        tasks = [task("t1", host=other)]
    elif case == "unknown":
        ids = ["nope"]
    elif case == "twice":
        ids = ids * 2
    elif case == "port":
        tasks = [task("t1", ports=[80])]
    elif case == "dup":
        tasks = [task("t1"), task("t1")]
    with pytest.raises(OfferConflict, match=message):
        accept(cluster, "alpha", ids, *tasks)
    assert cluster.plane.running() == {}
    assert cluster.controller.store.jobs() == []
    held = {o.id for o in cluster.controller.schedulers.held()}
    assert (offer["offer_id"] in held) == (case == "unknown")
    if case != "unknown":
        cluster.step()  # the host is offered again, whole
        again = offers(events)[-1]
        assert again["host"] == offer["host"] and again["offer_id"] != offer["offer_id"]
        assert again["resources"]["cpus"] == 2


def test_an_expired_or_used_offer_is_refused_by_name(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    cluster.step(OFFER_TIMEOUT + 1)
    assert any(e.kind == "rescind" and e.data["offer_id"] == offer["offer_id"] for e in events)
    with pytest.raises(OfferConflict, match="already used, declined, rescinded or expired"):
        accept(cluster, "alpha", [offer["offer_id"]], task("t1"))
    assert cluster.plane.running() == {}


def test_bad_task_fields_are_named():
    for data, field in [
        ({"name": "a", "argv": []}, "tasks[0].argv"),
        ({"name": "a", "argv": "sleep 1"}, "tasks[0].argv"),
        ({"name": "A", "argv": ["x"]}, "tasks[0].name"),
        ({"name": "a", "argv": ["x"], "resources": {"cpus": 0}}, "tasks[0].resources.cpus"),
        ({"name": "a", "argv": ["x"], "ports": [0]}, "tasks[0].ports[0]"),
        ({"name": "a", "argv": ["x"], "env": {"A": "\0"}}, "tasks[0].env"),
        ({"name": "a", "argv": ["x"], "user": "root;"}, "tasks[0].user"),
        ({"name": "a", "argv": ["x"], "shell": True}, "tasks[0]: unknown field"),
        ({"argv": ["x"]}, "tasks[0].name: required"),
        ({"name": "a" * 60, "argv": ["x"]}, "tasks[0].name"),
    ]:
        with pytest.raises(UsageError) as caught:
            framework_task("alpha", data, "tasks[0]")
        assert str(caught.value).startswith(field), (data, str(caught.value))
        assert "\n" not in str(caught.value)


def test_decline_filters_the_host_until_it_could_offer_more(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    first = {o["host"]: o for o in offers(events)}
    assert set(first) == {"h1", "h2"}  # alone: both hosts, one round each
    launched = accept(cluster, "alpha", [first["h1"]["offer_id"]], task("t1"))
    cluster.controller.schedulers.decline("alpha", [first["h2"]["offer_id"]], 60)
    cluster.step()
    rest = [o for o in offers(events) if o["host"] == "h1" and o is not first["h1"]]
    assert rest, "h1's remainder is offered again"
    cluster.controller.schedulers.decline("alpha", [rest[-1]["offer_id"]], 60)
    count = len(offers(events))
    cluster.step()
    cluster.step()
    assert len(offers(events)) == count  # both hosts refused
    cluster.plane.finish(launched[0]["unit"], 0)  # h1 could offer more now: the filter lapses
    cluster.step()
    new = offers(events)[count:]
    assert [o["host"] for o in new] == ["h1"] and new[0]["resources"]["cpus"] == 2


def test_suppress_stops_offers_and_revive_clears_filters(cluster):
    schedulers = cluster.controller.schedulers
    _, events = subscribe(cluster, "alpha")
    schedulers.suppress("alpha")
    cluster.step()
    assert offers(events) == []
    schedulers.revive("alpha")
    cluster.step()
    got = offers(events)
    schedulers.decline("alpha", [o["offer_id"] for o in got], 3600)
    cluster.step()
    assert len(offers(events)) == len(got)
    schedulers.revive("alpha")
    cluster.step()
    assert len(offers(events)) == 2 * len(got)


def test_failover_keeps_tasks_within_the_timeout_and_kills_them_past_it(cluster):
    schedulers = cluster.controller.schedulers
    stream, events = subscribe(cluster, "alpha", failover=30)
    cluster.step()
    offer = offers(events)[0]
    accept(cluster, "alpha", [offer["offer_id"]], task("t1"))
    schedulers.detach("alpha", stream)
    cluster.step(20)
    assert cluster.plane.running()  # within the timeout: still running
    _, again = subscribe(cluster, "alpha")  # fails over in time
    assert again[0].kind == "subscribed" and again[0].data["failover_timeout"] == 30
    schedulers.reconcile("alpha", [])
    assert [(e.data["task_id"], e.data["state"]) for e in again if e.kind == "update"] == [
        ("t1", "running")
    ]
    schedulers.detach("alpha", schedulers.subscribers["alpha"].stream)
    cluster.step(20)
    cluster.step(11)
    assert cluster.plane.running() == {}
    assert cluster.controller.store.job("alpha-t1").state == "killed"
    assert "alpha" not in schedulers.subscribers and cluster.controller.store.schedulers() == {}
    assert any("failover timeout (30 s) passed" in m for m in cluster.messages())


def test_a_restarted_controller_gives_registered_frameworks_their_failover_anew(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB")})
    cluster.controller.schedulers.start()
    subscribe(cluster, "alpha")
    assert cluster.controller.store.schedulers()["alpha"].failover == FAILOVER
    again = FakeCluster.of(tmp_path, {"h1": (2, "4GiB")})
    again.controller.schedulers.start()
    assert again.controller.schedulers.subscribers["alpha"].left is not None


def test_a_second_subscription_takes_over_and_the_first_ends_with_an_error(cluster):
    _, first = subscribe(cluster, "alpha")
    cluster.step()
    _, second = subscribe(cluster, "alpha")
    assert first[-1].kind == "error" and "took over" in first[-1].message
    assert second[0].kind == "subscribed"
    assert first[0].data["framework_id"] == second[0].data["framework_id"]
    cluster.step()
    assert offers(second), "the new stream gets the offers"


def test_names_are_not_shared_between_job_files_and_framework_schedulers(cluster):
    subscribe(cluster, "alpha")
    job = job_from_text("job: j\nframework: alpha\ntasks: [{name: t, command: [x]}]\n")
    with pytest.raises(JobConflict, match="schedules its own tasks"):
        cluster.controller.submit(job)
    cluster.controller.submit(job.model_copy(update={"framework": "beta"}))
    with pytest.raises(OfferConflict, match="has jobs run from job files"):
        subscribe(cluster, "beta")


def test_kill_reconcile_and_teardown(cluster):
    schedulers = cluster.controller.schedulers
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    accept(cluster, "alpha", [offer["offer_id"]], task("t1"), task("t2"))
    schedulers.kill("alpha", "t1")
    cluster.step()
    assert cluster.controller.store.job("alpha-t1").state == "killed"
    with pytest.raises(NotSubscribed, match="no task 'zz'"):
        schedulers.kill("alpha", "zz")
    schedulers.reconcile("alpha", ["t1", "zz"])
    latest = {e.data["task_id"]: e.data["state"] for e in events if e.kind == "update"}
    assert latest["t1"] == "killed" and latest["zz"] == "unknown"
    schedulers.teardown("alpha")
    assert cluster.plane.running() == {} and events[-1].kind == "error"
    with pytest.raises(NotSubscribed):
        schedulers.reconcile("alpha", [])


def test_a_retried_task_reuses_its_name_as_a_new_run(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    launched = accept(cluster, "alpha", [offers(events)[0]["offer_id"]], task("t1"))
    cluster.plane.finish(launched[0]["unit"], 3)
    cluster.step()
    assert cluster.controller.store.job("alpha-t1").state == "failed"
    offer = [o for o in offers(events) if o["host"] == launched[0]["host"]][-1]
    again = accept(cluster, "alpha", [offer["offer_id"]], task("t1"))
    assert again[0]["unit"] == "meso-alpha-t1_task_0_2" and again[0]["state"] == "running"
    with pytest.raises(OfferConflict, match="still running"):
        cluster.step()
        accept(cluster, "alpha", [offers(events)[-1]["offer_id"]], task("t1"))


# -- the pure parts ---------------------------------------------------------------------------


def hosts(*names, cpus=2000, mem=4 * GiB):
    return [Host(n, {"cpus": cpus, "mem": mem}) for n in names]


def test_offer_takers_take_task_sized_slices_in_drf_order_and_whole_hosts_alone():
    size = {"cpus": 500, "mem": 256 << 20}
    takers = [OfferTaker("a", quantum=size), OfferTaker("b", holding={"h1"}, quantum=size)]
    plan = allocate(hosts("h1", "h2"), [Framework("a"), Framework("b")], takers)
    a, b = takers[0].taken, takers[1].taken
    assert set(b) == {"h2"}  # it holds an offer on h1 already
    assert a["h1"].resources == {"cpus": 2000, "mem": 1 << 30}  # four slices of its size
    assert b["h2"].resources == {"cpus": 2000, "mem": 1 << 30}  # taken in turns with a
    assert len(plan.placements) == 8 and plan.shares["a"] == plan.shares["b"]
    alone = OfferTaker("a", quantum=size)
    assert len(allocate(hosts("h1", "h2", "h3"), [Framework("a")], [alone]).placements) == 3
    assert {o.resources["cpus"] for o in alone.taken.values()} == {2000}


def test_beside_a_waiting_job_a_framework_takes_one_task_at_a_time_from_a_tie():
    size = {"cpus": 500, "mem": 64 << 20}
    group = TaskGroup("web", "s", "web", 8, size)
    taker = OfferTaker("sweep", quantum=size)
    busy = Host("h1", {"cpus": 4000, "mem": 4 * GiB}, used={"cpus": 2000, "mem": 128 << 20})
    fws = [Framework("sweep", allocated={"cpus": 1000}), Framework("web", allocated={"cpus": 1000})]
    plan = allocate([busy], fws, [JobScheduler("web", [group]), taker])
    web = [p for p in plan.placements if p.framework == "web"]
    assert len(web) == 2 and taker.taken["h1"].resources == {"cpus": 1000, "mem": 128 << 20}


def test_offer_taker_skips_hosts_below_the_smallest_offer():
    taker = OfferTaker("a")
    small = [Host("h1", {"cpus": 2000, "mem": 4 * GiB}, used={"cpus": 1995})]
    assert allocate(small, [Framework("a")], [taker]).placements == []


def test_a_refused_offer_filter_lapses_when_the_host_could_offer_more():
    declined = {"cpus": 500, "mem": GiB}
    busy = Host("h1", {"cpus": 2000, "mem": 4 * GiB}, used={"cpus": 1500, "mem": 3 * GiB})
    filters = [Filter("a", "h1", 100.0, declined)]
    assert (
        allocate([busy], [Framework("a")], [OfferTaker("a")], now=1, filters=filters).placements
        == []
    )
    free = Host("h1", {"cpus": 2000, "mem": 4 * GiB}, used={"cpus": 1000, "mem": 3 * GiB})
    assert len(allocate([free], [Framework("a")], [OfferTaker("a")], now=1,
                        filters=filters).placements) == 1  # fmt: skip


def test_over_offer_and_choose_ports():
    assert (
        over_offer({"cpus": 1000, "mem": GiB}, [{"cpus": 500}, {"cpus": 500, "ports": 9}]) is None
    )
    assert over_offer({"cpus": 1000}, [{"cpus": 600}, {"cpus": 500}]) == (
        "cpus: the tasks ask 1.1, the offers hold 1"
    )
    assert over_offer({"cpus": 1000}, [{"gpus": 1}]) == "gpus: the tasks ask 1, the offers hold 0"
    ranges = ((8000, 8002),)
    assert choose_ports(ranges, [([8001], 1), (None, 2)]) == [[8001], [8000, 8002]]
    assert choose_ports(ranges, [(None, 4)]) == "ports: the tasks ask 4 more, the offers hold 3"
    assert choose_ports(ranges, [([9000], 1)]) == "port 9000 is not in the offers"
    assert choose_ports(ranges, [([8000], 1), ([8000], 1)]) == "port 8000 is asked for twice"


# -- over HTTP ---------------------------------------------------------------------------------

TOKEN = "f" * 32


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")})
    cluster.controller.schedulers.start()
    with api_client(cluster, TOKEN) as client:
        yield client


def sse_events(stream):
    """(kind, data) of each event on an SSE stream, as they come."""
    kind = None
    for line in stream.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            yield kind, json.loads(line[6:])
            kind = None


def test_the_scheduler_api_over_http(api):
    base = "/v1/frameworks/alpha"
    assert api.post(f"{base}/subscribe", headers={"Authorization": "Bearer x"}).status_code == 401
    assert api.post(f"{base}/decline", json={"offer_ids": ["x"]}).status_code == 404
    bad = api.post(f"{base}/subscribe", json={"failover_timeout": -1})
    assert bad.status_code == 422 and bad.json()["error"].startswith("failover_timeout:")
    with api.stream("POST", f"{base}/subscribe", json={"failover_timeout": 5}) as stream:
        events = sse_events(stream)
        kind, data = next(events)
        assert kind == "subscribed" and data["failover_timeout"] == 5 and data["framework_id"]
        kind, data = next(e for e in events if e[0] == "offers")
        offer = data["offers"][0]
        over = {"offer_ids": [offer["offer_id"]], "tasks": [task("t1", cpus=3)]}
        refused = api.post(f"{base}/accept", json=over)
        assert refused.status_code == 409 and "cpus: the tasks ask 3" in refused.json()["error"]
        kind, data = next(e for e in events if e[0] == "offers")  # given back: offered anew
        offer = next(o for o in data["offers"] if o["host"] == offer["host"])
        bad = {"offer_ids": [offer["offer_id"]], "tasks": [{"name": "t1", "argv": [""]}]}
        refused = api.post(f"{base}/accept", json=bad)
        assert refused.status_code == 422
        assert refused.json()["error"] == "tasks[0].argv: command must not be empty"
        kind, data = next(e for e in events if e[0] == "offers")
        offer = next(o for o in data["offers"] if o["host"] == offer["host"])
        good = {"offer_ids": [offer["offer_id"]], "tasks": [task("t1", ports=[31005])]}
        done = api.post(f"{base}/accept", json=good)
        assert done.status_code == 200, done.text
        [launched] = done.json()["launched"]
        assert launched["state"] == "running" and launched["ports"] == [31005]
        kind, data = next(e for e in events if e[0] == "update")
        assert (data["task_id"], data["state"]) == ("t1", "running")
        assert api.get("/v1/jobs/alpha-t1").json()["framework"] == "alpha"
        assert api.post(f"{base}/reconcile", json={"task_ids": ["t1"]}).json() == {"reconciling": 1}
        kind, data = next(e for e in events if e[0] == "update")
        assert data["state"] == "running"
        assert api.post(f"{base}/kill", json={"task_id": "t1"}).status_code == 200
        kind, data = next(e for e in events if e[0] == "update")
        assert data["state"] == "killed"
        assert api.delete(base).status_code == 200
        assert next(events)[0] == "error"
    assert api.post(f"{base}/suppress").status_code == 404


@pytest.mark.parametrize(
    ("verb", "body", "status", "start"),
    [
        ("accept", b"[1]", 422, "body: must be an object"),
        ("accept", b"{", 422, "body: not JSON"),
        ("accept", b'{"offer_ids": "x", "tasks": []}', 422, "offer_ids: must be a non-empty"),
        ("accept", b'{"offer_ids": ["x"], "tasks": {}}', 422, "tasks: must be a list"),
        ("accept", b'{"offer_ids": ["x"], "tasks": [], "x": 1}', 422, "x: unknown field"),
        ("accept", b'{"offer_ids": ["x"], "tasks": [{"name": "a", "argv": ["x"]}]}', 409,
         "offer_ids[0]: offer x is not an offer held"),
        ("decline", b'{"offer_ids": []}', 422, "offer_ids:"),
        ("decline", b'{"offer_ids": ["x"], "refuse_seconds": -1}', 422, "refuse_seconds:"),
        ("kill", b'{"task_id": 5}', 422, "task_id:"),
        ("reconcile", b'{"task_ids": "all"}', 422, "task_ids:"),
        ("subscribe", b'{"failover_timeout": "1m"}', 422, "failover_timeout:"),
    ],
)  # fmt: skip
def test_hostile_scheduler_calls_get_one_line_naming_the_field(api, verb, body, status, start):
    with api.stream("POST", "/v1/frameworks/alpha/subscribe") as stream:
        assert next(sse_events(stream))[0] == "subscribed"  # only the body is wrong below
        done = api.post(f"/v1/frameworks/alpha/{verb}", content=body,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert done.status_code == status, done.text
    assert done.json()["error"].startswith(start) and "\n" not in done.json()["error"]
    assert api.cluster.controller.store.jobs() == []
    bad_name = api.post("/v1/frameworks/Bad_Name/suppress")
    assert bad_name.status_code == 422


# -- what the controller must never do to a framework's own tasks --------------------------------


def test_a_launch_the_host_refuses_is_lost_for_the_framework_and_never_placed_elsewhere(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    cluster.plane.by_name[offer["host"]].refuse = "admission: not enough cpus"
    launched = accept(cluster, "alpha", [offer["offer_id"]], task("t1"), task("t2"))
    assert {t["state"] for t in launched} == {"lost"}
    assert all("admission: not enough cpus" in t["reason"] for t in launched)
    for _ in range(5):
        cluster.step()
    assert cluster.plane.running() == {}  # nothing placed on the other host by the controller
    assert cluster.controller.store.job("alpha-t1").state == "failed"
    assert ("t1", "lost") in {(e.data["task_id"], e.data["state"]) for e in events
                              if e.kind == "update"}  # fmt: skip


def test_a_frameworks_task_cannot_be_scaled_or_its_name_taken_by_a_job_file(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    accept(cluster, "alpha", [offers(events)[0]["offer_id"]], task("t1"))
    with pytest.raises(JobConflict, match="task of framework alpha"):
        cluster.controller.scale("alpha-t1", "task", 3)
    job = job_from_text("job: alpha-t1\nframework: web\ntasks: [{name: task, command: [x]}]\n")
    with pytest.raises(JobConflict, match="task of framework alpha"):
        cluster.controller.submit(job)
    assert len(cluster.plane.running()) == 1


def test_a_drained_host_stops_a_frameworks_task_and_leaves_the_retry_to_it(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    accept(cluster, "alpha", [offer["offer_id"]], task("t1"))
    cluster.controller.drain(offer["host"], deadline=0)
    for _ in range(4):
        cluster.step()
    assert cluster.plane.running() == {}
    [row] = cluster.controller.store.tasks("alpha-t1")
    assert row.state.value == "killed" and "its framework places it again" in row.reason


def test_a_new_subscription_is_offered_again_after_a_suppress(cluster):
    schedulers = cluster.controller.schedulers
    stream, _ = subscribe(cluster, "alpha")
    schedulers.suppress("alpha")
    schedulers.detach("alpha", stream)
    _, again = subscribe(cluster, "alpha")
    cluster.step()
    assert offers(again)


def test_killing_a_finished_task_changes_nothing(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    [launched] = accept(cluster, "alpha", [offers(events)[0]["offer_id"]], task("t1"))
    cluster.plane.finish(launched["unit"], 0)
    cluster.step()
    assert cluster.controller.schedulers.kill("alpha", "t1") == []
    assert cluster.controller.store.job("alpha-t1").state == "done"


def test_a_framework_name_too_long_for_its_tasks_is_refused(cluster):
    with pytest.raises(UsageError, match="longer than 61"):
        subscribe(cluster, "a" * 62)


def test_a_cut_host_rescinds_its_offers_and_they_cannot_be_used(cluster):
    _, events = subscribe(cluster, "alpha")
    cluster.step()
    offer = offers(events)[0]
    cluster.plane.cut(offer["host"])
    for _ in range(7):  # unreachable after 5 s of silence
        cluster.step()
    assert any(e.kind == "rescind" and e.data["offer_id"] == offer["offer_id"] for e in events)
    with pytest.raises(OfferConflict, match="already used, declined, rescinded or expired"):
        accept(cluster, "alpha", [offer["offer_id"]], task("t1"))
    assert cluster.plane.running() == {}
    cluster.plane.heal(offer["host"])
    for _ in range(3):
        cluster.step()
    assert offers(events)[-1]["host"] == offer["host"]  # offered again once it is back
