"""The node's own policy on real (streamed, root) lab hosts: what a request cannot make a host do,
the policy the controller sends at connection time (it tightens, never loosens), hostile
request lines, and a task that holds its resources until its whole cgroup is empty.

molecule/node runs the same hostile requests through the pinned key after the meso_node role.
"""

import json
import shlex
import subprocess
import time

import pytest

from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.transport import BOOTSTRAP, NodeRefused
from meso_agentless.inventory import load_inventory
from meso_agentless.node import node_command_source
from tests.conftest import LAB

pytestmark = pytest.mark.lab

HOST = f"{LAB}-2"
POLICY = "/etc/meso-agentless/node-policy.json"


@pytest.fixture(scope="module")
def plane(meso_lab):
    plane = ExecutionPlane(load_inventory(str(meso_lab.inventory)).nodes, timeout=30)
    yield plane
    plane.close()


def raw_serve(meso_lab, host: str, *lines: bytes, timeout: float = 120) -> list[dict]:
    """The node command streamed to python3 as root, as the controller starts it, but with no
    policy sent first: each line's answer. (OpenSSH, not paramiko: 64 MB in seconds.)"""
    source = node_command_source()
    stdin = f"{len(source)}\n".encode() + source + b"".join(line + b"\n" for line in lines)
    paths = meso_lab.paths
    done = subprocess.run(
        ["ssh", "-i", str(paths.key), "-o", f"UserKnownHostsFile={paths.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"root@{meso_lab.layout.host(host).address}",
         shlex.join(["python3", "-c", BOOTSTRAP, "serve"])],
        input=stdin, capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(lines), done.stdout[-2000:] + done.stderr[-2000:]
    return answers


def request(**fields) -> bytes:
    return json.dumps(fields).encode()


def units(plane, host: str) -> list[str]:
    return sorted(u["unit"] for u in plane.host(host).request("list")["units"])


def test_the_controller_sends_its_policy_when_it_connects(plane):
    policy = plane.host(HOST).request("policy")["policy"]
    assert policy["source"] == "built-in defaults (tightened by this connection)"
    assert policy["allow_root"] is False and policy["task_users"] == []
    assert policy["sandbox_minimum"]["protect_system"] == "full"
    facts = plane.host(HOST).request("sample")
    assert facts["capacity"] == {"cpus": facts["cpus"] * 1000, "mem": facts["mem_total"]}
    assert facts["policy"]["default_limits"] == {"cpus": 100, "mem": 128 << 20, "tasks_max": 512}


HOSTILE = {
    "user: 'root' is root, which this host's policy does not allow": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["sh", "-c", "id; head -c 60 /etc/shadow"],
        user="root"),
    "sandbox.dynamic_user: false without a user runs the task as root": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], sandbox={"dynamic_user": False}),
    "sandbox.no_new_privileges: False is looser than this host's minimum (True)": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["touch", "/etc/owned"],
        sandbox={"protect_system": "no", "private_tmp": False, "no_new_privileges": False}),
    "user: 'nobody' is not allowed on this host (a DynamicUser, or one of: none)": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], user="nobody"),
    "admission: cpus would exceed the host's capacity (": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["sleep", "60"], cpus=1_000_000),
    "admission: mem would exceed the host's capacity": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["sleep", "60"], mem=1 << 50),
    "tasks_max: 100000 is more than this host allows (4096)": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], tasks_max=100_000),
    "unit: 'meso-evil_t_0_1\\n' is not a meso unit name": request(
        verb="launch", unit="meso-evil_t_0_1\n", argv=["id"]),
    "env: 'A\\n' is not an environment variable name": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], env={"A\n": "x"}),
    "request: longer than 1048576 bytes": b'{"verb": "sample", "x": "' + b"x" * (64 << 20)
    + b'"}',
    "request: nested deeper than 8 levels": b'{"verb": "status", "unit": ' + b"[" * 50_000
    + b"]" * 50_000 + b"}",
    "verb: must be a string, not []": request(verb=[]),
    "request: must be a JSON object": b"[1, 2, 3]",
    "unit: 5 is not a meso unit name": request(verb="status", unit=5),
    "env.A: must be a string, not ['x']": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], env={"A": ["x"]}),
    "request: not UTF-8 text": b'{"verb": "status", "unit": "meso-\xff_t_0_1"}',
    "unit: not valid Unicode text (a lone surrogate)": b'{"verb": "status", "unit": "\\udcff"}',
    "description: must be one line of text": request(
        verb="launch", unit="meso-evil_t_0_1", argv=["id"], description="a\nb"),
}  # fmt: skip


def test_hostile_requests_are_refused_one_line_each_and_start_nothing(plane, meso_lab):
    before = units(plane, HOST)
    answers = raw_serve(meso_lab, HOST, *HOSTILE.values(), request(verb="list"),
                        request(verb="sample"))  # fmt: skip
    for (reason, _), answer in zip(HOSTILE.items(), answers, strict=False):
        assert answer["ok"] is False and answer["error"].startswith(reason), (reason, answer)
    assert answers[-1]["ok"] is True and answers[-2]["ok"] is True  # serve still answers
    assert units(plane, HOST) == before  # nothing started
    assert meso_lab.run(HOST, ["test", "-e", "/etc/owned"]).exit_status != 0
    # and the same through the controller's own connection
    with pytest.raises(NodeRefused, match="user: 'root' is root"):
        plane.host(HOST).request("launch", unit="meso-evil_t_0_2", argv=["id"], user="root")
    assert units(plane, HOST) == before


def test_the_controllers_policy_cannot_loosen_the_hosts_and_tightens_it(plane, meso_lab):
    """An operator's policy file that allows root: root tasks run when nothing tightens it (a
    bare streamed node command), and not on the controller's connection, whose default policy
    says no root tasks."""
    host = f"{LAB}-3"
    lenient = {"allow_root": True, "default_limits": {"mem": "64MiB"}}
    meso_lab.run(host, ["mkdir", "-p", "/etc/meso-agentless"])
    meso_lab.run(host, ["sh", "-c", f"echo '{json.dumps(lenient)}' > {POLICY}"])
    try:
        (bare,) = raw_serve(meso_lab, host, request(
            verb="launch", unit="meso-root_t_0_1", argv=["id", "-u"], user="root"))  # fmt: skip
        assert bare["ok"] is True and bare["limits"]["mem"] == 64 << 20
        with pytest.raises(NodeRefused, match="user: 'root' is root, which this host's policy"):
            plane.host(host).request("launch", unit="meso-root_t_0_2", argv=["id"], user="root")
        policy = plane.host(host).request("policy")["policy"]
        assert policy["source"] == f"{POLICY} (tightened by this connection)"
        assert policy["default_limits"]["mem"] == 64 << 20  # the host's, lower than the default
        # a file others could write is no policy at all: nothing launches
        meso_lab.run(host, ["chmod", "666", POLICY])
        with pytest.raises(NodeRefused, match="must be owned by root and writable by root only"):
            plane.host(host).request("launch", unit="meso-root_t_0_3", argv=["true"])
        assert plane.host(host).request("sample")["capacity"] == {"cpus": 0, "mem": 0}
    finally:
        meso_lab.run(host, ["rm", "-f", POLICY])
        plane.host(host).request("forget", unit="meso-root_t_0_1")
    assert plane.host(host).request("policy")["policy"]["allow_root"] is False


def wait_state(plane, host, unit, states, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = plane.status(host, unit)
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{unit} still {status}")


def test_a_task_runs_and_holds_its_resources_until_its_whole_cgroup_is_empty(plane):
    """The main process exits 0 at once; what it left behind keeps the task running (so
    admission still counts it) until the last process is gone."""
    host = f"{LAB}-1"
    leaver, other = "meso-leaver_t_0_1", "meso-leaver_t_1_1"
    plane.launch(host, {"unit": leaver, "argv": ["sh", "-c", "sleep 4 & exit 0"],
                        "cpus": 1500})  # fmt: skip
    time.sleep(1)
    status = plane.status(host, leaver)
    assert (status["state"], status["exit_code"]) == ("running", 0)  # main exited 0: not done
    with pytest.raises(NodeRefused, match=r"admission: cpus would exceed .*\(1500 held"):
        plane.host(host).request("launch", unit=other, argv=["true"], cpus=1000)
    assert wait_state(plane, host, leaver, ("finished",), timeout=15)["exit_code"] == 0
    plane.launch(host, {"unit": other, "argv": ["true"], "cpus": 1000})
    assert wait_state(plane, host, other, ("finished",))["state"] == "finished"
    for unit in (leaver, other):
        plane.forget(host, unit)


def test_without_exit_type_cgroup_a_populated_cgroup_still_means_running(plane, meso_lab):
    """Units made the old way (no ExitType=cgroup: systemd before 250 or an older node
    command): the node reads the unit's cgroup."""
    host = f"{LAB}-1"
    unit = "meso-oldway_t_0_1"
    meso_lab.run(host, ["systemd-run", f"--unit={unit}", "--property=RemainAfterExit=yes",
                        "sh", "-c", "sleep 4 & exit 0"])  # fmt: skip
    time.sleep(1)
    shown = meso_lab.run(host, ["systemctl", "show", "-p", "SubState", unit]).stdout.strip()
    assert shown == "SubState=exited"  # systemd itself says it is done
    assert plane.status(host, unit)["state"] == "running"  # the node knows better
    assert wait_state(plane, host, unit, ("finished",), timeout=15)["exit_code"] == 0
    plane.forget(host, unit)
