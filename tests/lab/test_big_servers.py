"""Big servers on the nspawn lab: a dedicated, NUMA-bound task with a device beside a shared
one; the properties appear in `systemctl show` (systemd takes them; the kernel enforces them
only in the VM lab, see tests/vm/test_vm_big_servers.py). And a reboot gives the cores back."""

import json
import os

import pytest

from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab

POLICY = "/etc/meso-agentless/node-policy.json"
JOB = """\
job: {name}
type: service
tasks:
  - name: latency
    command: ["sleep", "600"]
    resources: {{cpus: 1, cpuset: dedicated, numa: same, mem: 256MiB, mem_soft: 192MiB,
                io_weight: 500, devices: {{disk: 1}}}}
    constraints: [{{attribute: hostname, op: eq, value: {host}}}]
  - name: batch
    command: ["sleep", "600"]
    resources: {{cpus: 0.5, mem: 128MiB, io_weight: 10}}
    constraints: [{{attribute: hostname, op: eq, value: {host}}}]
"""


def show(lab, host, unit, *props):
    out = lab.run(host, ["systemctl", "show", "-p", ",".join(props), f"{unit}.service"]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def task_units(meso_env, job):
    done = cli(meso_env, "status", job, "-o", "json")
    tasks = json.loads(done.stdout)["jobs"][0]["tasks"]
    return {t["task"]: t for t in tasks if t["state"] == "running"}


@pytest.fixture
def host_with_devices(meso_lab, tmp_path):
    """The third lab host hands out /dev/null as device class `disk` (its node policy says so);
    the policy file goes again afterwards."""
    host = meso_lab.hosts[2].name
    policy = {"allow_root": True, "devices": {"disk": ["/dev/null"]}}
    meso_lab.run(host, ["mkdir", "-p", "-m", "755", os.path.dirname(POLICY)])
    meso_lab.run(host, ["sh", "-c", f"umask 022; echo '{json.dumps(policy)}' > {POLICY}"])
    env = {**os.environ, "MESO_STATE": str(tmp_path / "state.db"),
           "MESO_INVENTORY": str(meso_lab.inventory)}  # fmt: skip
    yield host, env
    cli(env, "kill", "pinned")
    meso_lab.run(host, ["rm", "-f", POLICY])


def test_dedicated_numa_soft_memory_io_weight_and_devices_in_systemctl_show(
    meso_lab, host_with_devices, tmp_path
):
    host, env = host_with_devices
    job = tmp_path / "pinned.yaml"
    job.write_text(JOB.format(name="pinned", host=host))
    done = cli(env, "run", str(job))
    assert done.returncode == 0, done.stdout + done.stderr
    running = wait_for(lambda: (u := task_units(env, "pinned")) and len(u) == 2 and u)
    latency, batch = running["latency"]["unit"], running["batch"]["unit"]
    cores = meso_lab.run(host, ["cat", "/sys/devices/system/cpu/online"]).stdout.strip()
    assert cores == "0-1"  # the lab host sees this machine's two cores, on NUMA node 0
    pinned = show(
        meso_lab,
        host,
        latency,
        "AllowedCPUs",
        "AllowedMemoryNodes",
        "MemoryHigh",
        "MemoryMax",
        "IOWeight",
        "DevicePolicy",
        "DeviceAllow",
        "Environment",
    )
    dedicated = pinned["AllowedCPUs"]
    assert dedicated in ("0", "1")
    assert pinned["AllowedMemoryNodes"] == "0"
    assert pinned["MemoryHigh"] == str(192 << 20) and pinned["MemoryMax"] == str(256 << 20)
    assert pinned["IOWeight"] == "500"
    assert pinned["DevicePolicy"] == "closed"
    assert pinned["DeviceAllow"] == "/dev/null rw"
    assert f"MESO_CPUSET={dedicated}" in pinned["Environment"]
    assert "MESO_DEVICES=/dev/null" in pinned["Environment"]
    shared = show(meso_lab, host, batch, "AllowedCPUs", "IOWeight", "DevicePolicy", "DeviceAllow")
    assert shared["AllowedCPUs"] == str(1 - int(dedicated))  # never the dedicated core
    assert shared["IOWeight"] == "10"
    assert shared["DevicePolicy"] == "closed" and shared.get("DeviceAllow", "") == ""
    # a second one: the host's one disk device is taken, and never given twice
    second = tmp_path / "second.yaml"
    second.write_text(JOB.format(name="second", host=host).split("  - name: batch")[0])
    said = cli(env, "run", "--detach", str(second))
    assert "lacks 1 free disk device on 1 host" in said.stdout, said.stdout + said.stderr
    cli(env, "kill", "second")
    # without a device: one core is free of pins, but the dedicated task holds the other whole
    # and the shared one half of this one, so the host's CPUs are spent (the pool shrank)
    third = tmp_path / "third.yaml"
    third.write_text(second.read_text().replace(", devices: {disk: 1}", "").replace(
        "job: second", "job: third"))  # fmt: skip
    said = cli(env, "run", "--detach", str(third))
    assert 'dimension "cpus" exhausted on 1 host' in said.stdout, said.stdout + said.stderr
    listed = meso_lab.run(host, ["systemctl", "list-units", "--no-legend", "meso-second*",
                                 "meso-third*"])  # fmt: skip
    assert listed.stdout.strip() == ""
    cli(env, "kill", "third")


def test_a_reboot_gives_the_dedicated_cores_back_and_the_service_gets_them_again(
    meso_lab, host_with_devices, tmp_path
):
    host, env = host_with_devices
    job = tmp_path / "pinned.yaml"
    job.write_text(JOB.format(name="pinned", host=host).split("  - name: batch")[0])
    assert cli(env, "run", str(job)).returncode == 0
    before = wait_for(lambda: task_units(env, "pinned").get("latency"))
    meso_lab.restart(host)  # transient units and /run/meso-node go with the reboot
    assert not meso_lab.run(host, ["test", "-e", "/run/meso-node/pinned.json"]).ok

    def replaced():
        cli(env, "run", str(job))  # resumed: it sees the new boot and places the service again
        now = task_units(env, "pinned").get("latency")
        return now if now and now["unit"] != before["unit"] else None

    after = wait_for(replaced, timeout=120, every=2)
    props = show(meso_lab, host, after["unit"], "AllowedCPUs", "ActiveState")
    assert props["ActiveState"] == "active" and props["AllowedCPUs"] in ("0", "1")
