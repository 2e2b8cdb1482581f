"""The lab's Ansible inventory (pure): what `ansible` and the controller read to reach the hosts."""

from __future__ import annotations

from pathlib import Path

import yaml

from meso_agentless.lab.layout import LabLayout

GROUP = "meso_nodes"


def render_inventory(lab: LabLayout, key_file: Path, known_hosts: Path) -> str:
    """A YAML inventory: every host in group meso_nodes, strict host key checking on."""
    ssh_args = (
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    )
    hosts = {
        h.name: {
            "ansible_host": h.address,
            "meso_resources": {"cpus": lab.cpus, "mem": f"{lab.mem_mib}MiB"},
            "meso_attributes": {"lab": lab.name, "lab_index": str(h.index)},
        }
        for h in lab.hosts
    }
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key_file),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                "meso_known_hosts_file": str(known_hosts),
                "meso_lab": lab.name,
            },
            "children": {GROUP: {"hosts": hosts}},
        }
    }
    header = f"# written by `meso lab up` for lab {lab.name!r} ({lab.mode}); do not edit\n"
    return header + yaml.safe_dump(inventory, sort_keys=False)
