"""Two `meso controller` processes on one PostgreSQL state (started by the suite) and the lab's
real hosts: the leader killed (-9) while a service and a batch job run, and the leader frozen
(SIGSTOP) past its lease while the standby takes over, then woken: it launches nothing, the
hosts refuse its epoch, and it becomes a standby. bench/ha_bench.py repeats the failover and
measures the takeover."""

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from meso_agentless.hosts.plane import ExecutionPlane, NodeRefused
from meso_agentless.inventory import load_inventory
from meso_agentless.state.postgres import PgStore
from meso_agentless.testing.controller import start_controller
from tests.lab.common import MESO, cli, units, wait_for

pytestmark = pytest.mark.lab

OUTAGE = 30  # seconds the database is away
SERVICE = """\
job: web
type: service
tasks:
  - name: s
    count: 3
    command: ["sleep", "infinity"]
    resources: {cpus: 0.1, mem: 32MiB}
"""
BATCH = """\
job: crunch
tasks:
  - name: t
    count: 3
    command: ["sleep", "8"]
    resources: {cpus: 0.1, mem: 32MiB}
    restart: {policy: on-failure, attempts: 2}
"""


def role(controller) -> dict:
    return httpx.get(f"{controller.url}/v1/health", timeout=5).json()


@pytest.fixture
def pair(meso_lab, postgres, tmp_path):
    """Controllers a (the leader: started first) and b (a standby) on one new database, one
    token; the CLI's env names both. Afterwards: both stopped, the lab's units gone."""
    url = postgres.fresh_url()
    token = tmp_path / "token"
    token.write_text("h" * 40 + "\n")
    token.chmod(0o600)
    extra = ("--state", url, "--token-file", str(token))
    a = start_controller(meso_lab.inventory, tmp_path / "a", *extra)
    started = [a]
    try:
        assert role(a)["role"] == "leader"
        b = start_controller(meso_lab.inventory, tmp_path / "b", *extra)
        started.append(b)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
        env.update(MESO_ADDR=f"{a.url},{b.url}", MESO_TOKEN_FILE=str(token))
        yield a, b, env, url
    finally:
        for controller in started:
            if controller.process.poll() is None:
                os.kill(controller.process.pid, signal.SIGCONT)
                controller.stop()
        for host in meso_lab.hosts:
            meso_lab.run(host.name, ["sh", "-c", "systemctl stop 'meso-*'; "
                                     "systemctl reset-failed 'meso-*'"])  # fmt: skip


def status(env, job) -> dict:
    done = cli(env, "status", job, "-o", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return data["jobs"][0] if "jobs" in data else data


def submit(env, tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    done = cli(env, "run", "--detach", str(path))
    assert done.returncode == 0, done.stderr


def test_the_leader_killed_the_standby_takes_over_and_nothing_is_lost_or_run_twice(
    pair, meso_lab, tmp_path
):
    a, b, env, _ = pair
    assert (role(b)["role"], role(b)["leader"]) == ("standby", a.url)
    submit(env, tmp_path, "web", SERVICE)
    (tmp_path / "crunch.yaml").write_text(BATCH)
    # `meso run` follows the batch job through the failover, to its end
    follower = subprocess.Popen(
        [*MESO, "run", str(tmp_path / "crunch.yaml")], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: len(units(meso_lab)) == 6, timeout=30)
    before = units(meso_lab)
    # the standby named first: it answers 307, and the CLI goes on to the leader
    standby_first = {**env, "MESO_ADDR": f"{b.url},{a.url}"}
    assert status(standby_first, "web")["job"] == "web"
    done = cli(standby_first, "hosts", "-o", "json")
    assert done.returncode == 0 and len(json.loads(done.stdout)["hosts"]) == 3, done.stderr
    alone = cli({**env, "MESO_ADDR": b.url}, "kill", "web")  # only the standby: it says why
    assert alone.returncode == 1 and f"a standby (the leader is {a.url})" in alone.stderr
    a.process.kill()  # -9: no goodbye, the lease runs out on its own
    a.process.wait()
    health = wait_for(lambda: (h := role(b))["role"] == "leader" and h, timeout=30)
    assert health["epoch"] == 2
    # the CLI still names the dead one first: it goes on to b
    crunch = wait_for(lambda: (s := status(env, "crunch"))["outcome"] and s, timeout=60)
    assert crunch["outcome"]["code"] == 0, crunch["outcome"]
    assert sorted((t["index"], t["attempt"], t["state"]) for t in crunch["tasks"]) == [
        (0, 1, "finished"), (1, 1, "finished"), (2, 1, "finished")]  # fmt: skip
    web = status(env, "web")
    assert sorted((t["index"], t["attempt"], t["state"]) for t in web["tasks"]) == [
        (0, 1, "running"), (1, 1, "running"), (2, 1, "running")]  # fmt: skip
    after = units(meso_lab)
    assert after == {u: h for u, h in before.items() if u.startswith("meso-web_")}
    assert "leading at epoch 2" in b.log.read_text()
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "all 3 task(s) finished" in out + err


def test_a_frozen_leader_woken_after_the_takeover_launches_nothing(pair, meso_lab, tmp_path):
    a, b, env, url = pair
    submit(env, tmp_path, "web", SERVICE)
    wait_for(lambda: len(units(meso_lab)) == 3, timeout=30)
    os.kill(a.process.pid, signal.SIGSTOP)  # frozen: it renews nothing, and knows nothing
    wait_for(lambda: role(b)["role"] == "leader", timeout=30)
    # (the CLI asks the addresses in turn: a frozen one holds a request until it times out)
    to_b = {**env, "MESO_ADDR": f"{b.url},{a.url}"}
    submit(to_b, tmp_path, "crunch", BATCH.replace('"8"', "infinity"))  # the new leader launches
    wait_for(lambda: len(units(meso_lab)) == 6, timeout=30)
    os.kill(a.process.pid, signal.SIGCONT)
    woken = wait_for(lambda: (h := role(a))["role"] == "standby" and h, timeout=30)
    assert woken["leader"] == b.url
    assert "not the leader any more" in a.log.read_text()
    for job in ("web", "crunch"):
        assert {t["attempt"] for t in status(env, job)["tasks"]} == {1}
    assert len(units(meso_lab)) == 6
    # whatever a deposed leader still sends, the hosts refuse: its epoch (1) is below b's
    store = PgStore(url)
    plane = ExecutionPlane(load_inventory(str(meso_lab.inventory)).nodes)
    plane.fence = (store.identity, 1)
    try:
        unit, host = sorted(units(meso_lab).items())[0]
        with pytest.raises(NodeRefused, match="epoch: 1 is older than 2"):
            plane.stop(host, unit, wait=False)
        with pytest.raises(NodeRefused, match="epoch: 1 is older than 2"):
            plane.launch(host, {"unit": "meso-late_t_0_1", "argv": ["sleep", "60"],
                                "cpus": 100, "mem": 32 << 20})  # fmt: skip
    finally:
        plane.close()
        store.close()
    assert len(units(meso_lab)) == 6


def test_the_database_away_the_leader_stops_launching_and_resumes_with_nothing_lost(
    pair, meso_lab, postgres, tmp_path
):
    a, b, env, _ = pair
    submit(env, tmp_path, "web", SERVICE)
    wait_for(lambda: len(units(meso_lab)) == 3, timeout=30)
    before = units(meso_lab)
    postgres.halt()  # every database of the session's server: only this test's controllers use it
    halted = time.monotonic()
    try:
        wait_for(lambda: role(a)["role"] == "standby", timeout=30)  # its lease ran out
        assert role(b)["role"] == "standby"
        refused = httpx.post(f"{a.url}/v1/jobs", json={"job": "x"}, timeout=30,
                             headers={"Authorization": f"Bearer {'h' * 40}"})  # fmt: skip
        assert refused.status_code == 503, refused.text  # nobody can record an intent
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - halted)))  # the outage lasts
        assert units(meso_lab) == before  # the tasks keep running
        assert role(a)["role"] == role(b)["role"] == "standby"
    finally:
        postgres.resume()
    wait_for(lambda: "leader" in (role(a)["role"], role(b)["role"]), timeout=30)
    submit(env, tmp_path, "crunch", BATCH.replace('"8"', "infinity"))
    wait_for(lambda: len(units(meso_lab)) == 6, timeout=30)
    after = units(meso_lab)
    assert {u: h for u, h in after.items() if u.startswith("meso-web_")} == before
    for job in ("web", "crunch"):
        assert {t["attempt"] for t in status(env, job)["tasks"]} == {1}
