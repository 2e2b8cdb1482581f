"""The controller keeps the allocator's hosts between cycles (a ClusterState): at every cycle
it holds exactly the hosts a cycle from scratch is given, and rebuilds only those that changed."""

from meso_agentless.core.tasks import TRACKED
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster

THREE_HOSTS = {"h1": (4, "4GiB"), "h2": (4, "4GiB"), "h3": (4, "4GiB")}


def job(name: str, count: int) -> Job:
    return Job.model_validate({
        "job": name, "type": "batch",
        "tasks": [{"name": "t", "count": count, "command": ["true"],
                   "resources": {"cpus": 1, "mem": "64MiB"}}],
    })  # fmt: skip


def scratch(c: FakeCluster) -> list:
    """The hosts a cycle from scratch would be given now."""
    ctl = c.controller
    tracked = [r for r in ctl.store.tasks_in(TRACKED) if r.host in ctl.nodes]
    return sorted(ctl.placeable_hosts(c.fleet.views(), tracked), key=lambda h: h.name)


def test_the_kept_hosts_follow_placements_and_task_ends_and_only_changed_ones_are_rebuilt(
    tmp_path,
):
    c = FakeCluster.of(tmp_path, THREE_HOSTS)
    c.step()
    c.controller.submit(job("a", 2))
    c.step()
    kept = c.controller.cluster
    assert kept.hosts() == scratch(c)
    assert sum(h.used.get("cpus", 0) for h in kept.hosts()) == 2000
    before = dict(kept.by_name)
    c.controller.submit(job("b", 1))
    c.step()
    assert kept.hosts() == scratch(c)
    rebuilt = {name for name, state in kept.by_name.items() if state is not before[name]}
    assert rebuilt == {c.plane.where("meso-b_t_0_1")}  # the others were the same as before
    for unit in list(c.plane.running()):
        c.plane.finish(unit)
    c.step()
    c.controller.submit(job("c", 1))
    c.step()
    assert kept.hosts() == scratch(c)
    assert sum(h.used.get("cpus", 0) for h in kept.hosts()) == 1000  # a and b ended


def test_a_host_cut_off_leaves_the_kept_hosts_and_comes_back_when_healed(tmp_path):
    c = FakeCluster.of(tmp_path, THREE_HOSTS)
    c.step()
    c.controller.submit(job("a", 1))
    c.step()
    c.plane.cut("h3")
    c.step()
    c.controller.submit(job("b", 4))
    c.step()
    kept = c.controller.cluster
    assert [h.name for h in kept.hosts()] == ["h1", "h2"] == [h.name for h in scratch(c)]
    assert all(c.plane.where(u) != "h3" for u in c.plane.running())
    c.plane.heal("h3")
    c.step()
    c.controller.submit(job("c", 1))
    c.step()
    assert [h.name for h in kept.hosts()] == ["h1", "h2", "h3"]
    assert kept.hosts() == scratch(c)
