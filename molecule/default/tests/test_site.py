"""testinfra: what site.yml leaves on each node, beyond the meso_node role."""

from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

# the scenario's own inventory (the lab's hosts and the controller), not molecule's copy
INVENTORY = Path(__file__).resolve().parents[1] / "inventory"
testinfra_hosts = [
    f"ansible://{name}?ansible_inventory={INVENTORY}"
    for name in testinfra.utils.ansible_runner.AnsibleRunner(str(INVENTORY)).get_hosts("meso_nodes")
]
assert testinfra_hosts, f"no hosts in {INVENTORY}: is the lab up?"  # never skip silently


@pytest.mark.parametrize(("package", "service"), [("memcached", "memcached"),
                                                  ("redis-server", "redis-server")])  # fmt: skip
def test_framework_packages_are_installed_but_not_started(host, package, service):
    assert host.package(package).is_installed
    assert not host.service(service).is_running
    assert not host.service(service).is_enabled


def test_the_controller_knows_the_nodes_real_host_key(host):
    key = host.file("/etc/ssh/ssh_host_ed25519_key.pub").content_string.split()[1]
    with open("/var/lib/meso-lab/mol/controller/known_hosts") as known:
        lines = [line for line in known if line.startswith(f"{host.backend.get_hostname()},")]
    assert len(lines) == 1 and lines[0].split()[2] == key
