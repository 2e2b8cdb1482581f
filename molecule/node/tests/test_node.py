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
