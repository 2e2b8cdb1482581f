#!/usr/bin/python
# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: meso_job_info
short_description: The jobs a meso-agentless controller holds
version_added: 0.1.0
description:
  - Reads C(GET /v1/jobs) (or C(GET /v1/jobs/NAME)) and returns the API's JSON. Changes nothing.
author:
  - meso-agentless contributors (@meso-agentless)
extends_documentation_fragment:
  - meso.agentless.controller
  - meso.agentless.controller.info_module
options:
  name:
    description:
      - One job; an empty list when the controller holds no job of that name.
    type: str
seealso:
  - module: meso.agentless.meso_job
"""

EXAMPLES = r"""
- name: What the web job runs, and where
  meso.agentless.meso_job_info:
    controller: http://127.0.0.1:4646
    token_file: /var/lib/meso-controller/token
    name: web
  register: web

- name: Every job
  meso.agentless.meso_job_info:
  register: all_jobs
"""

RETURN = r"""
jobs:
  description:
    - The jobs as C(GET /v1/jobs) has them - state, run, version, outcome, spec, and every task
      attempt (host, unit, state, exit code, resources, ports, health).
  returned: always
  type: list
  elements: dict
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
        if module.params["name"]:
            job = client.job(module.params["name"])
            jobs = [] if job is None else [job]
        else:
            jobs = client.jobs()
    except MesoApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    module.exit_json(changed=False, jobs=jobs)


if __name__ == "__main__":
    main()
