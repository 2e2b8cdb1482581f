#!/usr/bin/python
# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: meso_hosts_info
short_description: The hosts of a meso-agentless controller, and the cluster's state
version_added: 0.1.0
description:
  - Reads C(GET /v1/hosts) (or C(GET /v1/hosts/NAME)) and C(GET /v1/cluster) and returns the
    API's JSON. Changes nothing.
author:
  - meso-agentless contributors (@meso-agentless)
extends_documentation_fragment:
  - meso.agentless.controller
  - meso.agentless.controller.info_module
options:
  name:
    description:
      - One host (the task fails if the controller has no such host).
    type: str
seealso:
  - module: meso.agentless.meso_job_info
"""

EXAMPLES = r"""
- name: What the cluster holds
  meso.agentless.meso_hosts_info:
    controller: http://127.0.0.1:4646
    token_file: /var/lib/meso-controller/token
  register: cluster

- name: The drained hosts
  ansible.builtin.debug:
    msg: "{{ cluster.hosts | selectattr('state', 'eq', 'drained') | map(attribute='host') }}"
"""

RETURN = r"""
hosts:
  description:
    - Each host as C(GET /v1/hosts) has it - state, reachable, capacity, reserved, allocated,
      free, by framework, load, attributes, units nobody claims.
  returned: always
  type: list
  elements: dict
cluster:
  description: C(GET /v1/cluster) - hosts by state, whether replacements are active or paused.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.meso.agentless.plugins.module_utils.meso_api import (
    CONTROLLER_ARGS,
    MesoApiError,
    MesoClient,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(CONTROLLER_ARGS, name=dict(type="str")), supports_check_mode=True
    )
    try:
        client = MesoClient.from_params(module.params)
        hosts = [client.host(module.params["name"])] if module.params["name"] else client.hosts()
        cluster = client.request("GET", "/v1/cluster")[1]
    except MesoApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    module.exit_json(changed=False, hosts=hosts, cluster=cluster)


if __name__ == "__main__":
    main()
