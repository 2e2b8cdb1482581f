# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
name: meso
short_description: The hosts of a meso-agentless controller, with their state and free resources
version_added: 0.1.0
description:
  - Lists the hosts a meso-agentless controller manages (C(GET /v1/hosts)), each with its state,
    attributes, capacity, allocated and free resources as host variables (C(meso_host_*)).
  - Groups them by state (C(meso_state_up), C(meso_state_drained), ...) and by attribute
    (C(meso_attr_rack_a) for C(rack=a)); every host is in C(meso_hosts).
  - The controller does not hand out how to reach a host (its own key runs nothing but the node
    command), so give this source beside the site's own inventory (C(-i inventory/ -i meso.yml)),
    where the same host names say how Ansible reaches them.
  - The configuration file's name must end with C(meso.yml) or C(meso.yaml).
author:
  - meso-agentless contributors (@meso-agentless)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [meso.agentless.meso]
  controller:
    description:
      - The controller's API, C(http://HOST:PORT) or C(https://HOST:PORT).
    type: str
    required: true
    env:
      - name: MESO_ADDR
  token:
    description:
      - The API's bearer token.
    type: str
    env:
      - name: MESO_TOKEN
  token_file:
    description:
      - A file holding the token (used when O(token) is not set).
    type: path
    env:
      - name: MESO_TOKEN_FILE
  validate_certs:
    description: Verify the controller's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: A PEM file of CA certificates to verify the controller's certificate with.
    type: path
  request_timeout:
    description: Seconds to wait for the controller's answer.
    type: float
    default: 30
  group_prefix:
    description: What the names of the groups made by state and by attribute begin with.
    type: str
    default: meso_
"""

EXAMPLES = r"""
# meso.yml, beside the site's inventory:
#   ansible-inventory -i inventories/prod -i meso.yml --graph
#   ansible-playbook -i inventories/prod -i meso.yml -l meso_state_drained maintenance.yml
plugin: meso.agentless.meso
controller: https://ctl.example:4646
token_file: /etc/meso/token
keyed_groups:
  - key: meso_host_by_framework.keys() | list
    prefix: runs
"""

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible_collections.meso.agentless.plugins.module_utils.meso_api import (
    MesoApiError,
    MesoClient,
    resolve_token,
)

VAR_PREFIX = "meso_host_"


def host_vars(info):
    """A host of GET /v1/hosts as host variables: each field as meso_host_FIELD."""
    return dict((VAR_PREFIX + key, value) for key, value in info.items() if key != "host")


def host_groups(info, prefix):
    """The groups a host goes in: all, by state, by each attribute's value."""
    groups = [prefix + "hosts", prefix + "state_" + str(info.get("state"))]
    for key, value in sorted((info.get("attributes") or {}).items()):
        groups.append(f"{prefix}attr_{key}_{value}")
    return [to_safe_group_name(g) for g in groups]


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "meso.agentless.meso"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("meso.yml", "meso.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            token = resolve_token(self.get_option("token"), self.get_option("token_file"))
            client = MesoClient(
                self.get_option("controller"),
                token,
                self.get_option("validate_certs"),
                self.get_option("ca_path"),
                self.get_option("request_timeout"),
            )
            hosts = client.hosts()
        except MesoApiError as exc:
            raise AnsibleParserError(f"{path}: {exc}") from None
        strict = self.get_option("strict")
        prefix = self.get_option("group_prefix")
        for info in hosts:
            name = info["host"]
            self.inventory.add_host(name)
            variables = host_vars(info)
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
            for group in host_groups(info, prefix):
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(
                self.get_option("groups"), variables, name, strict=strict
            )
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), variables, name, strict=strict
            )
