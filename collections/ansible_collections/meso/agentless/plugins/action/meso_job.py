# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""meso_job's `src` is a file on the machine running Ansible (looked up like the template
module's: the role's or playbook's files/, then beside the playbook): it is read here and sent
to the module as `definition`, so the module may run anywhere."""

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        src = args.pop("src", None)
        if src is not None:
            if args.get("definition") is not None:
                result.update(failed=True, msg="parameters are mutually exclusive: src|definition")
                return result
            try:
                path = self._find_needle("files", src)
                with open(path, "rb") as handle:
                    args["definition"] = to_text(handle.read(), errors="surrogate_or_strict")
            except (AnsibleError, OSError, UnicodeError) as exc:
                result.update(failed=True, msg=f"src: {to_text(exc)}")
                return result
        result.update(
            self._execute_module(
                module_name="meso.agentless.meso_job", module_args=args, task_vars=task_vars
            )
        )
        if src is not None:  # the diff names the file, not the text it was sent as
            for diff in result.get("diff") or []:
                if isinstance(diff, dict) and "after_header" in diff:
                    header = diff["after_header"].replace("the task's definition", f"file {src}")
                    diff["after_header"] = header
        return result
