"""The collection's modules and inventory plugin, run as Ansible runs them (main() with the
task's arguments; ansible-inventory for the plugin) against the real API app served over HTTP on
loopback, on a controller over a fake fleet. The lab test (tests/lab/test_collection.py) runs
them from a playbook against a real controller."""

import contextlib
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from ansible.module_utils.testing import patch_module_args

from meso_agentless.api.app import create_app
from meso_agentless.api.context import ApiContext
from meso_agentless.api.metrics import Metrics
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service
from meso_agentless.core.model import Framework
from meso_agentless.testing.fakes import FakeCluster

ROOT = Path(__file__).parents[2]
COLLECTIONS = ROOT / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.meso.agentless.plugins.modules import (  # noqa: E402
    meso_hosts_info,
    meso_job,
    meso_job_info,
)

TOKEN = "m" * 32
SERVER = {"name": "server", "count": 2, "command": ["sleep", "infinity"],
          "resources": {"cpus": 0.5, "mem": "64MiB"}}  # fmt: skip
JOB = {"job": "web", "type": "service", "framework": "web", "tasks": [SERVER]}
YAML = """\
job: web
type: service
framework: web
tasks:
  - name: server
    count: 2
    command: [sleep, infinity]
    resources: {cpus: 500m, mem: 64MiB}
"""


def job(**task) -> dict:
    return {**JOB, "tasks": [{**SERVER, **task}]}


class Controller:
    def __init__(self, url: str, cluster: FakeCluster) -> None:
        self.url, self.cluster = url, cluster

    def args(self, **more) -> dict:
        return {"controller": self.url, "token": TOKEN, **more}

    def stored(self, name: str):
        return self.cluster.controller.store.job(name)

    def running(self) -> set[str]:
        hosts = self.cluster.plane.by_name.values()
        return {u for h in hosts for u, unit in h.units.items() if unit.state == "running"}


@pytest.fixture
def controller(tmp_path):
    """The API app on a fake two-host cluster, served by uvicorn on a loopback port."""
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")},
                             (Framework("web", 1.0),))  # fmt: skip
    cluster.fleet.refresh()
    runner = Runner(cluster.controller, interval=0.05)
    runner.start()
    service = Service(cluster.controller)
    app = create_app(ApiContext(service, runner, cluster.events, TOKEN), Metrics(service))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield Controller(f"http://127.0.0.1:{sock.getsockname()[1]}", cluster)
    finally:
        server.should_exit = True
        thread.join(10)
        runner.stop()
        sock.close()


def run(module, args: dict, check: bool = False, diff: bool = False) -> dict:
    """The module's result, as Ansible reads it from its output; `failed` set if it failed."""
    out = io.StringIO()
    args = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


def test_a_new_job_is_submitted_then_the_same_again_changes_nothing(controller, tmp_path):
    (tmp_path / "web.yaml").write_text(YAML)
    first = run(meso_job, controller.args(src=str(tmp_path / "web.yaml")))
    assert (first["changed"], first["action"]) == (True, "create"), first
    assert first["job"]["state"] == "active" and len(first["job"]["tasks"]) == 2
    units = controller.running()
    assert len(units) == 2
    again = run(meso_job, controller.args(definition=JOB))  # the same job, as a mapping
    assert (again["changed"], again["action"], again["changes"]) == (False, "none", [])
    assert controller.running() == units


def test_check_mode_with_diff_plans_a_scaling_and_changes_nothing(controller):
    run(meso_job, controller.args(definition=JOB))
    units, version = controller.running(), controller.stored("web").version
    result = run(meso_job, controller.args(definition=job(count=3)), check=True, diff=True)
    assert (result["changed"], result["action"]) == (True, "scale")
    assert result["diff"][0]["prepared"] == "~ tasks[0].count: 2 -> 3\n"
    assert '"count": 2' in result["diff"][1]["before"]
    assert '"count": 3' in result["diff"][1]["after"]
    assert [(p["task"], p["index"]) for p in result["plan"]["placements"]] == [("server", 2)]
    assert controller.running() == units
    assert controller.stored("web").version == version
    applied = run(meso_job, controller.args(definition=job(count=3), wait=True, wait_timeout=30))
    assert applied["changed"] and len(controller.running()) == 3
    assert applied["job"]["outcome"]["version"] == applied["job"]["version"]
    assert applied["job"]["spec"]["tasks"][0]["count"] == 3


def test_another_change_to_a_service_is_a_deployment(controller):
    run(meso_job, controller.args(definition=JOB))
    changed = job(resources={"cpus": 0.75, "mem": "64MiB"})
    checked = run(meso_job, controller.args(definition=changed), check=True)
    assert (checked["changed"], checked["action"]) == (True, "update")
    applied = run(meso_job, controller.args(definition=changed))
    assert (applied["changed"], applied["action"]) == (True, "update")
    assert applied["job"]["spec"]["tasks"][0]["resources"]["cpus"] == 0.75


def test_another_change_needs_replace_and_then_it_is_killed_and_submitted_again(controller):
    batch = {**job(command=["sleep", "600"]), "type": "batch"}
    run(meso_job, controller.args(definition=batch))
    units = controller.running()
    changed = {
        **batch,
        "tasks": [{**batch["tasks"][0], "resources": {"cpus": 0.75, "mem": "64MiB"}}],
    }
    refused = run(meso_job, controller.args(definition=changed))
    assert refused["failed"] and "tasks[0].resources.cpus" in refused["msg"]
    assert "set replace: true" in refused["msg"]
    assert controller.running() == units
    replaced = run(meso_job, controller.args(definition=changed, replace=True))
    assert (replaced["changed"], replaced["action"]) == (True, "replace")
    assert replaced["job"]["run"] == 2
    assert controller.running().isdisjoint(units) and len(controller.running()) == 2


def test_the_controllers_refusal_fails_the_task_naming_the_field(controller):
    result = run(meso_job, controller.args(definition=job(resources={"cpus": "lots"})))
    assert result["failed"] and result["status"] == 422
    assert result["msg"].startswith("tasks[0].resources.cpus:")
    assert controller.stored("web") is None
    huge = run(meso_job, controller.args(definition=job(resources={"cpus": 64, "mem": "1GiB"})))
    assert huge["failed"] and "cannot be placed" in huge["msg"]
    assert controller.stored("web") is None


def test_absent_kills_once_and_check_mode_kills_nothing(controller):
    run(meso_job, controller.args(definition=JOB))
    checked = run(meso_job, controller.args(name="web", state="absent"), check=True, diff=True)
    assert (checked["changed"], checked["action"]) == (True, "kill")
    assert checked["diff"][0]["after"] == "" and '"job": "web"' in checked["diff"][0]["before"]
    assert len(controller.running()) == 2
    killed = run(meso_job, controller.args(name="web", state="absent", wait=True))
    assert killed["changed"] and len(killed["stopped"]) == 2
    assert killed["job"]["state"] == "killed" and controller.running() == set()
    again = run(meso_job, controller.args(name="web", state="absent"))
    assert (again["changed"], again["action"]) == (False, "none")
    never = run(meso_job, controller.args(name="nosuch", state="absent"))
    assert never["changed"] is False and "job" not in never


def test_wait_returns_once_the_service_is_up(controller):
    result = run(meso_job, controller.args(definition=JOB, wait=True, wait_timeout=30))
    assert result["changed"] and result["job"]["outcome"]["code"] == 0


def test_a_name_that_is_not_the_files_job_is_refused(controller):
    result = run(meso_job, controller.args(definition=JOB, name="other"))
    assert result["failed"] and result["msg"] == "name: 'other' is not the file's job 'web'"
    assert controller.stored("web") is None


@pytest.mark.parametrize(("args", "says"), [
    ({"token": "x" * 32}, "bearer token"),
    ({"token": None}, "token: no API token"),
    ({"token_file": "/nonexistent/token", "token": None}, "token_file: cannot read"),
    ({"controller": "ftp://x"}, "controller: 'ftp://x' is not an http:// or https:// URL"),
    ({"controller": "http://127.0.0.1:9"}, "controller: cannot reach http://127.0.0.1:9"),
])  # fmt: skip
def test_connection_and_token_problems_name_the_option(controller, monkeypatch, args, says):
    for name in ("MESO_TOKEN", "MESO_TOKEN_FILE", "MESO_ADDR"):
        monkeypatch.delenv(name, raising=False)
    given = {k: v for k, v in controller.args(**args).items() if v is not None}
    result = run(meso_job_info, given)
    assert result["failed"] and says in result["msg"], result


def test_the_controller_and_token_come_from_the_environment(controller, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv("MESO_ADDR", controller.url)
    monkeypatch.setenv("MESO_TOKEN_FILE", str(token))
    monkeypatch.delenv("MESO_TOKEN", raising=False)
    result = run(meso_job_info, {})
    assert (result.get("failed"), result["jobs"]) == (None, [])


def test_info_modules_return_the_apis_json_in_check_mode_too(controller):
    run(meso_job, controller.args(definition=JOB))
    jobs = run(meso_job_info, controller.args(), check=True)
    assert jobs["changed"] is False and [j["job"] for j in jobs["jobs"]] == ["web"]
    assert run(meso_job_info, controller.args(name="nosuch"))["jobs"] == []
    hosts = run(meso_hosts_info, controller.args(), check=True)
    assert [h["host"] for h in hosts["hosts"]] == ["h1", "h2"]
    assert sum(h["allocated"].get("cpus", 0) for h in hosts["hosts"]) == 1.0
    assert hosts["cluster"]["hosts"] == {"up": 2}
    one = run(meso_hosts_info, controller.args(name="h2"))
    assert [h["host"] for h in one["hosts"]] == ["h2"]
    missing = run(meso_hosts_info, controller.args(name="h9"))
    assert missing["failed"] and missing["status"] == 404 and "h9" in missing["msg"]


def plain(value):
    """ansible-inventory's JSON without its marks of untrusted text ({"__ansible_unsafe": x})."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, list) else value


def test_the_inventory_plugin_lists_hosts_with_their_state_and_groups(controller, tmp_path):
    nodes = controller.cluster.controller.nodes
    nodes["h2"] = dataclasses.replace(nodes["h2"], attributes={"rack": "b"})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = tmp_path / "cluster.meso.yml"
    config.write_text(f"plugin: meso.agentless.meso\ncontroller: {controller.url}\n"
                      f"token_file: {token}\n")  # fmt: skip
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
           "ANSIBLE_INVENTORY_ENABLED": "meso.agentless.meso"}  # fmt: skip
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i",
                           str(config), "--list"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = plain(json.loads(done.stdout))
    assert sorted(listed["meso_hosts"]["hosts"]) == ["h1", "h2"]
    assert sorted(listed["meso_state_up"]["hosts"]) == ["h1", "h2"]
    h1 = listed["_meta"]["hostvars"]["h1"]
    assert h1["meso_host_state"] == "up" and h1["meso_host_free"]["cpus"] == 2
    assert listed["meso_attr_rack_b"]["hosts"] == ["h2"]
    assert listed["_meta"]["hostvars"]["h2"]["meso_host_attributes"] == {"rack": "b"}
