"""The node's side of big servers: what a launch may ask of cores, NUMA nodes, soft memory, IO
weight and devices, checked against what the host has and what other units hold (its files
under a temporary directory, its /sys read from fixtures)."""

import pytest

from meso_agentless.node import nodecmd

BASE = {"unit": "meso-j_t_0_1", "argv": ["true"], "cpus": 2000, "mem": 1 << 30}
CORES = {"nodes": {"0": [0, 1], "1": [2, 3]}, "node_mem": {"0": 1 << 30, "1": 1 << 30}}
POLICY = nodecmd.parse_policy({"devices": {"gpu": ["/dev/loop0", "/dev/loop1"]}})


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host with 4 cores on 2 NUMA nodes, its pinned units in tmp_path; systemctl recorded."""
    monkeypatch.setattr(nodecmd, "PINNED_FILE", str(tmp_path / "pinned.json"))
    monkeypatch.setattr(nodecmd, "LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.setattr(nodecmd, "STATE_DIR", str(tmp_path))
    monkeypatch.setattr(nodecmd, "read_cores", lambda: CORES)
    monkeypatch.setattr(
        nodecmd,
        "held_units",
        lambda: [  # every recorded unit runs
            {"unit": u, "state": "running"} for u in nodecmd._read_pinned() if u != nodecmd.SHARED
        ],
    )
    ran: list[list[str]] = []
    monkeypatch.setattr(nodecmd, "_run", lambda argv: ran.append(argv) or "")
    return ran


def pin(request: dict, unit: str = "meso-j_t_0_1", policy: dict = POLICY) -> list[str]:
    argv, _ = nodecmd.plan_launch({**BASE, "unit": unit, **request}, policy)
    return nodecmd.pin_argv(unit, argv, {**BASE, **request}, policy)


def props(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in argv[: argv.index("--")] if a.startswith("--property=")]


def test_mem_soft_and_io_weight_become_memory_high_and_io_weight():
    argv, _ = nodecmd.plan_launch({**BASE, "mem_soft": 512 << 20, "io_weight": 50})
    assert f"--property=MemoryHigh={512 << 20}" in argv
    assert "--property=IOWeight=50" in argv


@pytest.mark.parametrize(("request_", "message"), [
    ({"mem_soft": 2 << 30}, "mem_soft: 2147483648 is more than mem (1073741824)"),
    ({"io_weight": 0}, "io_weight"),
    ({"io_weight": 10001}, "io_weight"),
    ({"cpuset": [1, 1]}, "cpuset: must be a list of distinct core numbers"),
    ({"cpuset": [-1]}, "cpuset: must be a list of distinct core numbers"),
    ({"cpuset": "0-3"}, "cpuset: must be a list of distinct core numbers"),
    ({"numa": 0}, "numa: only with cpuset"),
    ({"devices": {"gpu": ["/etc/shadow"]}}, "devices.gpu: '/etc/shadow' is not a device path"),
    ({"devices": {"gpu": ["/dev/../etc/shadow"]}}, "devices.gpu: '/dev/../etc/shadow' is not"),
    ({"devices": ["/dev/loop0"]}, "devices: must be an object"),
])  # fmt: skip
def test_what_a_pinned_request_may_not_ask(request_, message):
    with pytest.raises(nodecmd.RequestError, match="^" + message.replace("(", r"\(")[:40]):
        nodecmd.plan_launch({**BASE, **request_})


def test_dedicated_cores_numa_node_and_devices_become_properties_and_env(host):
    argv = pin({"cpuset": [2, 3], "numa": 1, "devices": {"gpu": ["/dev/loop1"]}})
    assert props(argv)[-4:] == ["AllowedMemoryNodes=1", "AllowedCPUs=2-3",
                                "DevicePolicy=closed", "DeviceAllow=/dev/loop1 rw"]  # fmt: skip
    env = [a for a in argv[: argv.index("--")] if a.startswith("--setenv=MESO_C") or "CUDA" in a]
    assert env == ["--setenv=CUDA_VISIBLE_DEVICES=1", "--setenv=MESO_CPUSET=2-3"]
    assert "--setenv=MESO_DEVICES=/dev/loop1" in argv


def test_the_node_never_grants_what_it_has_not_or_what_another_unit_holds(host):
    with pytest.raises(nodecmd.RequestError, match="cpuset: this host has no core 7"):
        pin({"cpuset": [7]})
    with pytest.raises(nodecmd.RequestError, match="numa: the cores are not all on NUMA node 0"):
        pin({"cpuset": [1, 2], "numa": 0})
    with pytest.raises(nodecmd.RequestError, match="devices: this host has no device class 'fpga'"):
        pin({"devices": {"fpga": ["/dev/loop0"]}})
    with pytest.raises(nodecmd.RequestError, match="/dev/loop7 is not one this host declares"):
        pin({"devices": {"gpu": ["/dev/loop7"]}})
    first = {"cpuset": [0, 1], "devices": {"gpu": ["/dev/loop0"]}}
    pin(first)
    nodecmd.record_pins("meso-j_t_0_1", first)
    with pytest.raises(nodecmd.RequestError, match="cpuset: core 1 is dedicated to another task"):
        pin({"cpuset": [1, 2]}, unit="meso-j_t_1_1")
    with pytest.raises(nodecmd.RequestError, match="/dev/loop0 is given to another task"):
        pin({"devices": {"gpu": ["/dev/loop0"]}}, unit="meso-j_t_1_1")


def test_shared_tasks_run_on_the_shared_cores_which_follow_the_dedicated_ones(host):
    assert "AllowedCPUs=" not in " ".join(pin({}, policy=nodecmd.parse_policy({})))
    nodecmd._write_ledger([{"unit": "meso-s_t_0_1.service", "state": "running"}])
    dedicated = {"cpuset": [0, 1]}
    pin(dedicated, unit="meso-d_t_0_1")
    nodecmd.record_pins("meso-d_t_0_1", dedicated)
    # the running shared unit was moved off cores 0 and 1, a new shared one starts on 2-3
    assert host == [["systemctl", "set-property", "--runtime", "meso-s_t_0_1.service",
                     "AllowedCPUs=2-3"]]  # fmt: skip
    assert "AllowedCPUs=2-3" in props(pin({}, unit="meso-s_t_1_1"))
    host.clear()
    # the dedicated unit ends: a sample gives its cores back to the shared units
    nodecmd.refresh_pins([{"unit": "meso-s_t_0_1.service", "state": "running"},
                          {"unit": "meso-d_t_0_1.service", "state": "finished"}],
                         since=2e9)  # fmt: skip
    assert host == [["systemctl", "set-property", "--runtime", "meso-s_t_0_1.service",
                     "AllowedCPUs=0-3"]]  # fmt: skip
    assert not any(p.startswith("AllowedCPUs=") for p in props(pin({}, unit="meso-s_t_2_1")))
    # a unit recorded after the listing began is kept, though the listing did not show it
    nodecmd.record_pins("meso-d_t_1_1", dedicated)
    nodecmd.refresh_pins([], since=0.0)
    assert "AllowedCPUs=2-3" in props(pin({}, unit="meso-s_t_3_1"))


def test_policy_devices_and_plugins_are_checked_and_a_connection_only_narrows_them():
    with pytest.raises(nodecmd.PolicyError, match=r"devices\.gpu: 'nvidia0' is not a device path"):
        nodecmd.parse_policy({"devices": {"gpu": ["nvidia0"]}})
    with pytest.raises(nodecmd.PolicyError, match=r"device_plugins\.gpu: "):
        nodecmd.parse_policy({"device_plugins": {"gpu": []}})
    narrowed = nodecmd.tighten(POLICY, nodecmd.parse_policy(
        {"devices": {"gpu": ["/dev/loop1", "/dev/loop9"]}}, partial=True))  # fmt: skip
    assert narrowed["devices"] == {"gpu": ["/dev/loop1"]}


def test_plugins_print_device_paths(tmp_path):
    policy = nodecmd.parse_policy(
        {
            "devices": {"gpu": ["/dev/loop0"]},
            "device_plugins": {
                "gpu": ["echo", "/dev/loop0 /dev/loop3"],
                "npu": ["printf", "junk\\n/dev/null\\n"],
            },
        }
    )
    assert nodecmd.policy_devices(policy) == {"gpu": ["/dev/loop0", "/dev/loop3"],
                                              "npu": ["/dev/null"]}  # fmt: skip


def test_cpulists_both_ways():
    assert nodecmd.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert nodecmd.format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert nodecmd.parse_node_meminfo("Node 1 MemTotal:  2048 kB\nNode 1 MemFree: 1 kB") == 2 << 20


def test_a_holder_that_ended_since_the_last_sample_gives_its_cores_up_at_once(host, monkeypatch):
    first = {"cpuset": [0, 1], "devices": {"gpu": ["/dev/loop0"]}}
    pin(first)
    nodecmd.record_pins("meso-j_t_0_1", first)
    monkeypatch.setattr(nodecmd, "held_units", lambda: [
        {"unit": "meso-j_t_0_1.service", "state": "running"}])  # fmt: skip
    with pytest.raises(nodecmd.RequestError, match="core 0 is dedicated to another task"):
        pin({"cpuset": [0]}, unit="meso-j_t_1_1")
    monkeypatch.setattr(nodecmd, "held_units", lambda: [
        {"unit": "meso-j_t_0_1.service", "state": "finished"}])  # fmt: skip
    argv = pin({"cpuset": [0], "devices": {"gpu": ["/dev/loop0"]}}, unit="meso-j_t_1_1")
    assert "AllowedCPUs=0" in props(argv) and "DeviceAllow=/dev/loop0 rw" in props(argv)
