"""`meso run` and the everyday commands, end to end on the lab through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import LAB

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
MESO = [sys.executable, "-m", "meso_agentless"]


@pytest.fixture
def meso(meso_lab, tmp_path):
    env = {**os.environ, "MESO_STATE": str(tmp_path / "state.db"),
           "MESO_INVENTORY": str(meso_lab.inventory)}  # fmt: skip

    def call(*args, check=None, timeout=300):
        done = subprocess.run([*MESO, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)  # fmt: skip
        if check is not None:
            assert done.returncode == check, (args, done.stdout, done.stderr)
        return done

    call.env = env
    return call


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def status_of(meso, job):
    return json.loads(meso("status", job, "-o", "json", check=0).stdout)["jobs"][0]


def test_a_batch_job_finishes_and_a_new_process_sees_status_and_logs(meso, meso_lab):
    for host in meso_lab.hosts:  # earlier tests ran the same units: start from empty journals
        meso_lab.run(host.name, ["journalctl", "--rotate", "--vacuum-time=1s", "-q"])
    done = meso("run", str(ROOT / "examples/wordcount.yaml"), check=0)
    assert "wordcount: all 5 task(s) finished" in done.stdout
    job = status_of(meso, "wordcount")
    assert [(t["task"], t["state"], t["exit_code"]) for t in job["tasks"]] == [
        ("mapper", "finished", 0)] * 4 + [("reducer", "finished", 0)]  # fmt: skip
    assert all({"host", "unit", "state", "exit_code"} <= set(t) for t in job["tasks"])
    assert meso("logs", "wordcount", "mapper/2", check=0).stdout == "[('a', 2), ('b', 1)]\n"
    assert "reduced" in meso("logs", "wordcount", "reducer", check=0).stdout


def test_a_failing_task_is_retried_then_exits_1_with_its_exit_code(meso, tmp_path):
    job = write(tmp_path, "flaky.yaml", """\
job: flaky
tasks:
  - name: t
    command: ["sh", "-c", "echo attempt $MESO_ATTEMPT; exit 3"]
    resources: {cpus: 0.1, mem: 32MiB}
    restart: {policy: on-failure, attempts: 2}
""")  # fmt: skip
    done = meso("run", job, check=1)
    assert "failed exit 3" in done.stdout
    tasks = status_of(meso, "flaky")["tasks"]
    assert [(t["attempt"], t["state"], t["exit_code"]) for t in tasks] == [
        (1, "failed", 3), (2, "failed", 3), (3, "failed", 3)]  # fmt: skip
    assert meso("logs", "flaky", "t/0", check=0).stdout == "attempt 3\n"


def test_a_job_too_big_exits_3_naming_the_dimension(meso, tmp_path):
    job = write(tmp_path, "big.yaml", "job: big\ntasks:\n  - name: t\n    command: [\"true\"]\n"
                "    resources: {cpus: 64, mem: 32MiB}\n")  # fmt: skip
    done = meso("run", job, check=3)
    assert 'no host fits: dimension "cpus" exhausted on 3 hosts' in done.stdout


BAD_FILES = {
    "unknown.yaml": ("job: x\nbogus: 1\ntasks:\n  - {name: a, command: [ls]}\n", "bogus"),
    "type.yaml": ("job: x\ntasks:\n  - {name: a, command: [ls], count: lots}\n", "count"),
    "negative.yaml": ("job: x\ntasks:\n  - {name: a, command: [ls], resources: {mem: -1G}}\n",
                      "resources.mem"),
    "absurd.yaml": ("job: x\ntasks:\n  - {name: a, command: [ls], resources: {mem: 9999999TiB}}\n",
                    "resources.mem"),
    "nan.yaml": ("job: x\ntasks:\n  - {name: a, command: [ls], resources: {cpus: .nan}}\n",
                 "resources.cpus"),
    "dup.yaml": ("job: x\njob: y\ntasks:\n  - {name: a, command: [ls]}\n", "duplicate key"),
    "bomb.yaml": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: [*b, *b, *b, *b, *b, *b, *b, *b]\njob: x\n", "aliases"),
    "huge.yaml": ("job: x\n#" + "x" * (1 << 20) + "\n", "more than the 1048576 allowed"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_job_files_exit_2_name_the_field_and_launch_nothing(meso, meso_lab, tmp_path, name):
    text, field = BAD_FILES[name]
    done = meso("run", write(tmp_path, name, text), check=2)
    assert done.stderr.startswith(f"meso: error: {tmp_path / name}")
    assert field in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert meso("status", "-o", "json", check=0).stdout.strip() == '{\n  "jobs": []\n}'


def test_killed_mid_launch_then_status_accounts_for_every_task_and_none_runs_twice(
    meso, meso_lab, tmp_path
):
    job = write(tmp_path, "many.yaml", """\
job: many
tasks:
  - name: t
    count: 12
    command: ["sh", "-c", "echo ran $MESO_INDEX; sleep 3"]
    resources: {cpus: 0.1, mem: 16MiB}
""")  # fmt: skip
    run = subprocess.Popen([*MESO, "run", job], env=meso.env, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    placed = 0
    for line in run.stderr:
        placed += "placed on" in line
        if placed == 5:
            run.send_signal(signal.SIGKILL)  # mid-way through the launches
            break
    run.wait()
    tasks = status_of(meso, "many")["tasks"]
    assert 5 <= len(tasks) <= 12
    assert all(t["state"] in ("staging", "running", "finished", "missing") for t in tasks), tasks
    assert len({t["unit"] for t in tasks}) == len(tasks)
    meso("run", job, check=0)  # resumes: launches what is left, relaunches what never arrived
    tasks = status_of(meso, "many")["tasks"]
    assert sorted(t["index"] for t in tasks) == list(range(12))
    assert {t["state"] for t in tasks} == {"finished"}
    # each task said "ran INDEX" in its journal (as a DynamicUser it leaves nothing else behind)
    said = [line for h in meso_lab.hosts for line in meso_lab.run(
        h.name, ["journalctl", "--unit=meso-many_*", "--output=cat"]).stdout.splitlines()
        if line.startswith("ran ")]  # fmt: skip
    assert sorted(said) == sorted(f"ran {i}" for i in range(12))  # each instance ran once


def test_a_service_stays_up_comes_back_and_scales(meso, meso_lab):
    meso("run", str(ROOT / "examples/web.yaml"), check=0)
    tasks = status_of(meso, "web")["tasks"]
    assert [t["state"] for t in tasks] == ["running"] * 3
    first = tasks[0]
    address = meso_lab.layout.host(first["host"]).address
    page = subprocess.run(["python3", "-c", "import urllib.request, sys; sys.stdout.write("
                           f"urllib.request.urlopen('http://{address}:{first['ports'][0]}/',"
                           " timeout=10).read().decode())"], capture_output=True, text=True,
                          timeout=30, check=True).stdout  # fmt: skip
    assert "Directory listing" in page
    # kill the process on its host: systemd brings it back on the same host
    meso_lab.run(first["host"], ["systemctl", "kill", "-s", "KILL", first["unit"]])
    deadline = time.monotonic() + 30
    while True:
        again = status_of(meso, "web")["tasks"][0]
        if again["state"] == "running" and again["restarts"] >= 1:
            break
        assert time.monotonic() < deadline, again
        time.sleep(0.5)
    # stopped from outside, it is gone from its host: the controller launches it again
    meso_lab.run(tasks[1]["host"], ["systemctl", "stop", tasks[1]["unit"]])
    meso("run", str(ROOT / "examples/web.yaml"), check=0)
    assert [t["state"] for t in status_of(meso, "web")["tasks"] if t["index"] == 1][-1] == "running"
    meso("scale", "web", "server", "5", check=0)
    running = [t for t in status_of(meso, "web")["tasks"] if t["state"] == "running"]
    assert sorted(t["index"] for t in running) == [0, 1, 2, 3, 4]
    meso("scale", "web", "server", "1", check=0)
    running = [t for t in status_of(meso, "web")["tasks"] if t["state"] == "running"]
    assert [t["index"] for t in running] == [0]
    killed = meso("kill", "web", "-o", "json", check=0)
    assert [s["state"] for s in json.loads(killed.stdout)["stopped"]] == ["killed"]
    assert all(t["state"] != "running" for t in status_of(meso, "web")["tasks"])


def test_hosts_shows_capacity_allocated_and_free(meso):
    hosts = json.loads(meso("hosts", "-o", "json", check=0).stdout)["hosts"]
    assert [h["host"] for h in hosts] == [f"{LAB}-1", f"{LAB}-2", f"{LAB}-3"]
    assert all(h["capacity"]["cpus"] == 2 and h["reachable"] for h in hosts)
    assert all(set(h) >= {"allocated", "free", "load", "by_framework"} for h in hosts)


def test_status_looping_while_a_run_launches_never_runs_a_task_twice_or_marks_one_lost(
    meso, tmp_path
):
    """Readers never write over a newer state: one writer per state file (the run), and every
    change is a compare-and-set."""
    job = write(tmp_path, "quick.yaml", """\
job: quick
tasks:
  - name: t
    count: 60
    command: ["true"]
    resources: {cpus: 0.01, mem: 8MiB}
""")  # fmt: skip
    run = subprocess.Popen([*MESO, "run", job], env=meso.env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    readers = 0
    while run.poll() is None:
        done = meso("status", "-o", "json")
        assert done.returncode == 0, done.stderr
        readers += 1
    assert run.returncode == 0 and readers >= 2
    tasks = status_of(meso, "quick")["tasks"]
    assert len(tasks) == 60
    assert {(t["attempt"], t["state"], t["exit_code"]) for t in tasks} == {(1, "finished", 0)}
