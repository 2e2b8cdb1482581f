"""testinfra: what the meso_node role leaves on each node."""

import json
import subprocess
from pathlib import Path

import testinfra.utils.ansible_runner

# the scenario's own inventory (the lab's hosts and the controller), not molecule's copy
INVENTORY = Path(__file__).resolve().parents[1] / "inventory"
testinfra_hosts = [
    f"ansible://{name}?ansible_inventory={INVENTORY}"
    for name in testinfra.utils.ansible_runner.AnsibleRunner(str(INVENTORY)).get_hosts("meso_nodes")
]
assert testinfra_hosts, f"no hosts in {INVENTORY}: is the lab up?"  # never skip silently

COMMAND = "/usr/local/lib/meso/nodecmd"
POLICY = "/etc/meso-agentless/node-policy.json"
CONTROLLER_KEY = "/var/lib/meso-lab/mol/controller/id_ed25519"
LAB_KNOWN_HOSTS = "/var/lib/meso-lab/mol/known_hosts"


def as_meso(host, *command: str) -> subprocess.CompletedProcess:
    """ssh to the node as meso with the controller's key, host key checked."""
    address = host.ansible.get_variables()["ansible_host"]
    return subprocess.run(
        ["ssh", "-i", CONTROLLER_KEY, "-o", f"UserKnownHostsFile={LAB_KNOWN_HOSTS}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"meso@{address}", *command],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_meso_user_exists(host):
    user = host.user("meso")
    assert user.exists
    assert user.home == "/var/lib/meso"
    assert "sudo" not in user.groups


def test_the_node_command_is_root_owned_and_meso_cannot_change_it_or_its_key(host):
    command = host.file(COMMAND)
    assert (command.user, command.group, command.mode) == ("root", "root", 0o755)
    keys = host.file("/var/lib/meso/.ssh/authorized_keys")
    assert (keys.user, keys.mode) == ("root", 0o644)
    for path in (COMMAND, keys.path, "/var/lib/meso/.ssh"):
        assert host.run(f"runuser -u meso -- test -w {path}").rc != 0, path


def test_meso_may_run_only_the_node_command_as_root(host):
    assert host.run("runuser -u meso -- sudo -n id").rc != 0
    assert host.run("runuser -u meso -- sudo -n /bin/sh -c id").rc != 0
    assert host.file("/etc/sudoers.d/meso").mode == 0o440


def test_the_key_cannot_run_an_arbitrary_command(host):
    for command in (["id"], ["sh"], ["sh", "-c", "id"], ["cat", "/etc/shadow"]):
        done = as_meso(host, *command)
        assert done.returncode == 2, command
        assert "uid=" not in done.stdout and "root:" not in done.stdout
        assert "this key runs only the meso node command" in done.stdout


def test_the_key_runs_the_node_command(host):
    done = as_meso(host, "sample")
    facts = json.loads(done.stdout)
    assert facts["ok"] is True and facts["cpus"] >= 1 and facts["systemd"] >= 240


def serve(host, *requests: dict | bytes) -> list[dict]:
    """Requests on one `serve` channel with the pinned key, one answer line each."""
    address = host.ansible.get_variables()["ansible_host"]
    lines = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                     for r in requests)  # fmt: skip
    done = subprocess.run(
        ["ssh", "-i", CONTROLLER_KEY, "-o", f"UserKnownHostsFile={LAB_KNOWN_HOSTS}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"meso@{address}", "serve"],
        input=lines, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(requests), done.stdout[-2000:] + done.stderr[-2000:]
    return answers


def test_the_node_policy_is_roots_and_valid(host):
    policy = host.file(POLICY)
    assert (policy.user, policy.group, policy.mode) == ("root", "root", 0o644)
    directory = host.file("/etc/meso-agentless")
    assert directory.user == "root" and directory.mode & 0o022 == 0
    assert host.run(f"runuser -u meso -- test -w {POLICY}").rc != 0
    checked = json.loads(host.check_output(f"{COMMAND} check-policy {POLICY}"))
    assert checked["ok"] is True and checked["policy"]["default_limits"]["tasks_max"] >= 1


def test_the_pinned_key_is_refused_anything_the_policy_does_not_allow(host):
    """Each refused with one line naming the reason; serve still answers; nothing started."""
    unit = "meso-hostile_t_0_1"
    before, policy = serve(host, {"verb": "list"}, {"verb": "policy"})
    refusals = {
        "sandbox.protect_system: 'no' is looser than this host's minimum": {
            "verb": "launch", "unit": unit, "argv": ["touch", "/etc/owned"],
            "sandbox": {"protect_system": "no"}},
        "sandbox.no_new_privileges: False is looser than this host's minimum": {
            "verb": "launch", "unit": unit, "argv": ["id"],
            "sandbox": {"no_new_privileges": False}},
        "admission: cpus would exceed the host's capacity": {  # no capacity in the request
            "verb": "launch", "unit": unit, "argv": ["sleep", "60"], "cpus": 1_000_000},
        "admission: mem would exceed the host's capacity": {
            "verb": "launch", "unit": unit, "argv": ["sleep", "60"], "mem": 1 << 50},
        "unit: 'meso-hostile_t_0_1\\n' is not a meso unit name": {
            "verb": "launch", "unit": unit + "\n", "argv": ["id"]},
        "env: 'A\\n' is not an environment variable name": {
            "verb": "launch", "unit": unit, "argv": ["id"], "env": {"A\n": "x"}},
        "request: longer than 1048576 bytes": b'{"verb": "launch", "argv": ["' + b"x" * (64 << 20)
        + b'"]}',
        "request: nested deeper than 8 levels": b'{"verb": "status", "unit": ' + b"[" * 50_000
        + b"]" * 50_000 + b"}",
        "verb: must be a string, not []": {"verb": []},
        "unit: 5 is not a meso unit name": {"verb": "status", "unit": 5},
        "argv: must be a non-empty list of strings": {
            "verb": "launch", "unit": unit, "argv": "rm -rf /"},
        "cpus: '1000' is not a whole number": {
            "verb": "launch", "unit": unit, "argv": ["id"], "cpus": "1000"},
        "request: not UTF-8 text": b'{"verb": "status", "unit": "\xff"}',
        "properties: unknown field": {
            "verb": "launch", "unit": unit, "argv": ["id"], "properties": {"User": "root"}},
    }  # fmt: skip
    if not policy["policy"]["allow_root"]:  # else molecule/node/tests/test_policy.py
        refusals["user: 'root' is root, which this host's policy does not allow"] = {
            "verb": "launch",
            "unit": unit,
            "argv": ["id"],
            "user": "root",
        }
        refusals["sandbox.dynamic_user: false without a user runs the task as root"] = {
            "verb": "launch",
            "unit": unit,
            "argv": ["id"],
            "sandbox": {"dynamic_user": False},
        }
    answers = serve(host, *refusals.values(), {"verb": "list"}, {"verb": "sample"})
    for (reason, _), answer in zip(refusals.items(), answers, strict=False):
        assert answer["ok"] is False and answer["error"].startswith(reason), (reason, answer)
    after, sample = answers[-2:]
    assert sample["ok"] is True and sample["capacity"]["cpus"] >= 1000  # serve still answers
    assert after["units"] == before["units"]  # nothing started
    assert not host.file("/etc/owned").exists


def test_a_launch_without_limits_gets_the_policys_defaults(host):
    unit = "meso-nolimits_t_0_1"
    (launched,) = serve(host, {"verb": "launch", "unit": unit, "argv": ["sleep", "60"]})
    assert launched["ok"] is True, launched
    shown = host.check_output(f"systemctl show -p CPUQuotaPerSecUSec,MemoryMax,MemorySwapMax,"
                              f"TasksMax,DynamicUser,ProtectSystem,ExitType {unit}")  # fmt: skip
    (stopped,) = serve(host, {"verb": "stop", "unit": unit})
    assert launched["limits"] == {"cpus": 100, "mem": 128 << 20, "tasks_max": 512}
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "CPUQuotaPerSecUSec": "100ms", "MemoryMax": str(128 << 20), "MemorySwapMax": "0",
        "TasksMax": "512", "DynamicUser": "yes", "ProtectSystem": "strict", "ExitType": "cgroup",
    }  # fmt: skip
    assert stopped["state"] == "killed"
