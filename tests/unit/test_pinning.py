"""Dedicated cores, NUMA placement and devices in the allocator: exact sets per host, like ports;
golden cases with the reasons, and properties over random hosts, tasks and endings."""

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meso_agentless.core.allocator import allocate
from meso_agentless.core.explain import explain_hosts
from meso_agentless.core.model import Host, TaskGroup
from meso_agentless.core.offers import JobScheduler
from meso_agentless.core.pinning import HostPins, PinRequest, Pins, Topology, shared_cores
from meso_agentless.errors import UsageError
from meso_agentless.hosts.topology import Topologies, parse_topology
from meso_agentless.inventory import parse_node
from meso_agentless.spec import job_from_data, job_from_text

GiB = 2**30
TWO_NODES = Topology({0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}, {0: 8 * GiB, 1: 8 * GiB},
                     {"gpu": ("/dev/nvidia0", "/dev/nvidia1")})  # fmt: skip


def big(name="big", used=None, used_pins=(), topology=TWO_NODES):
    return Host(name, {"cpus": 8000, "mem": 16 * GiB}, used=used or {},
                topology=topology, used_pins=tuple(used_pins))  # fmt: skip


def dedicated(job, cores, count=1, numa=False, mem=GiB, devices=(), framework="fw"):
    return TaskGroup(job, "t", framework, count, {"cpus": cores * 1000, "mem": mem},
                     pin=PinRequest(cores, numa, mem if numa else 0, tuple(devices)))  # fmt: skip


def run(hosts, groups):
    by_fw: dict[str, list[TaskGroup]] = {}
    for g in groups:
        by_fw.setdefault(g.framework, []).append(g)
    return allocate(hosts, (), [JobScheduler(fw, gs) for fw, gs in by_fw.items()])


def test_dedicated_cores_are_exact_and_never_given_twice():
    plan = run([big()], [dedicated("a", 3, count=3)])
    given = [p.pins.cores for p in plan.placements]
    assert len(given) == 2  # 6 of 8 cores; a third would need 3 more of the 2 left
    assert all(len(cores) == 3 for cores in given)
    assert len({c for cores in given for c in cores}) == 6
    assert plan.unplaced[0].reason == "no host has 3 free dedicated cores"


def test_numa_same_places_only_where_one_node_has_the_cores_and_the_memory():
    # node 0 has 2 cores left, node 1 four: 3 cores on one node go to node 1
    host = big(used_pins=[Pins((0, 1), 0, 2 * GiB)], used={"cpus": 2000, "mem": 2 * GiB})
    plan = run([host], [dedicated("a", 3, numa=True)])
    assert plan.placements[0].pins == Pins((4, 5, 6), 1, GiB)
    # a second one finds no node with 3 free cores (1 and 2 left)
    plan = run([host], [dedicated("a", 3, count=2, numa=True)])
    assert len(plan.placements) == 1
    assert plan.unplaced[0].reason == "no host has 3 free dedicated cores on one NUMA node"


def test_numa_memory_is_per_node():
    held = [Pins((4,), 1, 7 * GiB), Pins((0,), 0, 2 * GiB)]
    host = big(used_pins=held, used={"cpus": 2000, "mem": 9 * GiB})
    plan = run([host], [dedicated("a", 2, numa=True, mem=2 * GiB, count=2)])
    assert [p.pins.numa for p in plan.placements] == [0]  # node 1 has 1 GiB left
    plan = run([host], [dedicated("a", 3, numa=True, mem=7 * GiB, count=1)])
    assert plan.unplaced[0].reason == "no host has 3 free dedicated cores and 7GiB on one NUMA node"


def test_dedicated_cores_shrink_the_shared_pool():
    shared = TaskGroup("s", "t", "fw", 10, {"cpus": 1000, "mem": GiB // 4})
    plan = run([big()], [dedicated("d", 4), shared])
    assert Counter(p.job for p in plan.placements) == {"d": 1, "s": 4}
    cores = {c for p in plan.placements if p.pins for c in p.pins.cores}
    assert shared_cores(TWO_NODES, [p.pins for p in plan.placements if p.pins]) == tuple(
        c for c in range(8) if c not in cores
    )


def test_devices_are_given_by_class_and_never_twice():
    gpu = [("gpu", 1)]
    plan = run([big()], [dedicated("g", 1, count=3, devices=gpu)])
    paths = [p.pins.devices for p in plan.placements]
    assert paths == [(("gpu", "/dev/nvidia0"),), (("gpu", "/dev/nvidia1"),)]
    assert plan.unplaced[0].reason == "no host has 1 free gpu device"
    running = big(used_pins=[Pins((), None, 0, (("gpu", "/dev/nvidia0"),))])
    plan = run([running], [dedicated("g", 1, devices=gpu)])
    assert plan.placements[0].pins.devices == (("gpu", "/dev/nvidia1"),)


def test_a_host_without_a_topology_takes_no_pinned_task_and_says_so():
    plain = Host("plain", {"cpus": 8000, "mem": 16 * GiB})
    plan = run([plain, big("big", used={"cpus": 8000})], [dedicated("a", 1)])
    assert not plan.placements
    assert plan.unplaced[0].reason == (
        'no host fits: dimension "cpus" exhausted on 1 host; '
        "lacks cores and devices to pin (none declared) on 1 host"
    )


def test_a_gang_that_does_not_fit_gives_its_pins_back():
    gang = TaskGroup("g", "t", "fw", 3, {"cpus": 3000, "mem": GiB}, gang=True,
                     pin=PinRequest(3))  # fmt: skip
    after = dedicated("a", 4, numa=True)
    plan = run([big()], [gang, after])
    assert [p.job for p in plan.placements] == ["a"]
    assert plan.placements[0].pins.numa == 0  # node 0 whole again after the gang was undone


# -- properties ----------------------------------------------------------------------------------

topologies = st.builds(
    lambda per_node, nodes, gpus: Topology(
        {n: tuple(range(n * per_node, (n + 1) * per_node)) for n in range(nodes)},
        {n: 4 * GiB for n in range(nodes)},
        {"gpu": tuple(f"/dev/g{i}" for i in range(gpus))},
    ),
    st.integers(1, 4), st.integers(1, 3), st.integers(0, 3),
)  # fmt: skip
requests = st.builds(
    lambda cores, numa, mem, gpus, count: (PinRequest(cores, numa and cores > 0,
                                                      mem if numa and cores else 0,
                                                      (("gpu", gpus),) if gpus else ()),
                                           count, mem),
    st.integers(0, 4), st.booleans(), st.sampled_from([GiB // 2, GiB, 3 * GiB]),
    st.integers(0, 2), st.integers(1, 4),
)  # fmt: skip


def _groups(reqs):
    return [TaskGroup(f"j{i}", "t", "fw", count, {"cpus": max(1, r.cores) * 1000, "mem": mem},
                      pin=r if r.cores or r.devices else None)
            for i, (r, count, mem) in enumerate(reqs)]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(topologies, min_size=1, max_size=3), st.lists(requests, min_size=1, max_size=5),
       st.data())  # fmt: skip
def test_pins_are_exact_never_double_given_and_shared_capacity_adds_up(topos, reqs, data):
    hosts = [Host(f"h{i}", {"cpus": len(t.cores) * 1000, "mem": 4 * GiB * len(t.nodes)},
                  topology=t) for i, t in enumerate(topos)]  # fmt: skip
    topo = {h.name: h.topology for h in hosts}
    plan = run(hosts, _groups(reqs))
    for _round in range(2):  # some end, the rest keep what they hold; place again
        per_host: dict[str, list] = {h.name: [] for h in hosts}
        for p in plan.placements:
            per_host[p.host].append(p)
            group = next(g for g in _groups(reqs) if g.job == p.job)
            if group.pin is None:
                assert p.pins is None
                continue
            t, pins = topo[p.host], p.pins
            assert len(pins.cores) == group.pin.cores
            assert Counter(k for k, _ in pins.devices) == Counter(dict(group.pin.devices))
            assert {path for _, path in pins.devices} <= set(t.devices.get("gpu", ()))
            if group.pin.numa:  # exactly on one node, which has its memory
                assert set(pins.cores) <= set(t.nodes[pins.numa])
        for name, placed in per_host.items():
            held = [p.pins for p in placed if p.pins]
            cores = [c for pins in held for c in pins.cores]
            paths = [d for pins in held for d in pins.devices]
            assert len(cores) == len(set(cores)) and len(paths) == len(set(paths))
            for n, node_cores in topo[name].nodes.items():
                assert sum(p.mem for p in held if p.numa == n) <= 4 * GiB
                del node_cores
            # the shared pool is what the dedicated cores left, and shared tasks fit in it
            shared_used = sum(p.resources["cpus"] for p in placed if not (p.pins and p.pins.cores))
            left = shared_cores(topo[name], held)
            assert len(left) == len(topo[name].cores) - len(cores)
            assert shared_used <= len(left) * 1000
        keep = [p for p in plan.placements if data.draw(st.booleans())]
        hosts = [replace_used(h, [p for p in keep if p.host == h.name]) for h in hosts]
        plan = run(hosts, _groups(reqs))
        plan.placements[:0] = keep


def replace_used(host, kept):
    used: Counter = Counter()
    for p in kept:
        used.update(p.resources)
    return Host(host.name, host.capacity, used=dict(used), topology=host.topology,
                used_pins=tuple(p.pins for p in kept if p.pins))  # fmt: skip


def test_host_pins_take_then_what_is_left():
    free = HostPins(TWO_NODES, [Pins((0,), None)])
    pins = free.take(PinRequest(5))
    assert pins.cores == (1, 2, 3, 4, 5)  # node 0's three, then node 1
    assert free.shortfall(PinRequest(2, True, GiB)) is None
    assert free.shortfall(PinRequest(3)) == "3 free dedicated cores"
    assert free.take(PinRequest(2, True, GiB)) == Pins((6, 7), 1, GiB)


# -- the job file's fields ------------------------------------------------------------------------

JOB = 'job: lat\ntasks:\n  - name: t\n    command: ["true"]\n    resources: {%s}\n'


def test_the_job_file_fields_become_the_pin_request_and_dump_back_the_same():
    job = job_from_text(JOB % "cpus: 4, cpuset: dedicated, numa: same, mem: 8GiB, "
                              "mem_soft: 6GiB, io_weight: 50, devices: {gpu: 1}")  # fmt: skip
    assert job.groups()[0].pin == PinRequest(4, True, 8 * GiB, (("gpu", 1),))
    assert job.groups()[0].resources["cpus"] == 4000  # counted against the shared pool too
    assert job_from_data(job.model_dump(mode="json")) == job
    plain = job_from_text(JOB % "cpus: 0.5")
    assert plain.groups()[0].pin is None
    assert "cpuset" not in plain.model_dump(mode="json")["tasks"][0]["resources"]


@pytest.mark.parametrize(("resources", "message"), [
    ("cpuset: pinned", "tasks[0].resources.cpuset: Input should be 'shared' or 'dedicated'"),
    ("numa: same", "tasks[0].resources: numa: same needs cpuset: dedicated"),
    ("cpus: 1.5, cpuset: dedicated", "tasks[0].resources: cpus: cpuset: dedicated takes whole "
                                     "cores, not 1.5"),
    ("mem: 1GiB, mem_soft: 2GiB", "tasks[0].resources: mem_soft: must be more than 0 and at "
                                  "most mem"),
    ("io_weight: 0", "tasks[0].resources.io_weight: Input should be greater than or equal to 1"),
    ("io_weight: 10001", "tasks[0].resources.io_weight: Input should be less than or equal to"),
    ("devices: {gpu: -1}", "tasks[0].resources.devices.gpu: Input should be greater than or"),
    ("devices: {gpu: 0.5}", "tasks[0].resources.devices.gpu: Input should be a valid integer"),
])  # fmt: skip
def test_bad_fields_are_refused_naming_the_field(resources, message):
    with pytest.raises(UsageError) as caught:
        job_from_text(JOB % resources)
    assert str(caught.value).startswith(f"line 5: {message}"), str(caught.value)


def test_meso_run_exits_2_on_a_bad_field_and_on_a_device_class_no_host_has(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    h1:\n      meso_resources: {cpus: 4, mem: 8GiB}\n"
                         "      meso_devices: {gpu: [/dev/nvidia0]}\n")  # fmt: skip
    env = {**os.environ, "MESO_STATE": str(tmp_path / "state.db"),
           "MESO_INVENTORY": str(inventory)}  # fmt: skip
    for resources, message in (
        ("cpuset: other", "resources.cpuset"),
        (
            "devices: {fpga: 1}",
            "tasks[0].resources.devices: no host has device class 'fpga' (the hosts have: gpu)",
        ),
    ):
        path = tmp_path / "job.yaml"
        path.write_text(JOB % resources)
        done = subprocess.run([sys.executable, "-m", "meso_agentless", "run", "--detach",
                               str(path)], env=env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_meso_explain_names_what_each_host_lacks_to_pin():
    full = big("full", used_pins=[Pins((0, 1, 2), 0, GiB), Pins((4, 5, 6), 1, GiB)])
    answers = explain_hosts([full, big("free"), Host("plain", {"cpus": 8000, "mem": 16 * GiB})],
                            [], dedicated("a", 2, numa=True))  # fmt: skip
    assert answers == [
        ("free", "fits"),
        ("full", "lacks 2 free dedicated cores on one NUMA node"),
        ("plain", "lacks cores and devices to pin (none declared)"),
    ]


def test_a_cron_job_cannot_pin():
    text = (JOB % "cpus: 1, cpuset: dedicated").replace(
        "job: lat\n", "job: lat\ntype: cron\nschedule: hourly\n"
    )
    with pytest.raises(UsageError, match="task 't': dedicated cores and devices are for batch"):
        job_from_text(text)


def test_the_inventory_declares_devices_and_they_override_what_the_host_samples():
    node = parse_node("h1", {"meso_devices": {"gpu": ["/dev/nvidia0", "/dev/nvidia1"]}})
    assert node.devices == {"gpu": ("/dev/nvidia0", "/dev/nvidia1")}
    with pytest.raises(UsageError, match=r"^host h1: meso_devices\.gpu: 'nvidia0' is not a dev"):
        parse_node("h1", {"meso_devices": {"gpu": ["nvidia0"]}})
    facts = {"topology": {"nodes": {"0": [0, 1], "1": [2, 3]}, "node_mem": {"0": 5, "1": 6},
                          "devices": {"disk": ["/dev/loop0"]}}}  # fmt: skip
    sampled = parse_topology(facts, None)
    assert sampled == Topology({0: (0, 1), 1: (2, 3)}, {0: 5, 1: 6}, {"disk": ("/dev/loop0",)})
    assert parse_topology(facts, node.devices).devices == node.devices
    assert parse_topology({"cpus": 4}, node.devices) is None  # an older node: nothing to pin


def test_a_hosts_topology_is_parsed_again_only_when_its_sample_or_declaration_changes():
    topologies = Topologies()
    facts = {"topology": {"nodes": {"0": [0, 1]}, "node_mem": {"0": 5}, "devices": {}}}
    first = topologies.of("h1", facts, None)
    assert first == parse_topology(facts, None)
    again = {"topology": {"nodes": {"0": [0, 1]}, "node_mem": {"0": 5}, "devices": {}}}
    assert topologies.of("h1", again, None) is first  # the next sample, the same cores
    assert topologies.of("h2", again, None) is not first  # per host
    grown = {"topology": {"nodes": {"0": [0, 1, 2]}, "node_mem": {"0": 5}, "devices": {}}}
    assert topologies.of("h1", grown, None).cores == (0, 1, 2)
    declared = {"gpu": ("/dev/nvidia0",)}
    assert topologies.of("h1", grown, declared).devices == declared
    assert topologies.of("h1", {"cpus": 4}, None) is None
