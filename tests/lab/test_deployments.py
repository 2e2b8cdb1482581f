"""Changing a running service end to end on the lab, through a real controller: a rolling update
watched by a client hitting the service's ports every 200 ms, a canary waiting for its promote,
a failing version reverted by itself, the controller SIGKILLed mid-deployment, and `meso plan`
showing the diff while launching nothing."""

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from meso_agentless.testing.controller import running_controller, start_controller
from tests.lab.common import MESO, cli, units, wait_for

pytestmark = pytest.mark.lab

SERVER = r"""
import http.server, os, sys
version = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        broken = version.startswith("broken") and self.path == "/health"
        self.send_response(500 if broken else 200)
        self.end_headers()
        self.wfile.write(version.encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["MESO_PORT0"])), H).serve_forever()
"""


def job_file(tmp_path, version, update="{max_parallel: 1, min_healthy_time: 3s}"):
    path = tmp_path / f"web-{version}.yaml"
    path.write_text(
        "job: web\ntype: service\n"
        f"update: {update}\n"
        "tasks:\n  - name: server\n    count: 3\n"
        f"    command: {json.dumps(['python3', '-c', SERVER, version])}\n"
        "    resources: {cpus: 0.1, mem: 48MiB, ports: 1}\n"
        "    health: {http: /health, interval: 2s, timeout: 1s, grace: 0s, failures: 2}\n"
    )
    return path


@pytest.fixture
def controller(meso_lab, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        ctl.cli_env = {**env, **ctl.env}
        ctl.http = httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30)
        yield ctl
        cli(ctl.cli_env, "kill", "web")
        ctl.http.close()


def web_units(lab):
    return {u: h for u, h in units(lab).items() if u.startswith("meso-web_")}


def running(ctl):
    return [t for t in ctl.http.get("/v1/jobs/web").json()["tasks"] if t["state"] == "running"]


class Sampler:
    """Every 200 ms: how many instances answer on their ports (every address:port the job has
    had, from the API), what they answer."""

    def __init__(self, ctl, lab):
        self.ctl, self.lab = ctl, lab
        self.known: set[tuple[str, int]] = set()
        self.samples: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        with httpx.Client(timeout=0.5) as probe:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    for t in running(self.ctl):
                        self.known.add((self.lab.layout.host(t["host"]).address, t["ports"][0]))
                except httpx.HTTPError:
                    pass
                answers = []
                for address, port in sorted(self.known):
                    try:
                        answers.append(probe.get(f"http://{address}:{port}/").text)
                    except httpx.HTTPError:
                        continue
                self.samples.append(answers)
                time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))


def test_a_rolling_update_keeps_two_healthy_then_a_canary_waits_for_its_promote(
    meso_lab, controller, tmp_path
):
    env = controller.cli_env
    done = cli(env, "run", str(job_file(tmp_path, "v1")))
    assert done.returncode == 0, done.stderr
    before = web_units(meso_lab)
    assert len(before) == 3
    # the plan shows the diff and what the update does, and launches nothing
    planned = cli(env, "plan", str(job_file(tmp_path, "v2")))
    assert planned.returncode == 0, planned.stderr
    assert '~ tasks[server].command[3]: "v1" -> "v2"' in planned.stdout
    assert "version 1 -> 2: replace 3 instance(s), 1 at a time" in planned.stdout
    assert "fits beside the old" in planned.stdout
    assert web_units(meso_lab) == before
    with Sampler(controller, meso_lab) as sampler:
        done = cli(env, "run", str(job_file(tmp_path, "v2")))
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    assert "deployment of version 2 successful" in done.stdout
    answering = [len(s) for s in sampler.samples]
    print(f"{len(answering)} samples; fewest answering {min(answering)}, most {max(answering)}")
    assert len(answering) > 20 and min(answering) >= 2 and max(answering) <= 4
    assert sorted(sampler.samples[-1]) == ["v2", "v2", "v2"]
    now = running(controller)
    assert sorted(t["job_version"] for t in now) == [2, 2, 2]
    assert len(web_units(meso_lab)) == 3 and not set(web_units(meso_lab)) & set(before)
    history = cli(env, "history", "web")
    assert "version 2 (current)" in history.stdout and '"v1" -> "v2"' in history.stdout
    # a canary: one new instance beside the three, then nothing until the promote
    follower = subprocess.Popen([*MESO, "run", str(job_file(tmp_path, "v3", "{canary: 1}"))],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    try:
        wait_for(lambda: controller.http.get("/v1/jobs/web/deployment").json()["state"]
                 == "waiting", timeout=90)  # fmt: skip
        time.sleep(3)
        assert sorted(t["job_version"] for t in running(controller)) == [2, 2, 2, 3]
        assert follower.poll() is None  # `meso run` still follows
        status = cli(env, "deployment", "status", "web")
        assert "waiting" in status.stdout and "waiting for a promote" in status.stdout
        promoted = cli(env, "deployment", "promote", "web")
        assert promoted.returncode == 0, promoted.stderr
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        assert "deployment of version 3 successful" in out
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert sorted(t["job_version"] for t in running(controller)) == [3, 3, 3]


def test_a_failing_version_reverts_by_itself_and_run_exits_1_naming_the_check(
    meso_lab, controller, tmp_path
):
    env = controller.cli_env
    assert cli(env, "run", str(job_file(tmp_path, "v1"))).returncode == 0
    before = web_units(meso_lab)
    broken = job_file(tmp_path, "broken", "{max_parallel: 1, auto_revert: true}")
    done = cli(env, "run", str(broken))
    assert done.returncode == 1, done.stderr
    assert "deployment of version 2 failed: server[0] failed its health check " in done.stdout
    assert "(http /health on port 0): unhealthy: 2 checks failed in a row (HTTP 500)" in (
        done.stdout
    )
    assert "reverted to version 1 (as version 3)" in done.stdout
    wait_for(lambda: controller.http.get("/v1/jobs/web/deployment").json()["state"]
             == "successful", timeout=60)  # fmt: skip
    assert web_units(meso_lab) == before  # the old instances never stopped
    job = controller.http.get("/v1/jobs/web").json()
    assert job["spec_version"] == 3 and job["spec"]["tasks"][0]["command"][-1] == "v1"


def test_the_controller_killed_mid_deployment_resumes_it_losing_and_doubling_nothing(
    meso_lab, tmp_path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    ctl = start_controller(meso_lab.inventory, tmp_path / "ctl")
    cli_env = {**env, **ctl.env}
    try:
        assert cli(cli_env, "run", str(job_file(tmp_path, "v1"))).returncode == 0
        slow = job_file(tmp_path, "v2", "{max_parallel: 1, min_healthy_time: 6s}")
        assert cli(cli_env, "run", str(slow), "--detach").returncode == 0
        http = httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30)
        wait_for(lambda: any(t["job_version"] == 2 for t in running_of(http)), timeout=60)
        http.close()
        ctl.process.send_signal(signal.SIGKILL)
        ctl.process.wait(10)
        mid = web_units(meso_lab)
        assert 3 <= len(mid) <= 4  # one replacement under way beside the three
        ctl = start_controller(meso_lab.inventory, tmp_path / "ctl")
        cli_env = {**env, **ctl.env}
        http = httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30)
        seen_at_once = []

        def finished():
            seen_at_once.append(len(web_units(meso_lab)))
            return http.get("/v1/jobs/web/deployment").json()["state"] == "successful"

        wait_for(finished, timeout=120, every=1.0)
        assert max(seen_at_once) <= 4
        now = running_of(http)
        assert sorted(t["job_version"] for t in now) == [2, 2, 2]
        assert sorted(t["index"] for t in now) == [0, 1, 2]
        assert {t["unit"]: t["host"] for t in now} == web_units(meso_lab)
        tasks = http.get("/v1/jobs/web").json()["tasks"]
        attempts = [(t["index"], t["attempt"]) for t in tasks]
        assert len(attempts) == len(set(attempts)) == 6  # each instance replaced exactly once
        http.close()
    finally:
        cli(cli_env, "kill", "web")
        ctl.stop()


def running_of(http):
    return [t for t in http.get("/v1/jobs/web").json()["tasks"] if t["state"] == "running"]
