"""The collection meso.agentless end to end, on the lab with a real `meso controller`: built
with ansible-galaxy, installed offline from its tarball into a directory of its own, then used
the way a site uses it: a playbook deploys examples/web.yaml (under another job name) with
meso_job and waits for it, runs again with changed=0, `--check --diff` after an edit shows the
field-level diff and launches nothing, `state: absent` stops it on the hosts; the inventory
plugin lists the lab hosts; ansible-doc renders every module and the plugin."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.testing.controller import running_controller

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
COLLECTION = ROOT / "collections/ansible_collections/meso/agentless"
JOB = "webplay"  # examples/web.yaml under a name no other test's units have
PLAYBOOK = """\
- name: The web service as its file says
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The web service runs at this version of its file
      meso.agentless.meso_job:
        src: web.yaml
        state: "{{ web_state | default('present') }}"
        replace: true
        wait: true
        wait_timeout: 120
      register: web

    - name: What the cluster holds
      meso.agentless.meso_hosts_info:
      register: cluster

    - name: Keep what the tasks said, for the test (in check mode too)
      ansible.builtin.copy:
        content: "{{ {'web': web, 'cluster': cluster} | to_nice_json }}"
        dest: "{{ playbook_dir }}/result.json"
        mode: "0644"
      check_mode: false
      changed_when: false  # a record for the test, not a change the play makes
"""


def run(argv: list, env: dict, timeout: int = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def recap(output: str) -> dict[str, int]:
    line = re.search(r"^localhost\s+:(.*)$", output, re.M)
    assert line, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def meso_units(lab) -> dict[str, set[str]]:
    """The job's units that are active on each lab host, as systemd there says."""
    found = {}
    for host in lab.hosts:
        listed = lab.run(host.name, ["systemctl", "list-units", f"meso-{JOB}_*", "--plain",
                                     "--no-legend", "--state=active"])  # fmt: skip
        found[host.name] = {line.split()[0] for line in listed.stdout.splitlines() if line}
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The collection built from this checkout and installed offline into a directory."""
    work = tmp_path_factory.mktemp("collection")
    (work / "ansible.cfg").write_text("[defaults]\n")  # not this checkout's collections path
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env = {**env, "PATH": f"{BIN}:{env['PATH']}", "ANSIBLE_CONFIG": str(work / "ansible.cfg")}
    run([BIN / "ansible-galaxy", "collection", "build", COLLECTION, "--output-path", work], env)
    (tarball,) = work.glob("meso-agentless-*.tar.gz")
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", work / "installed",
         tarball], env)  # fmt: skip
    path = work / "installed/ansible_collections/meso/agentless"
    assert (path / "plugins/modules/meso_job.py").is_file()
    assert (path / "roles/meso_node/templates/node-policy.json.j2").is_file()
    return work / "installed"


def ansible_env(installed: Path, ctl, tmp: Path) -> dict:
    config = tmp / "ansible.cfg"  # only the installed copy, never this checkout's collection
    config.write_text(f"[defaults]\ncollections_path = {installed}\nnocolor = True\n"
                      "interpreter_python = auto_silent\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESO_", "ANSIBLE_"))}
    return {**env, "PATH": f"{BIN}:{env['PATH']}", "ANSIBLE_CONFIG": str(config),
            "MESO_ADDR": ctl.url, "MESO_TOKEN_FILE": str(ctl.token_file)}  # fmt: skip


def test_a_playbook_deploys_checks_and_stops_a_job_and_the_plugin_lists_the_hosts(
    meso_lab, installed, tmp_path
):
    play = tmp_path / "play"
    (play / "files").mkdir(parents=True)
    web = (ROOT / "examples/web.yaml").read_text().replace("job: web\n", f"job: {JOB}\n")
    (play / "files/web.yaml").write_text(web)
    (play / "deploy.yml").write_text(PLAYBOOK)
    (play / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
    )
    playbook = [BIN / "ansible-playbook", "-i", play / "hosts.yml", play / "deploy.yml"]
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        env = ansible_env(installed, ctl, tmp_path)
        try:
            first = run(playbook, env)
            assert recap(first)["changed"] == 1
            result = json.loads((play / "result.json").read_text())
            assert result["web"]["action"] == "create"
            assert result["web"]["job"]["outcome"]["code"] == 0  # up and healthy: it waited
            units = meso_units(meso_lab)
            assert sum(len(u) for u in units.values()) == 3
            assert {h["host"] for h in result["cluster"]["hosts"]} == {
                h.name for h in meso_lab.hosts
            }

            again = run(playbook, env)
            assert recap(again)["changed"] == 0
            assert json.loads((play / "result.json").read_text())["web"]["action"] == "none"

            edited = web.replace("count: 3", "count: 2").replace("mem: 64MiB", "mem: 96MiB")
            (play / "files/web.yaml").write_text(edited)
            checked = run([*playbook, "--check", "--diff"], env)
            assert recap(checked)["changed"] == 1
            assert "~ tasks[0].count: 3 -> 2" in checked
            assert "~ tasks[0].resources.mem: 67108864 -> 100663296" in checked
            assert '-        "mem": 67108864,' in checked  # the specs' unified diff too
            assert "+++ after: job webplay (file web.yaml)" in checked
            planned = json.loads((play / "result.json").read_text())["web"]
            # a service's new file is rolled out by a deployment (one at a time by default)
            assert planned["action"] == "update", planned
            update = planned["plan"]["update"]
            assert (update["replace"], update["max_parallel"], update["fits"]) == (2, 1, True)
            assert len(planned["plan"]["placements"]) == 1  # the headroom: one beside the old
            assert meso_units(meso_lab) == units  # nothing launched, nothing stopped
            assert planned["job"]["version"] == result["web"]["job"]["version"]

            (play / "files/web.yaml").write_text(web)
            stopped = run([*playbook, "-e", "web_state=absent"], env)
            assert recap(stopped)["changed"] == 1
            assert meso_units(meso_lab) == {h.name: set() for h in meso_lab.hosts}
            killed = json.loads((play / "result.json").read_text())["web"]
            assert killed["job"]["state"] == "killed"
            assert {t["state"] for t in killed["job"]["tasks"]} == {"killed"}
        finally:
            subprocess.run([sys.executable, "-m", "meso_agentless", "kill", JOB], env=env,
                           capture_output=True, timeout=60, check=False)  # fmt: skip

        (tmp_path / "lab.meso.yml").write_text("plugin: meso.agentless.meso\n")
        listed = json.loads(run([BIN / "ansible-inventory", "-i", tmp_path / "lab.meso.yml",
                                 "--list"], env))  # fmt: skip
        names = {h.name for h in meso_lab.hosts}
        assert set(listed["meso_hosts"]["hosts"]) == names
        assert set(listed["meso_state_up"]["hosts"]) == names
        assert set(listed[f"meso_attr_lab_{meso_lab.name}"]["hosts"]) == names
        graph = run([BIN / "ansible-inventory", "-i", tmp_path / "lab.meso.yml", "--graph",
                     "meso_state_up"], env)  # fmt: skip
        assert all(f"--{name}" in graph for name in names)

    for plugin in ("meso_job", "meso_job_info", "meso_hosts_info"):
        doc = run([BIN / "ansible-doc", f"meso.agentless.{plugin}"], env)
        assert f"MODULE meso.agentless.{plugin}" in doc and "controller" in doc
        assert str(installed) in doc  # the installed copy
    doc = run([BIN / "ansible-doc", "-t", "inventory", "meso.agentless.meso"], env)
    assert "INVENTORY meso.agentless.meso" in doc and "group_prefix" in doc
