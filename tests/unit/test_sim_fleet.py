"""The real controller on a simulated fleet of a thousand hosts (testing.simfleet): cuts,
reboots and a controller restart lose no task and run none twice. No timing here: speed is
bench/scale_bench.py's."""

from collections import Counter

from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster, FakeUnit
from meso_agentless.testing.simfleet import SimPlane, host_names, sim_cluster

HOSTS = 1000


def batch(count: int, seconds: int, name: str = "big") -> Job:
    return Job.model_validate({
        "job": name, "type": "batch",
        "tasks": [{"name": "t", "count": count, "command": ["sleep", str(seconds)],
                   "resources": {"cpus": 1, "mem": "1GiB"}}],
    })  # fmt: skip


def run_until(cluster: FakeCluster, done, seconds: float = 1.0, limit: int = 100) -> None:
    """Cycles `seconds` apart until done()."""
    for _ in range(limit):
        cluster.step(seconds)
        if done():
            return
    raise AssertionError("the fleet did not get there")


def attempts_by_index(cluster: FakeCluster, job: str) -> dict[int, list[str]]:
    """index -> the states of its attempts, in order."""
    out: dict[int, list[str]] = {}
    for row in cluster.controller.store.tasks(job):
        out.setdefault(row.index, []).append(row.state.value)
    return out


def test_a_unit_runs_its_sleep_on_the_clock_then_ends_and_a_reboot_drops_it():
    plane = SimPlane.of(2, cpus=2)
    first, second = plane.hosts
    for unit, argv in (("meso-a_t_0_1", ["sleep", "5"]), ("meso-b_t_0_1", ["serve"])):
        plane.launch(first, {"unit": unit, "argv": argv, "cpus": 1000, "mem": 1 << 30})
    plane.clock.advance(4)
    assert plane.status(first, "meso-a_t_0_1")["state"] == "running"
    plane.clock.advance(2)
    states = {u["unit"]: u["state"] for u in plane.sample(first)["units"]}
    assert states == {"meso-a_t_0_1.service": "finished", "meso-b_t_0_1.service": "running"}
    assert plane.where("meso-b_t_0_1") == first and plane.where("meso-b_t_0_1x") is None
    plane.place(second, FakeUnit("meso-c_t_0_1", {"cpus": 1000}), seconds=1)
    plane.reboot(second)
    assert plane.units() == {"meso-a_t_0_1": first, "meso-b_t_0_1": first}
    assert plane.cpu_seconds > 0
    assert host_names(3) == ["h0001", "h0002", "h0003"]


def test_a_thousand_hosts_with_a_hundred_cut_and_fifty_rebooted_lose_and_duplicate_nothing(
    tmp_path,
):
    cluster = sim_cluster(tmp_path, HOSTS, cpus=4, replace_after=30.0)
    cluster.step()
    tasks = 2 * HOSTS
    cluster.controller.submit(batch(tasks, seconds=120))
    run_until(cluster, lambda: len(cluster.plane.running()) == tasks)
    names = cluster.plane.hosts
    cut, rebooted = names[:100], names[100:150]
    on_cut = {u for u, h in cluster.plane.running().items() if h in cut}
    on_rebooted = {u for u, h in cluster.plane.running().items() if h in rebooted}
    assert on_cut and on_rebooted
    for host in cut:
        cluster.plane.cut(host)
    for host in rebooted:
        cluster.plane.reboot(host)
    for _ in range(8):  # past replace_after: the cut hosts' tasks are replaced elsewhere
        cluster.step(5.0)
    running = cluster.plane.running()
    assert len(running) == tasks + len(on_cut)  # the replacements, and the originals cut off
    assert on_cut <= set(running)
    for host in cut:  # back: each original is stopped, its replacement wins
        cluster.plane.heal(host)
    cluster.step()
    cluster.step()
    assert not on_cut & set(cluster.plane.running())
    assert len(cluster.plane.running()) == tasks
    run_until(cluster, lambda: cluster.controller.store.job("big").state != "active", 20.0)

    assert cluster.controller.store.job("big").state == "done"
    by_index = attempts_by_index(cluster, "big")
    assert sorted(by_index) == list(range(tasks))
    assert all(states.count("finished") == 1 for states in by_index.values())
    assert Counter(s for states in by_index.values() for s in states) == {
        "finished": tasks, "lost": len(on_cut), "gone": len(on_rebooted),
    }  # fmt: skip
    assert set(cluster.plane.started.values()) == {1}  # no unit was ever started twice


def test_a_restarted_controller_reconciles_every_task_and_launches_nothing(tmp_path):
    cluster = sim_cluster(tmp_path, HOSTS, cpus=4)
    cluster.step()
    tasks = 2 * HOSTS
    cluster.controller.submit(batch(tasks, seconds=3600))
    run_until(cluster, lambda: len(cluster.plane.running()) == tasks)
    before = {r.unit: (r.host, r.attempt) for r in cluster.controller.store.tasks("big")}
    started = Counter(cluster.plane.started)

    cluster = cluster.restarted()  # meanwhile, one host rebooted and another was cut off
    rebooted, cut = sorted(set(cluster.plane.running().values()))[:2]  # hosts with tasks
    lost_units = {u for u, h in cluster.plane.running().items() if h == rebooted}
    cut_units = {u for u, h in cluster.plane.running().items() if h == cut}
    cluster.plane.reboot(rebooted)
    cluster.plane.cut(cut)
    cluster.step()

    rows = {r.unit: r for r in cluster.controller.store.tasks("big")}
    assert {u: (r.host, r.attempt) for u, r in rows.items() if u in before} == before
    states = Counter(r.state.value for u, r in rows.items() if u in before)
    assert states == {"running": tasks - len(lost_units) - len(cut_units),
                      "gone": len(lost_units), "unreachable": len(cut_units)}  # fmt: skip
    assert {u for u, r in rows.items() if r.state.value == "gone"} == lost_units
    assert not cluster.controller.unclaimed  # every unit on every host is a known task
    replaced = set(rows) - set(before)  # only the rebooted host's, once each
    assert len(replaced) == len(lost_units) and all(cluster.plane.started[u] == 1 for u in replaced)
    assert +(Counter(cluster.plane.started) - started) == Counter(dict.fromkeys(replaced, 1))
