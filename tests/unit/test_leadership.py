"""Several controllers on one PostgreSQL state: the lease and its epoch, a leader that stops
acting before its lease can pass to another, a deposed leader fenced by the hosts, and what a
standby's API answers. The lease is real (a PostgreSQL started by the suite); the hosts are the
fake fleet; tests/lab/test_ha.py runs real controllers on real hosts."""

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from meso_agentless.api import standby
from meso_agentless.api.app import create_app
from meso_agentless.api.context import ApiContext
from meso_agentless.api.metrics import Metrics
from meso_agentless.controller.events import EventBus
from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.leadership import MARGIN, Leadership
from meso_agentless.controller.loop import Controller
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service
from meso_agentless.state.postgres import PgLease, PgStore
from meso_agentless.testing.fakes import FakeCluster
from tests.unit.test_controller import job

TOKEN = "t" * 32


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def expire(store: PgStore) -> None:
    """The database's clock passes the lease's expiry (as if its holder fell silent)."""
    store.db.execute("UPDATE leader SET expires = clock_timestamp() - interval '1 second'")


def test_one_leader_a_standby_and_a_takeover_with_a_higher_epoch(postgres):
    store = PgStore(postgres.fresh_url())
    ticks = Ticks()
    a = Leadership(PgLease(store, "a", "http://a:4646", ttl=5), ttl=5, monotonic=ticks)
    b = Leadership(PgLease(store, "b", "http://b:4646", ttl=5), ttl=5, monotonic=ticks)
    a.step()
    b.step()
    assert a.state() == (True, 1) and b.state() == (False, None)
    assert b.leader_addr() == "http://a:4646"
    expire(store)  # a died: nobody renews
    b.step()
    assert b.state() == (True, 2) and b.leader_addr() == "http://b:4646"
    a.step()  # a comes back: its renewal fails, it is a standby and knows the leader
    assert a.state() == (False, None) and a.leader_addr() == "http://b:4646"


def test_a_frozen_leader_stops_acting_before_its_lease_can_pass_to_another(postgres):
    """Its own monotonic clock says the lease is over, before the database could say so: once
    it runs again it acts on nothing until a renewal succeeds (here: it was taken)."""
    store = PgStore(postgres.fresh_url())
    ticks = Ticks()
    a = Leadership(PgLease(store, "a", "http://a:4646", ttl=5), ttl=5, monotonic=ticks)
    a.step()
    assert a.state() == (True, 1)
    ticks.now += 5 - MARGIN - 0.01
    assert a.state() == (True, 1)
    ticks.now += 0.02  # frozen past (ttl - margin) since its last renewal was sent
    assert a.state() == (False, None)
    a.step()  # nobody took it meanwhile: renewed, the same epoch goes on
    assert a.state() == (True, 1)


def test_the_database_away_then_back_with_nothing_taken(postgres):
    store = PgStore(postgres.fresh_url())
    ticks = Ticks()
    lease = PgLease(store, "a", "http://a:4646", ttl=5)
    a = Leadership(lease, ttl=5, monotonic=ticks)
    a.step()
    good_url = lease.store.url
    lease.close()
    lease.store.url = good_url.replace(postgres.password, "wrong")  # the database refuses us
    ticks.now += 2
    a.step()
    assert a.state() == (True, 1)  # still within what its last renewal gave it
    ticks.now += 3
    a.step()
    assert a.state() == (False, None)  # the lease ran out: no launches without the database
    lease.store.url = good_url
    a.step()
    assert a.state() == (True, 1)  # back, and still its own


def controller_on(cluster: FakeCluster, store: PgStore, plane) -> Controller:
    """Another controller on the same state and hosts (its own plane, fleet and events)."""
    fleet = Fleet(plane, cluster.clock)
    return Controller(store, cluster.controller.inventory, plane, fleet, cluster.clock,
                      EventBus(cluster.clock.time))  # fmt: skip


def test_a_deposed_leader_launches_and_stops_nothing(tmp_path, postgres):
    """The leader (epoch 1) is frozen; the standby takes over at epoch 2, reconciles with the
    hosts and launches; the old one wakes in the middle of its cycle: the hosts refuse it."""
    url = postgres.fresh_url()
    old = FakeCluster.of(tmp_path, {"h1": (4, "8GiB"), "h2": (4, "8GiB")}, state=url)
    old.plane.fence = (old.controller.store.identity, 1)
    old.step()
    old.controller.submit(job(name="svc", type_="service", count=3))
    old.step()
    first = dict(old.plane.running())
    assert len(first) == 3
    plane = old.plane.sharing()
    plane.fence = (old.controller.store.identity, 2)
    new = controller_on(old, PgStore(url, clock=old.clock.time), plane)
    new.fleet.refresh()
    new.tick()
    assert plane.running() == first  # reconciled: the service goes on, nothing launched again
    new.submit(job(name="batch", count=2))
    new.fleet.refresh()
    new.tick()
    assert len(plane.running()) == 5
    # the deposed one wakes, with a stale view: it tries to launch and to stop
    old.controller.submit(job(name="late", count=1))
    old.step()
    svc = sorted(u for u in first)[0]
    with pytest.raises(Exception, match="epoch: 1 is older than 2"):
        old.plane.stop(first[svc], svc)
    assert len(plane.running()) == 5 and svc in plane.running()
    assert all(n == 1 for n in plane.started.values())  # nothing ever ran twice
    assert not any(u.startswith("meso-late") for u in plane.running())
    refused = [m for m in old.messages() if "epoch: 1 is older than 2" in m]
    assert refused, old.messages()


class Standing:
    """A leadership whose standing the test sets."""

    kind = "lease"

    def __init__(self, leading: bool, epoch: int | None, leader: str | None) -> None:
        self.leading, self.epoch, self.leader = leading, epoch, leader

    def state(self):
        return (self.leading, self.epoch if self.leading else None)

    def leader_addr(self):
        return self.leader


@contextmanager
def api_of(cluster: FakeCluster, standing: Standing):
    cluster.fleet.refresh()
    runner = Runner(cluster.controller, interval=0.05, gate=lambda: standing.state()[0])
    runner.start()
    service = Service(cluster.controller, standing)
    app = create_app(ApiContext(service, runner, cluster.events, TOKEN), Metrics(service))
    standby.install(app, standing, TOKEN, "http://me:4646")
    try:
        with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
            client.headers["Authorization"] = f"Bearer {TOKEN}"
            yield client
    finally:
        runner.stop()


JOB = {"job": "web", "type": "service",
       "tasks": [{"name": "s", "count": 1, "command": ["sleep", "infinity"],
                  "resources": {"cpus": 0.5, "mem": "64MiB"}}]}  # fmt: skip


def test_a_standby_redirects_changes_to_the_leader_and_serves_reads(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB")})
    standing = Standing(True, 4, "http://me:4646")
    with api_of(cluster, standing) as api:
        health = api.get("/v1/health").json()
        assert (health["role"], health["epoch"], health["leader"]) == ("leader", 4, None)
        assert api.post("/v1/jobs", json=JOB).status_code == 201
        standing.leading, standing.leader = False, "http://leader:4646"
        health = api.get("/v1/health", headers={"Authorization": ""}).json()
        assert (health["role"], health["epoch"]) == ("standby", None)
        assert health["leader"] == "http://leader:4646"
        moved = api.post("/v1/jobs?x=1", json=JOB)
        assert moved.status_code == 307
        assert moved.headers["location"] == "http://leader:4646/v1/jobs?x=1"
        assert moved.headers["x-meso-role"] == "standby"
        assert api.get("/v1/hosts").status_code == 307  # the leader's fresh view of hosts
        assert api.post("/v1/jobs", json=JOB, headers={"Authorization": ""}).status_code == 401
        assert [j["job"] for j in api.get("/v1/jobs").json()["jobs"]] == ["web"]
        assert api.get("/v1/jobs/web").status_code == 200
        assert api.get("/metrics").status_code == 200  # its own
        standing.leader = None  # between leaders
        gone = api.post("/v1/jobs", json=JOB)
        assert gone.status_code == 503 and "no leader" in gone.json()["error"]
        standing.leader = "http://me:4646"  # its own lease ran out here: not itself again
        assert api.delete("/v1/jobs/web").status_code == 503
    assert cluster.controller.store.job("web").state == "active"
