#!/usr/bin/python
# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: meso_job
short_description: Run, scale, replace or kill a job on a meso-agentless controller
version_added: 0.1.0
description:
  - Makes the controller hold a job as its file says (O(state=present)), or kills it
    (O(state=absent)), through the controller's HTTP API.
  - Idempotent. The controller compares the file with the job it holds
    (C(POST /v1/plan/job)); an unchanged file changes nothing, a file whose tasks' counts alone
    differ scales the running job, any other change to an active service is rolled out by a
    deployment (by its C(update) policy, a few instances at a time, each new one healthy before an
    old one stops), and any other change to an active batch job replaces it (killed, then
    submitted again) only with O(replace=true).
  - In check mode the controller plans the file (where its tasks would go) and nothing is
    stored or launched. With C(--diff) the job's field-level diff is shown.
  - The controller's refusals fail the task with its message, which names the field (for
    example C(tasks[0].resources.cpus)).
author:
  - meso-agentless contributors (@meso-agentless)
extends_documentation_fragment:
  - meso.agentless.controller
attributes:
  check_mode:
    support: full
    description: The controller plans the job; nothing is submitted, scaled or killed.
  diff_mode:
    support: full
    description: The job as the controller holds it against the file, field by field.
options:
  name:
    description:
      - The job's name. Enough for O(state=absent); with a file, it must be the file's C(job:).
    type: str
  src:
    description:
      - A job file (YAML or JSON). A relative path is looked up in the playbook's C(files/)
        directory, then beside the playbook, on the machine running Ansible.
      - Mutually exclusive with O(definition).
    type: path
  definition:
    description:
      - The job inline, as a mapping (sent as JSON) or as the text of a job file (sent as YAML).
      - Mutually exclusive with O(src).
    type: raw
  state:
    description:
      - V(present) the job runs as the file says; V(absent) it is killed (its units stopped,
        nothing restarted).
    type: str
    choices: [present, absent]
    default: present
  replace:
    description:
      - When an active batch job's file changed in more than its tasks' counts, kill it and
        submit the file again. Its tasks are down in between. (A service is updated by a
        deployment instead, without this option.)
      - V(false) fails the task instead, naming the fields that changed.
    type: bool
    default: false
  wait:
    description:
      - Wait until the job's outcome for this file is known (a service placed and healthy, a
        batch job finished, a cron job's timers placed); fail if it failed or cannot be placed.
      - With O(state=absent), wait until none of its tasks runs.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true).
    type: int
    default: 300
requirements:
  - A meso-agentless controller (C(meso controller)) with C(POST /v1/plan/job).
seealso:
  - module: meso.agentless.meso_job_info
  - module: meso.agentless.meso_hosts_info
"""

EXAMPLES = r"""
- name: The web service runs as its file says
  meso.agentless.meso_job:
    controller: https://ctl.example:4646
    token: "{{ lookup('ansible.builtin.file', '/etc/meso/token') }}"
    src: jobs/web.yaml
    wait: true

- name: A small batch job, inline
  meso.agentless.meso_job:
    controller: http://127.0.0.1:4646
    token_file: /var/lib/meso-controller/token
    definition:
      job: hello
      tasks:
        - name: say
          command: [echo, hello]
          resources: {cpus: 0.1, mem: 32MiB}
    wait: true

- name: Apply any change to the file, even one that needs the job killed first
  meso.agentless.meso_job:
    src: jobs/web.yaml
    replace: true

- name: The web service is stopped
  meso.agentless.meso_job:
    name: web
    state: absent
"""

RETURN = r"""
job:
  description: The job as the controller holds it afterwards (GET /v1/jobs/NAME); in check mode,
    as it held it before (absent for a new job).
  returned: when the controller holds the job
  type: dict
action:
  description:
    - What the file asks of the controller; V(create) a new job, V(rerun) a new run of an ended
      one, V(none) nothing, V(scale) tasks' counts, V(update) a service's new version rolled
      out by a deployment, V(replace) kill and submit again, V(kill) stop it.
  returned: always
  type: str
  sample: scale
reason:
  description: The controller's one line about the action.
  returned: always
  type: str
  sample: "job 'web' is active: scale server 3 -> 4"
changes:
  description: The fields that differ between the job the controller holds and the file.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "tasks[0].count", "kind": "changed", "before": 3, "after": 4}]
plan:
  description:
    - Where what would start goes, as the controller plans it now (C(placements), C(unplaced)
      with reasons, C(unreachable) hosts); a scaling's added instances only; a deployment's
      first new instances beside the old ones, and C(update) what it will do (C(replace)
      instances, C(max_parallel) at a time, C(canary), whether it C(fits), a C(summary)).
  returned: with O(state=present)
  type: dict
stopped:
  description: The units that O(state=absent) stopped.
  returned: when a job was killed, not in check mode
  type: list
  elements: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.meso.agentless.plugins.module_utils.meso_api import (
    CONTROLLER_ARGS,
    MesoApiError,
    MesoClient,
)


def field_diff(changes):
    """The changes as one line each: `~ path: before -> after`, `+ path: after`, `- path`."""
    lines = []
    for change in changes:
        if change["kind"] == "added":
            lines.append("+ {}: {}".format(change["path"], json.dumps(change["after"])))
        elif change["kind"] == "removed":
            lines.append("- {}: {}".format(change["path"], json.dumps(change["before"])))
        else:
            lines.append(
                "~ {}: {} -> {}".format(
                    change["path"], json.dumps(change["before"]), json.dumps(change["after"])
                )
            )
    return "\n".join(lines) + "\n" if lines else ""


def spec_text(spec):
    return "" if spec is None else json.dumps(spec, indent=2) + "\n"


def diff_of(name, before, after, changes, source):
    """Ansible's diff: the field list, then the specs, as the controller holds and would hold."""
    whole = {
        "before": spec_text(before),
        "after": spec_text(after),
        "before_header": f"job {name} (controller)" if before is not None else "(no job)",
        "after_header": f"job {name} ({source})" if after is not None else "(absent)",
    }
    summary = field_diff(changes)
    return [{"prepared": summary}, whole] if summary else [whole]


def read_definition(module):
    """The job as sent to the controller: a mapping (JSON), or a file's text (YAML)."""
    definition = module.params["definition"]
    if module.params["src"]:
        try:
            with open(module.params["src"], "rb") as handle:
                return handle.read().decode("utf-8"), f"file {module.params['src']}"
        except (OSError, UnicodeDecodeError) as exc:
            module.fail_json(msg="src: cannot read {}: {}".format(module.params["src"], exc))
    if isinstance(definition, (dict, str)):
        return definition, "the task's definition"
    module.fail_json(
        msg=f"definition: a mapping or the text of a job file, not {type(definition).__name__}"
    )


def present(module, client):
    definition, source = read_definition(module)
    plan = client.plan_job(definition)
    name = plan["job"]
    if module.params["name"] and module.params["name"] != name:
        module.fail_json(
            msg="name: {!r} is not the file's job {!r}".format(module.params["name"], name)
        )
    action, changes = plan["action"], plan["changes"]
    result = dict(
        changed=action != "none",
        action=action,
        reason=plan["reason"],
        changes=changes,
        plan=dict(
            placements=plan["placements"],
            unplaced=plan["unplaced"],
            unreachable=plan["unreachable"],
            shares=plan["shares"],
            update=plan.get("update"),
        ),
    )
    if module._diff:
        running = plan["running_spec"] if plan["current"] else None
        if action == "none":
            running = plan["spec"]
        result["diff"] = diff_of(name, running, plan["spec"], changes, source)
    if plan["never_placeable"]:
        first = plan["never_placeable"][0]
        module.fail_json(
            msg="job {} cannot be placed: {}/{}: {}".format(
                name, first["task"], first["index"], first["reason"]
            ),
            **result,
        )
    if action == "replace" and not module.params["replace"]:
        fields = ", ".join(c["path"] for c in changes) or "the controller's inventory"
        module.fail_json(
            msg=f"job {name} is active with another spec ({fields}): set replace: true to kill "
            "it and submit the file again",
            **result,
        )
    current = client.job(name)
    if module.check_mode:
        if current is not None:
            result["job"] = current
        module.exit_json(**result)
    version = current["version"] if current else 0
    if action in ("create", "rerun", "update"):  # update: a rolling deployment of a service
        created, view = client.submit(definition)
        result["changed"], version = created, view["version"]
    elif action == "scale":
        for step in plan["scale"]:
            view = client.scale(name, step["task"], step["after"])
            version = view["version"]
    elif action == "replace":
        client.kill(name)
        created, view = client.submit(definition)
        version = view["version"]
    if module.params["wait"]:
        view = client.wait_outcome(name, version, module.params["wait_timeout"])
        outcome = view["outcome"]
        if outcome["code"] != 0:
            result["job"] = view
            module.fail_json(msg="job {}: {}".format(name, outcome["message"]), **result)
    result["job"] = client.job(name)
    module.exit_json(**result)


def absent(module, client):
    name = module.params["name"]
    if not name:
        definition = read_definition(module)[0]
        name = client.plan_job(definition)["job"]
    current = client.job(name)
    active = current is not None and current["state"] == "active"
    result = dict(
        changed=active,
        action="kill" if active else "none",
        changes=[],
        reason="job {!r} is {}".format(name, current["state"] if current else "unknown"),
    )
    if current is not None:
        result["job"] = current
    if module._diff and active:
        result["diff"] = diff_of(name, current["spec"], None, [], "absent")
    if not active or module.check_mode:
        module.exit_json(**result)
    killed = client.kill(name)
    result["stopped"] = killed.get("stopped", [])
    if module.params["wait"]:
        client.wait_stopped(name, module.params["wait_timeout"])
    result["job"] = client.job(name)
    module.exit_json(**result)


def main():
    argument_spec = dict(
        CONTROLLER_ARGS,
        name=dict(type="str"),
        src=dict(type="path"),
        definition=dict(type="raw"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        replace=dict(type="bool", default=False),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=300),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("src", "definition")],
        required_one_of=[("name", "src", "definition")],
        required_if=[("state", "present", ("src", "definition"), True)],
        supports_check_mode=True,
    )
    try:
        client = MesoClient.from_params(module.params)
        if module.params["state"] == "present":
            present(module, client)
        else:
            absent(module, client)
    except MesoApiError as exc:
        body = {k: v for k, v in exc.body.items() if k not in ("msg", "status", "failed")}
        module.fail_json(msg=str(exc), status=exc.status, **body)


if __name__ == "__main__":
    main()
