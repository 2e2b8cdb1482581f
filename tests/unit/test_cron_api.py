"""Cron jobs through the HTTP API and the CLI on a fake fleet: submit, the next fire time and
the runs in GET /v1/jobs/NAME, trigger, run events, refusals (4xx naming the field, exit 2)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meso_agentless.cli.render import console, cron_table
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster

ROOT = Path(__file__).parents[2]
TOKEN = "t" * 32
CRON = """\
job: tick
type: cron
schedule: "*:*:0/10"
timezone: Europe/Berlin
tasks:
  - {name: t, command: ["true"], resources: {cpus: 0.5, mem: 32MiB}}
"""


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")})
    with api_client(cluster, TOKEN) as client:
        yield client


def submit(api):
    done = api.post("/v1/jobs", content=CRON, headers={"Content-Type": "application/yaml"})
    assert done.status_code == 201, done.text
    return done.json()


def test_a_cron_job_shows_its_timer_next_fire_time_and_runs(api):
    view = submit(api)
    assert view["type"] == "cron" and view["tasks"][0]["unit"] == "meso-tick_t_0_1"
    now = api.cluster.clock.time()
    one = api.get("/v1/jobs/tick").json()
    assert now < one["next"] <= now + 10 and one["next"] % 10 == 0
    cron = one["cron"]
    assert cron["calendars"] == ["*:*:0/10 Europe/Berlin"] and cron["concurrency"] == "forbid"
    assert [t["host"] for t in cron["timers"]] == [view["tasks"][0]["host"]]
    assert cron["next_shown"].endswith("UTC)") and "CET" in cron["next_shown"]
    assert one["runs"] == []
    out = console()
    with out.capture() as captured:
        out.print(cron_table(one))
    assert "timer t[0] on" in captured.get()


def test_trigger_runs_it_now_and_the_run_is_an_event(api):
    submit(api)
    with api.stream("GET", "/v1/events?job=tick") as stream:
        done = api.post("/v1/jobs/tick/trigger")
        assert done.status_code == 200, done.text
        [run] = done.json()["runs"]
        assert run["state"] == "running" and run["kind"] == "trigger"
        for line in stream.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["kind"] == "run":
                assert "started" in json.loads(line[6:])["message"]
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = api.get("/v1/jobs/tick").json()["runs"]
        if runs:
            break
        time.sleep(0.05)
    assert [r["unit"] for r in runs] == [run["unit"]]
    missing = api.get("/v1/jobs/tick/logs?run=meso-tick_t_0_1-r5")
    assert missing.status_code == 404 and "no run" in missing.json()["error"]


def test_refusals_name_the_field_and_store_nothing(api):
    bad = CRON.replace('"*:*:0/10"', '"0 25 * * *"')
    done = api.post("/v1/jobs", content=bad, headers={"Content-Type": "application/yaml"})
    assert done.status_code == 422
    assert done.json()["error"] == 'line 3: schedule: "0 25 * * *": hour 25 out of range'
    assert api.get("/v1/jobs").json()["jobs"] == []
    assert api.post("/v1/jobs/nope/trigger").status_code == 404
    batch = {"job": "b", "tasks": [{"name": "t", "command": ["true"]}]}
    assert api.post("/v1/jobs", json=batch).status_code == 201
    refused = api.post("/v1/jobs/b/trigger")
    assert refused.status_code == 409 and "not cron" in refused.json()["error"]


def test_the_cli_refuses_bad_schedules_and_embedded_cron(tmp_path):
    meso = [sys.executable, "-m", "meso_agentless"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(CRON.replace('"*:*:0/10"', '"0 25 * * *"'))
    done = subprocess.run([*meso, "run", str(bad), "-i", str(ROOT / "inventories/example"),
                           "--state", str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith('schedule: "0 25 * * *": hour 25 out of range')
    good = tmp_path / "good.yaml"
    good.write_text(CRON)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    done = subprocess.run([*meso, "run", str(good), "-i", str(ROOT / "inventories/example"),
                           "--state", str(tmp_path / "s.db")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "need a running controller" in done.stderr
    example = subprocess.run([*meso, "plan", str(ROOT / "examples/cron.yaml"), "-i",
                              str(ROOT / "inventories/example"), "--offline"],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert example.returncode == 0, example.stderr
