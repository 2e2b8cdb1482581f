"""Health checks run by the node command on the task's own host, and draining a host, end to
end through a real controller on the lab."""

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from meso_agentless.testing.controller import running_controller
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]


@pytest.fixture
def controller(meso_lab, tmp_path):
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
        ctl.cli_env = {**env, **ctl.env}
        ctl.http = httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=60)
        yield ctl
        cli(ctl.cli_env, "kill", "web")
        cli(ctl.cli_env, "kill", "checked")
        cli(ctl.cli_env, "kill", "long")
        ctl.http.close()


def tasks(ctl, job):
    return ctl.http.get(f"/v1/jobs/{job}").json()["tasks"]


def test_a_service_waits_for_healthy_and_a_failing_instance_is_restarted(
    meso_lab, controller, tmp_path
):
    started = time.monotonic()
    done = cli(controller.cli_env, "run", str(ROOT / "examples/web.yaml"))
    assert done.returncode == 0, done.stderr
    assert "healthy (HTTP 200)" in done.stderr
    assert all(t["health"] == "healthy" for t in tasks(controller, "web"))
    print(f"web up and healthy in {time.monotonic() - started:.1f} s")
    # a server that starts answering 500 after a while, checked every 2 s, 2 failures allowed
    job = tmp_path / "checked.yaml"
    job.write_text("""\
job: checked
type: service
tasks:
  - name: s
    command:
      - python3
      - -c
      - |
        import http.server, os, time
        started = time.time()
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if time.time() - started < 8 else 500)
                self.end_headers()
        http.server.HTTPServer(("127.0.0.1", int(os.environ["MESO_PORT0"])), H).serve_forever()
    resources: {cpus: 0.1, mem: 64MiB, ports: 1}
    health: {http: /ping, interval: 2s, timeout: 1s, grace: 2s, failures: 2}
""")
    done = cli(controller.cli_env, "run", str(job))
    assert done.returncode == 0, done.stderr
    first = wait_for(lambda: (ts := tasks(controller, "checked")) and len(ts) >= 2 and ts,
                     timeout=60)  # fmt: skip
    assert first[0]["state"] == "failed"
    assert first[0]["reason"] == "unhealthy: 2 checks failed in a row (HTTP 500)"
    assert first[1]["attempt"] == 2
    events = controller.http.get("/metrics").text
    assert "meso_events_total" in events


def test_drain_moves_a_service_one_at_a_time_and_the_batch_at_its_deadline(
    meso_lab, controller, tmp_path
):
    assert cli(controller.cli_env, "run", str(ROOT / "examples/web.yaml")).returncode == 0
    before = {t["host"] for t in tasks(controller, "web") if t["state"] == "running"}
    target = sorted(before)[0]
    job = tmp_path / "long.yaml"
    job.write_text(f"""\
job: long
tasks:
  - name: t
    command: ["sleep", "600"]
    resources: {{cpus: 0.1, mem: 32MiB}}
    constraints: [{{attribute: hostname, op: eq, value: {target}}}]
    restart: {{policy: never, attempts: 0}}
""")
    assert cli(controller.cli_env, "run", str(job), "--detach").returncode == 0
    wait_for(lambda: tasks(controller, "long")[0]["state"] == "running")
    drained = cli(controller.cli_env, "drain", target, "--deadline", "8s")
    assert drained.returncode == 0 and f"{target}: draining" in drained.stdout
    lowest = 3
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        web = [t for t in tasks(controller, "web") if t["state"] == "running"]
        lowest = min(lowest, len(web))
        if web and target not in {t["host"] for t in web} and len(web) == 3:
            break
        time.sleep(0.5)
    assert lowest >= 3 - 1, lowest  # never below count - 1 (here: never below count)
    assert target not in {t["host"] for t in tasks(controller, "web") if t["state"] == "running"}
    long = wait_for(lambda: (ts := tasks(controller, "long"))[0]["state"] == "killed" and ts)
    assert long[0]["reason"] == "drained"
    # its only host is draining: the new attempt waits, pending, with the reason
    job_view = controller.http.get("/v1/jobs/long").json()
    assert job_view["unplaced"] and "constraint" in job_view["unplaced"][0]["reason"]
    host = wait_for(lambda: (h := controller.http.get(f"/v1/hosts/{target}").json())["state"]
                    == "drained" and h)  # fmt: skip
    assert host["tasks"] == 0
    hosts = json.loads(cli(controller.cli_env, "hosts", "-o", "json").stdout)["hosts"]
    assert {h["host"]: h["state"] for h in hosts}[target] == "drained"
    undone = cli(controller.cli_env, "drain", target, "--undo")
    assert undone.returncode == 0
    wait_for(lambda: tasks(controller, "long")[-1]["state"] == "running")
