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


def steady(tmp_path, hosts: int = 50, tasks: int = 200) -> FakeCluster:
    """A fleet running `tasks` long tasks, past the cycles that launched them: from here on a
    cycle with nothing new on the hosts reads no task row and judges no host again."""
    cluster = sim_cluster(tmp_path, hosts, cpus=8)
    cluster.step()
    cluster.controller.submit(batch(tasks, seconds=86400))
    run_until(cluster, lambda: len(cluster.plane.running()) == tasks)
    for _ in range(3):
        cluster.step()
    return cluster


def counting_reads(cluster: FakeCluster) -> list[str]:
    """Every task read of the controller's store from now on (which method)."""
    store, reads = cluster.controller.store, []

    def counted(name: str):
        real = getattr(store, name)

        def read(*args, **kwargs):
            reads.append(name)
            return real(*args, **kwargs)

        return read

    for name in ("tasks", "tasks_in"):
        setattr(store, name, counted(name))
    return reads


def test_a_task_that_ends_on_a_host_where_nothing_else_changed_is_still_recorded(tmp_path):
    cluster = steady(tmp_path)
    reads = counting_reads(cluster)
    cluster.step()
    assert reads == []  # the steady cycle trusted what it had read: the case under test
    unit, host = sorted(cluster.plane.running().items())[0]
    cluster.plane.by_name[host].units[unit].state = "failed"  # it exits 3, nothing else moves
    cluster.plane.by_name[host].units[unit].exit_code = 3
    cluster.step()
    row = cluster.controller.store.task_by_unit(unit)
    assert (row.state.value, row.exit_code) == ("failed", 3)
    assert "tasks" in reads or "tasks_in" in reads
    cluster.step()  # its attempt is replaced once, and the others run on
    rows = cluster.controller.store.tasks("big")
    assert Counter(r.state.value for r in rows) == {"running": 200, "failed": 1}
    assert all(n == 1 for n in cluster.plane.started.values())


def test_a_write_by_another_connection_to_the_store_is_not_hidden_by_what_was_read(tmp_path):
    from meso_agentless.core.tasks import TaskState, TaskStatus
    from meso_agentless.state.sqlite import Store

    cluster = steady(tmp_path)
    reads = counting_reads(cluster)
    cluster.step()
    assert reads == []
    # another controller (a leader after this one, or a command) marks an attempt lost and
    # places it again: the unit still running under it must be stopped, not trusted as ours
    other = Store(cluster.controller.store.path)
    row = next(r for r in other.tasks("big") if r.state == TaskState.RUNNING)
    assert other.update_task(row, TaskStatus(TaskState.LOST, reason="replaced")) is not None
    other.close()
    cluster.step()
    assert reads  # read again
    assert row.unit not in cluster.plane.running()
    assert cluster.controller.store.task_by_unit(row.unit).state == TaskState.LOST
