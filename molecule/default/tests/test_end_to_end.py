"""End to end, once, from the controller: meso run as the unprivileged meso user."""

import json
import os
import subprocess
from pathlib import Path

import testinfra.utils.ansible_runner

# the scenario's own inventory (the lab's hosts and the controller), not molecule's copy
INVENTORY = Path(__file__).resolve().parents[1] / "inventory"
testinfra_hosts = [
    f"ansible://{name}?ansible_inventory={INVENTORY}"
    for name in testinfra.utils.ansible_runner.AnsibleRunner(str(INVENTORY)).get_hosts("localhost")
]
assert testinfra_hosts, f"no hosts in {INVENTORY}: is the lab up?"  # never skip silently

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
CONTROLLER = Path("/var/lib/meso-lab/mol/controller")


def test_meso_run_as_the_meso_user_with_the_playbooks_known_hosts(host, tmp_path):
    inventory = CONTROLLER / "inventory.yml"
    assert "ansible_user: meso" in inventory.read_text()
    env = {**os.environ, "MESO_STATE": str(tmp_path / "state.db")}
    meso = str(CONTROLLER / "venv" / "bin" / "meso")  # as the meso_controller role installed it
    run = subprocess.run([meso, "run", str(PROJECT / "examples/wordcount.yaml"), "-i",
                          str(inventory), "-o", "json"], capture_output=True, text=True,
                         env=env, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {t["state"] for t in result["tasks"]} == {"finished"}
    logs = subprocess.run([meso, "logs", "wordcount", "mapper/0"], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip
    assert logs.stdout == "[('a', 2), ('b', 1)]\n"
