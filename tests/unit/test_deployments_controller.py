"""Deployments in the controller on a fake fleet with a fake clock: a service's new version
rolled out one at a time, canaries and their promote, a failing version reverted by itself, a
controller restarted mid-deployment, versions and bad update blocks."""

import pytest

from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.loop import Controller, JobConflict, NotFound
from meso_agentless.core.tasks import TRACKED
from meso_agentless.errors import UsageError
from meso_agentless.spec import Job, job_from_data
from meso_agentless.state.postgres import open_store
from meso_agentless.testing.fakes import FakeCluster

HOSTS = {"h1": (4, "4GiB"), "h2": (4, "4GiB"), "h3": (4, "4GiB")}


def web(command="v1", count=3, update=None, **task):
    return Job.model_validate({
        "job": "web", "type": "service",
        **({"update": update} if update is not None else {}),
        "tasks": [{"name": "s", "count": count, "command": ["serve", command],
                   "resources": {"cpus": 0.5, "mem": "64MiB", "ports": 1},
                   "health": {"http": "/health", "interval": "2s", "timeout": "1s",
                              "grace": "0", "failures": 2}, **task}],
    })  # fmt: skip


@pytest.fixture
def cluster(tmp_path, state):
    c = FakeCluster.of(tmp_path, HOSTS, state=state)
    c.step()
    return c


def outcome(c):
    result, _ = c.controller.outcome("web")
    return None if result is None else (result.code, result.message)


def live(c):
    """The attempts that hold an instance now: (index, attempt) -> (job version, healthy)."""
    return {(r.index, r.attempt): (r.job_version, r.health == "healthy")
            for r in c.controller.store.tasks("web") if r.state in TRACKED}  # fmt: skip


def up(c, steps=6):
    c.controller.submit(web())
    for _ in range(steps):
        c.step()
    assert outcome(c) == (0, "service up: 3 instances running")


def run_until(c, done, limit=120, watch=None):
    for _ in range(limit):
        c.step()
        if watch is not None:
            watch(c)
        if done(c):
            return
    raise AssertionError(f"not done after {limit} steps: {live(c)}")


def test_a_new_command_rolls_out_one_at_a_time_never_below_two_healthy(cluster):
    up(cluster)
    update = {"max_parallel": 1, "min_healthy_time": "3s"}
    cluster.controller.submit(web("v2", update=update))
    seen = []

    def watch(c):
        now = live(c)
        seen.append((sum(healthy for _, healthy in now.values()), len(now)))

    run_until(cluster, lambda c: outcome(c) is not None, watch=watch)
    assert outcome(cluster) == (0, "deployment of version 2 successful: 3 instance(s) of the "
                                   "new version healthy")  # fmt: skip
    assert min(h for h, _ in seen) >= 2 and max(n for _, n in seen) <= 4
    assert sorted(v for v, _ in live(cluster).values()) == [2, 2, 2]
    assert all(r.job_version == 1 and r.reason == "replaced by version 2"
               for r in cluster.controller.store.tasks("web") if r.attempt == 1)  # fmt: skip
    assert len(cluster.plane.running()) == 3
    assert any("deployment 1 started: version 1 -> 2" in m for m in cluster.messages())
    view = cluster.controller.deployer.deployment_view("web")
    assert (view.state, view.progress["s"]) == ("successful", {"desired": 3, "new": 3,
                                                               "healthy": 3, "old": 0})  # fmt: skip


def test_a_count_alone_is_a_scale_and_every_version_is_kept(cluster):
    up(cluster)
    cluster.controller.submit(web(count=4), submitter="ops")
    cluster.step()
    assert cluster.controller.store.deployment("web") is None
    assert len(live(cluster)) == 4
    versions = cluster.controller.deployer.versions_view("web")
    assert [v.version for v in versions.versions] == [1, 2] and versions.current == 2
    assert versions.versions[1].submitter == "ops"
    assert [(c.path, c.before, c.after) for c in versions.versions[1].changes] == [
        ("tasks[0].count", 3, 4)]  # fmt: skip


def test_a_canary_waits_for_its_promote(cluster):
    up(cluster)
    cluster.controller.submit(web("v2", update={"canary": 1, "min_healthy_time": "2s"}))
    for _ in range(15):
        cluster.step()
    deployment = cluster.controller.store.deployment("web")
    assert deployment.state == "waiting" and "waiting for a promote" in deployment.reason
    assert sorted(v for v, _ in live(cluster).values()) == [1, 1, 1, 2]
    assert outcome(cluster) is None
    cluster.controller.deployer.promote("web")
    with pytest.raises(JobConflict, match="no canary to promote"):
        cluster.controller.deployer.promote("web")
    run_until(cluster, lambda c: outcome(c) is not None)
    assert outcome(cluster)[0] == 0
    assert sorted(v for v, _ in live(cluster).values()) == [2, 2, 2]


def test_a_failing_new_version_reverts_by_itself_and_the_old_instances_stand(cluster):
    up(cluster)
    before = {u for u in cluster.plane.running()}
    cluster.controller.submit(web("broken", update={"auto_revert": True}))
    for _ in range(2):
        cluster.step()
    for unit in set(cluster.plane.running()) - before:
        cluster.plane.set_health(unit, False, "HTTP 500")
    run_until(cluster, lambda c: outcome(c) is not None)
    code, message = outcome(cluster)
    assert code == 1
    assert message.startswith("deployment of version 2 failed: s[0] failed its health check "
                              "(http /health on port 0): unhealthy: 2 checks failed")  # fmt: skip
    assert message.endswith("reverted to version 1 (as version 3)")
    run_until(cluster, lambda c: c.controller.store.deployment("web").state != "running")
    assert cluster.controller.store.deployment("web").state == "successful"
    assert set(cluster.plane.running()) == before  # the old ones were never stopped
    assert cluster.controller.store.job("web").spec["tasks"][0]["command"] == ["serve", "v1"]
    rolled = [r for r in cluster.controller.store.tasks("web") if r.job_version == 2]
    assert rolled and all(r.reason == "rolled back" for r in rolled)


def test_a_controller_restarted_mid_deployment_resumes_it_losing_and_doubling_nothing(
    cluster, state, tmp_path
):
    up(cluster)
    cluster.controller.submit(web("v2", update={"min_healthy_time": "2s"}))
    for _ in range(5):
        cluster.step()
    assert sorted(v for v, _ in live(cluster).values()).count(2) >= 1  # under way
    # a new controller on the same state and hosts: it knows only what the store says
    store = open_store(state if "://" in state else str(tmp_path / "state.db"),
                       clock=cluster.clock.time)  # fmt: skip
    old = cluster.controller
    cluster.fleet = Fleet(cluster.plane, cluster.clock)
    cluster.controller = Controller(store, old.inventory, cluster.plane, cluster.fleet,
                                    cluster.clock, cluster.events)  # fmt: skip
    run_until(cluster, lambda c: c.controller.store.deployment("web").state == "successful")
    assert sorted(v for v, _ in live(cluster).values()) == [2, 2, 2]
    assert len(cluster.plane.running()) == 3
    assert all(n == 1 for n in cluster.plane.started.values())  # nothing launched twice


def test_revert_runs_an_earlier_version_again_and_says_what_is_wrong(cluster):
    up(cluster)
    cluster.controller.submit(web("v2", update={"min_healthy_time": "1s"}))
    run_until(cluster, lambda c: outcome(c) is not None)
    deployer = cluster.controller.deployer
    with pytest.raises(NotFound, match="no version 9"):
        deployer.revert("web", 9, None)
    with pytest.raises(JobConflict, match="runs version 2's spec already"):
        deployer.revert("web", 2, None)
    deployer.revert("web", 1, "ops")
    run_until(cluster, lambda c: c.controller.store.deployment("web").state == "successful")
    assert cluster.controller.store.job("web").spec_version == 3
    assert cluster.controller.store.job_version("web", 3).submitter == "ops"
    assert cluster.controller.store.deployment("web").revert
    with pytest.raises(JobConflict, match="is successful"):
        deployer.fail("web")


def test_replacements_by_deployments_use_up_no_restarts(cluster):
    up(cluster)
    for n in range(2, 6):  # four deployments: more than the 3 restarts an instance has
        cluster.controller.submit(web(f"v{n}", update={"max_parallel": 3, "min_healthy_time": 0}))
        run_until(cluster, lambda c: c.controller.store.deployment("web").state == "successful")
    [(unit, _host)] = [(u, h) for u, h in cluster.plane.running().items() if "_s_0_" in u]
    cluster.plane.finish(unit, exit_code=1)
    for _ in range(3):
        cluster.step()
    latest = [r for r in cluster.controller.store.tasks("web") if r.index == 0][-1]
    assert latest.unit != unit and latest.state.value == "running"  # restarted, not given up


def test_killing_the_job_cancels_its_deployment_and_a_new_run_has_its_own_outcome(cluster):
    up(cluster)
    cluster.controller.submit(web("v2", update={"canary": 1}))
    cluster.step()
    cluster.controller.kill("web")
    assert cluster.controller.store.deployment("web").state == "cancelled"
    cluster.controller.submit(web("v2", update={"canary": 1}))
    run_until(cluster, lambda c: outcome(c) is not None)
    assert outcome(cluster) == (0, "service up: 3 instances running")


@pytest.mark.parametrize(("update", "says"), [
    ({"max_parallel": 0}, "update.max_parallel: Input should be greater than or equal to 1"),
    ({"max_parallel": 4}, "update.max_parallel: 4 is more than the task's count (3)"),
    ({"canary": 5}, "update.canary: 5 is more than the task's count (3)"),
    ({"min_healthy_time": "-1s"}, "update.min_healthy_time: '-1s' is not a duration"),
    ({"healthy_deadline": -5}, "update.healthy_deadline: -5 is not a duration"),
    ({"max_paralel": 1}, "update.max_paralel: unknown field"),
])  # fmt: skip
def test_a_bad_update_block_is_refused_naming_the_field(update, says):
    data = web().model_dump(mode="json")
    with pytest.raises(UsageError) as refused:
        job_from_data({**data, "update": update})
    assert str(refused.value).startswith(says)


def test_an_update_block_is_for_services_only():
    data = {**web().model_dump(mode="json"), "type": "batch", "update": {}}
    data["tasks"][0].pop("health")
    with pytest.raises(UsageError, match=r"^update: only for type: service"):
        job_from_data(data)
