"""Big servers where the kernel enforces them: a QEMU guest with 4 CPUs on 2 NUMA nodes (cgroup
v2). Jobs go through `meso run` (allocator, store, node command): a dedicated task runs only on
its cores and shared tasks never on them; over mem_soft a task is throttled, over mem killed; a
task opens the device it was granted and no other (loop devices stand in for GPUs, declared
as class gpu in the node's policy: the code path a GPU takes)."""

import json
import os
import time

import pytest

from tests.conftest import VM_LAB
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.vm

HOST = f"{VM_LAB}n-1"
POLICY_FILE = "/etc/meso-agentless/node-policy.json"
GPUS = ["/dev/loop0", "/dev/loop1"]
BUSY = ("import os, sys; print(open('/proc/self/status').read().split('Cpus_allowed_list:')[1]"
        ".split()[0], os.environ.get('MESO_CPUSET'), flush=True)\nwhile True: pass")  # fmt: skip


@pytest.fixture(scope="module")
def vm(meso_numa_vm_lab, tmp_path_factory):
    """The guest with a policy that hands out two loop devices as class gpu; a fresh state."""
    lab = meso_numa_vm_lab
    for i, path in enumerate(GPUS):
        lab.run(HOST, ["sh", "-c", f"test -b {path} || mknod -m 660 {path} b 7 {i}"])
    policy = {"allow_root": True, "devices": {"gpu": GPUS}}
    lab.run(HOST, ["mkdir", "-p", "-m", "755", os.path.dirname(POLICY_FILE)])
    lab.run(HOST, ["sh", "-c", f"umask 022; echo '{json.dumps(policy)}' > {POLICY_FILE}"])
    state = tmp_path_factory.mktemp("bigvm")
    env = {**os.environ, "MESO_STATE": str(state / "state.db"),
           "MESO_INVENTORY": str(lab.inventory)}  # fmt: skip
    yield lab, env, state
    lab.run(HOST, ["rm", "-f", POLICY_FILE])


def run_job(env, directory, name, text, *flags):
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return cli(env, "run", *flags, str(path), timeout=600)


def running(env, job, count):
    def found():
        tasks = json.loads(cli(env, "status", job, "-o", "json").stdout)["jobs"][0]["tasks"]
        up = [t for t in tasks if t["state"] == "running"]
        return up if len(up) == count else None

    return wait_for(found, timeout=300, every=2)


def show(lab, unit, *props):
    out = lab.run(HOST, ["systemctl", "show", "-p", ",".join(props), f"{unit}.service"]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cpus_of(text):
    cores = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def test_the_guest_has_two_numa_nodes(vm):
    lab, _, _ = vm
    assert lab.run(HOST, ["cat", "/sys/devices/system/node/node0/cpulist"]).stdout.strip() == "0-1"
    assert lab.run(HOST, ["cat", "/sys/devices/system/node/node1/cpulist"]).stdout.strip() == "2-3"


def test_a_dedicated_task_runs_only_on_its_cores_and_shared_tasks_never_there(vm):
    lab, env, directory = vm
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
    done = run_job(env, directory, "pinned", job)
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = running(env, "pinned", 3)
    latency = next(t for t in tasks if t["task"] == "latency")
    props = show(lab, latency["unit"], "AllowedCPUs", "AllowedMemoryNodes", "MainPID")
    dedicated = cpus_of(props["AllowedCPUs"])
    assert dedicated in ({0, 1}, {2, 3})  # two cores of one NUMA node
    assert props["AllowedMemoryNodes"] == ("0" if dedicated == {0, 1} else "1")
    said = cli(env, "logs", "pinned", "latency").stdout.split()
    assert cpus_of(said[0]) == dedicated and cpus_of(said[1]) == dedicated  # its own view
    pids = {t["task"] + str(t["index"]): show(lab, t["unit"], "MainPID")["MainPID"] for t in tasks}
    seen: dict[str, set[int]] = {name: set() for name in pids}
    for _ in range(20):  # where each busy loop runs, sampled over a few seconds
        for name, pid in pids.items():
            psr = lab.run(HOST, ["ps", "-o", "psr=", "-p", pid]).stdout.strip()
            seen[name].add(int(psr))
        time.sleep(0.25)
    assert seen["latency0"] <= dedicated
    assert not (seen["batch0"] | seen["batch1"]) & dedicated
    for name in ("batch0", "batch1"):
        status = lab.run(HOST, ["grep", "Cpus_allowed_list", f"/proc/{pids[name]}/status"])
        assert cpus_of(status.stdout.split()[-1]) == {0, 1, 2, 3} - dedicated
    assert cli(env, "kill", "pinned").returncode == 0
    # the dedicated cores go back to the shared pool: a shared task now runs on every core
    header, rest = job.split("  - name: latency")
    shared_only = header.replace("pinned", "after") + "  - name: batch" + rest.split(
        "  - name: batch")[1]  # fmt: skip
    assert run_job(env, directory, "after", shared_only).returncode == 0
    after = running(env, "after", 2)
    pid = show(lab, after[0]["unit"], "MainPID")["MainPID"]
    status = lab.run(HOST, ["grep", "Cpus_allowed_list", f"/proc/{pid}/status"]).stdout
    assert cpus_of(status.split()[-1]) == {0, 1, 2, 3}
    assert cli(env, "kill", "after").returncode == 0


def test_over_mem_soft_it_is_throttled_not_killed_and_over_mem_it_is_killed(vm):
    lab, env, directory = vm
    grow = ("import time\nheld = []\nfor _ in range({n}):\n    held.append(bytearray(8 << 20))"
            "\n    time.sleep(0.05)\nprint('holding', flush=True)\ntime.sleep(600)")  # fmt: skip
    job = f"""\
job: memory
type: service
tasks:
  - name: soft
    command: ["python3", "-c", {json.dumps(grow.format(n=12))}]
    resources: {{cpus: 0.5, mem: 160MiB, mem_soft: 48MiB}}
"""
    assert run_job(env, directory, "memory", job).returncode == 0
    soft = running(env, "memory", 1)[0]
    props = show(lab, soft["unit"], "ControlGroup", "MemoryHigh", "MemoryMax")
    assert props["MemoryHigh"] == str(48 << 20) and props["MemoryMax"] == str(160 << 20)
    events = f"/sys/fs/cgroup{props['ControlGroup']}/memory.events"

    def throttled():
        counts = dict(line.split() for line in lab.run(HOST, ["cat", events]).stdout.splitlines())
        return counts if int(counts["high"]) > 0 else None

    counts = wait_for(throttled, timeout=120, every=1)
    assert counts["oom_kill"] == "0"
    assert show(lab, soft["unit"], "ActiveState")["ActiveState"] == "active"
    assert cli(env, "kill", "memory").returncode == 0
    over = f"""\
job: hog
tasks:
  - name: hog
    command: ["python3", "-c", {json.dumps(grow.format(n=40))}]
    resources: {{cpus: 0.5, mem: 160MiB, mem_soft: 48MiB}}
    restart: {{policy: never}}
"""
    done = run_job(env, directory, "hog", over)
    assert done.returncode == 1, done.stdout + done.stderr
    task = json.loads(cli(env, "status", "hog", "-o", "json").stdout)["jobs"][0]["tasks"][0]
    assert (task["state"], task["reason"]) == ("failed", "oom-killed")


def test_a_task_opens_the_device_it_was_granted_and_no_other(vm):
    _, env, directory = vm
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
    sandbox: {{dynamic_user: false}}
"""
    done = run_job(env, directory, "devices", job)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split(" ", 2) for line in cli(env, "logs", "devices", "gpu").stdout.splitlines()]
    by_path = {path: (granted, result) for path, granted, result in lines if path != "cuda"}
    granted = [p for p, (g, _) in by_path.items() if g == "True"]
    assert len(granted) == 1
    assert by_path[granted[0]][1] == "opened"  # root opens its own device
    other = next(p for p in GPUS if p not in granted)
    assert by_path[other][1] == "Operation not permitted"  # root, but the cgroup says no
    cuda = next(line for line in lines if line[0] == "cuda")
    assert cuda[1] == str(GPUS.index(granted[0]))
