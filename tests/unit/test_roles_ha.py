"""The roles for several controllers on one PostgreSQL state, rendered with Ansible's own
templating: the controller's command and sandbox for a postgresql:// state, and the nodes
trusting every controller's key (each pinned to the node command)."""

from pathlib import Path

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLES = Path(__file__).parents[2] / "collections/ansible_collections/meso/agentless/roles"


def role_vars(role, **extra):
    data = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    vars_file = ROLES / role / "vars/main.yml"
    if vars_file.exists():
        data.update(yaml.safe_load(vars_file.read_text()))
    data.update(extra)
    return {k: trust_as_template(v) if isinstance(v, str) else v for k, v in data.items()}


def render(variables, text):
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(text))


def test_a_postgresql_state_is_passed_on_and_not_taken_for_a_directory():
    url = "postgresql://meso@db.example/meso"
    variables = role_vars("meso_controller", meso_controller_state=url,
                          meso_controller_advertise="https://ctl-a.example:4646")  # fmt: skip
    argv = render(variables, "{{ meso_controller_argv }}")
    assert argv[argv.index("--state") + 1] == url
    assert argv[argv.index("--advertise") + 1] == "https://ctl-a.example:4646"
    assert render(variables, "{{ meso_controller_writable_dirs }}") == ["/var/lib/meso-controller"]


def test_sqlite_stays_as_it_was():
    variables = role_vars("meso_controller", meso_controller_state="/srv/meso/state.db")
    argv = render(variables, "{{ meso_controller_argv }}")
    assert "--advertise" not in argv
    assert render(variables, "{{ meso_controller_writable_dirs }}") == [
        "/var/lib/meso-controller", "/srv/meso"
    ]  # fmt: skip


def test_the_nodes_pin_every_controllers_key_to_the_node_command():
    variables = role_vars("meso_node", ansible_managed="managed", ansible_playbook_python="py",
                          meso_node_keys=["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"])  # fmt: skip
    template = (ROLES / "meso_node/templates/authorized_keys.j2").read_text()
    lines = [x for x in render(variables, template).splitlines() if x and not x.startswith("#")]
    assert lines == [
        'restrict,command="/usr/bin/sudo -n /usr/local/lib/meso/nodecmd --ssh" ssh-ed25519 AAAA a',
        'restrict,command="/usr/bin/sudo -n /usr/local/lib/meso/nodecmd --ssh" ssh-ed25519 BBBB b',
    ]
