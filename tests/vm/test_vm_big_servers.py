"""Big servers where the kernel enforces them: a QEMU guest with 4 CPUs on 2 NUMA nodes (cgroup
v2). Job files go through the allocator, `launch_request` and the node command as the
controller sends them (the controller's own loop is tested on the nspawn lab: its deadlines are
too short for an emulated guest): a dedicated task runs only on its cores and shared tasks never
on them; over mem_soft a task is throttled, over mem killed; a task opens the device it was
granted and no other (loop devices stand in for GPUs, declared as class gpu in the node's
policy: the code path a GPU takes)."""

import json
import os
from collections import Counter
from dataclasses import replace

import pytest

from meso_agentless.controller.loop import sampled_capacity
from meso_agentless.core.allocator import allocate
from meso_agentless.core.offers import JobScheduler
from meso_agentless.hosts.launching import launch_request
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.topology import parse_topology
from meso_agentless.inventory import load_inventory
from meso_agentless.spec import job_from_text
from tests.lab.common import wait_for

pytestmark = pytest.mark.vm

HOST = os.environ.get("MESO_TEST_VM_LAB", "mvm") + "n-1"
POLICY_FILE = "/etc/meso-agentless/node-policy.json"
GPUS = ["/dev/loop0", "/dev/loop1"]
# a busy loop that leaves an emulated guest (on a shared machine) some breath between bursts
BUSY = ("import os, time; print(open('/proc/self/status').read().split('Cpus_allowed_list:')"
        "[1].split()[0], os.environ.get('MESO_CPUSET'), flush=True)\n"
        "while True:\n    sum(range(20000))\n    time.sleep(0.02)")  # fmt: skip


class Cluster:
    """One pinned host driven as the controller drives it: sample, allocate (with what runs
    there), launch the placements' requests; what it placed is held until ended."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.node = load_inventory(str(lab.inventory)).nodes[0]
        self.plane = ExecutionPlane([self.node], timeout=120)
        self.held: dict[str, object] = {}  # unit -> placement

    def run(self, text: str) -> dict[str, str]:
        """Place and launch a job file's tasks: {task + index: unit}."""
        job = job_from_text(text)
        facts = self.plane.sample(HOST)
        used: Counter = Counter()
        for p in self.held.values():
            used.update(p.resources)
        host = replace(self.node.to_host(sampled_capacity(facts)), used=dict(used),
                       topology=parse_topology(facts, self.node.devices),
                       used_pins=tuple(p.pins for p in self.held.values() if p.pins))  # fmt: skip
        plan = allocate([host], [], [JobScheduler(job.framework, job.groups())])
        assert not plan.unplaced, plan.unplaced
        units = {}
        for p in plan.placements:
            task = next(t for t in job.tasks if t.name == p.task)
            request = launch_request(task, p, 1, service=job.type == "service")
            launched = self.plane.launch(HOST, request)
            assert launched["state"] in ("running", "finished", "failed"), launched
            units[f"{p.task}{p.index}"] = request["unit"]
            self.held[request["unit"]] = p
        return units

    def end(self, units: dict[str, str]) -> None:
        for unit in units.values():
            self.plane.stop(HOST, unit)
            self.plane.forget(HOST, unit)
            self.held.pop(unit, None)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.lab.run(HOST, ["systemctl", "show", "-p", ",".join(props), f"{unit}.service"])
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def output(self, unit: str) -> str:
        return self.lab.run(
            HOST, ["journalctl", "-q", "-o", "cat", "-u", unit, "_TRANSPORT=stdout"]
        ).stdout

    def allowed(self, pid: str) -> set[int]:
        status = self.lab.run(HOST, ["grep", "Cpus_allowed_list", f"/proc/{pid}/status"]).stdout
        return cpus_of(status.split()[-1])


@pytest.fixture(scope="module")
def vm(meso_numa_vm_lab):
    """The guest, handing out two loop devices as class gpu (its policy says so; their file
    modes let anyone open them, so only the cgroup's device rules decide)."""
    lab = meso_numa_vm_lab
    for i, path in enumerate(GPUS):
        lab.run(HOST, ["sh", "-c", f"test -b {path} || mknod {path} b 7 {i}; chmod 666 {path}"])
    lab.run(HOST, ["mkdir", "-p", "-m", "755", os.path.dirname(POLICY_FILE)])
    policy = json.dumps({"devices": {"gpu": GPUS}})
    lab.run(HOST, ["sh", "-c", f"umask 022; echo '{policy}' > {POLICY_FILE}"])
    cluster = Cluster(lab)
    yield cluster
    cluster.plane.close()
    lab.run(HOST, ["rm", "-f", POLICY_FILE])


def cpus_of(text: str) -> set[int]:
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def test_the_node_samples_two_numa_nodes_and_the_declared_devices(vm):
    facts = vm.plane.sample(HOST)
    assert facts["topology"]["nodes"] == {"0": [0, 1], "1": [2, 3]}
    assert all(m > 600 << 20 for m in facts["topology"]["node_mem"].values())
    assert facts["topology"]["devices"] == {"gpu": GPUS}


def test_a_dedicated_task_runs_only_on_its_cores_and_shared_tasks_never_there(vm):
    job = f"""\
job: pinned
type: service
tasks:
  - name: latency
    command: ["python3", "-c", {json.dumps(BUSY)}]
    resources: {{cpus: 2, cpuset: dedicated, numa: same, mem: 128MiB}}
  - name: batch
    count: 2
    command: ["python3", "-c", {json.dumps(BUSY)}]
    resources: {{cpus: 0.5, mem: 96MiB, io_weight: 10}}
"""
    units = vm.run(job)
    try:
        check_placement(vm, units)
    finally:
        vm.end(units)


def check_placement(vm, units):
    props = vm.show(units["latency0"], "AllowedCPUs", "AllowedMemoryNodes")
    dedicated = cpus_of(props["AllowedCPUs"])
    assert dedicated in ({0, 1}, {2, 3})  # two cores of one NUMA node
    assert props["AllowedMemoryNodes"] == ("0" if dedicated == {0, 1} else "1")
    said = wait_for(lambda: vm.output(units["latency0"]).split(), timeout=120)
    assert cpus_of(said[0]) == dedicated and cpus_of(said[1]) == dedicated  # its own view
    pids = {name: vm.show(unit, "MainPID")["MainPID"] for name, unit in units.items()}
    names = {pid: name for name, pid in pids.items()}
    sampled = vm.lab.run(
        HOST,
        [
            "sh",
            "-c",
            f"for i in $(seq 20); do ps -o pid=,psr= -p {','.join(pids.values())}; sleep 0.2; done",
        ],
        timeout=300,
    )
    seen: dict[str, set[int]] = {name: set() for name in pids}
    for line in sampled.stdout.splitlines():  # where each busy loop ran, over a few seconds
        pid, psr = line.split()
        seen[names[pid]].add(int(psr))
    assert all(seen.values()), seen
    assert seen["latency0"] <= dedicated
    assert not (seen["batch0"] | seen["batch1"]) & dedicated
    assert vm.allowed(pids["batch0"]) == vm.allowed(pids["batch1"]) == {0, 1, 2, 3} - dedicated
    vm.end({"latency0": units["latency0"]})
    # its cores go back to the shared tasks at the node's next sample
    vm.plane.sample(HOST)
    assert vm.allowed(pids["batch0"]) == {0, 1, 2, 3}


def test_over_mem_soft_it_is_throttled_not_killed_and_over_mem_it_is_killed(vm):
    grow = ("import time\nheld = []\nfor _ in range({n}):\n    held.append(bytearray(8 << 20))"
            "\n    time.sleep(0.05)\nprint('holding', flush=True)\ntime.sleep(600)")  # fmt: skip
    job = """\
job: memory
type: service
tasks:
  - name: {name}
    command: ["python3", "-c", {command}]
    resources: {{cpus: 0.5, mem: 160MiB, mem_soft: {soft}}}
"""
    command = json.dumps(grow.format(n=12))
    soft = vm.run(job.format(name="soft", command=command, soft="48MiB"))["soft0"]
    try:
        check_memory(vm, job, grow, soft)
    finally:
        vm.end({"soft": soft})


def check_memory(vm, job, grow, soft):
    props = vm.show(soft, "ControlGroup", "MemoryHigh", "MemoryMax")
    assert props["MemoryHigh"] == str(48 << 20) and props["MemoryMax"] == str(160 << 20)
    events = f"/sys/fs/cgroup{props['ControlGroup']}/memory.events"

    def throttled():
        counts = dict(
            line.split() for line in vm.lab.run(HOST, ["cat", events]).stdout.splitlines()
        )
        return counts if int(counts["high"]) > 0 else None

    counts = wait_for(throttled, timeout=120, every=1)
    assert counts["oom_kill"] == "0"
    assert vm.plane.status(HOST, soft)["state"] == "running"
    # over mem: killed (its mem_soft just below, so that throttling does not slow it for long)
    hog = vm.run(job.replace("type: service\n", "").format(
        name="hog", command=json.dumps(grow.format(n=40)), soft="152MiB"))["hog0"]  # fmt: skip
    status = wait_for(lambda: (s := vm.plane.status(HOST, hog))["state"] != "running" and s,
                      timeout=180)  # fmt: skip
    assert (status["state"], status["reason"]) == ("failed", "oom-killed")
    assert vm.plane.status(HOST, soft)["state"] == "running"  # the throttled one lives on
    vm.end({"hog": hog})


def test_a_task_opens_the_device_it_was_granted_and_no_other(vm):
    probe = ("import os\ngranted = os.environ['MESO_DEVICES'].split(',')\n"
             "for path in " + json.dumps(GPUS) + ":\n"
             "    try:\n        os.close(os.open(path, os.O_RDONLY))\n        result = 'opened'\n"
             "    except OSError as exc:\n        result = exc.strerror\n"
             "    print(path, path in granted, result, flush=True)\n"
             "print('cuda', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)")  # fmt: skip
    job = f"""\
job: devices
tasks:
  - name: gpu
    command: ["python3", "-c", {json.dumps(probe)}]
    resources: {{cpus: 0.5, mem: 64MiB, devices: {{gpu: 1}}}}
"""
    unit = vm.run(job)["gpu0"]
    wait_for(lambda: vm.plane.status(HOST, unit)["state"] == "finished", timeout=120)
    lines = [line.split(" ", 2) for line in vm.output(unit).splitlines()]
    by_path = {line[0]: (line[1], line[2]) for line in lines if len(line) == 3}
    granted = [p for p, (g, _) in by_path.items() if g == "True"]
    assert len(granted) == 1
    assert by_path[granted[0]][1] == "opened"
    other = next(p for p in GPUS if p not in granted)
    assert by_path[other][1] == "Operation not permitted"  # its mode allows it, its cgroup not
    cuda = next(line for line in lines if line[0] == "cuda")
    assert cuda[1] == str(GPUS.index(granted[0]))
    # while the first one holds its device, a second task gets the other
    second = vm.run(job.replace("job: devices", "job: devices2"))["gpu0"]
    assert vm.show(second, "DeviceAllow")["DeviceAllow"] == f"{other} rw"
    vm.end({"a": unit, "b": second})
