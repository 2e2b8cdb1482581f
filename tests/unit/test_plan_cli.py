"""`meso plan --offline` end to end through the CLI: JSON, table, exit codes, refusals."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
EXAMPLE = str(ROOT / "inventories" / "example")
MESO = [sys.executable, "-m", "meso_agentless"]


def meso(*args, **kwargs):
    return subprocess.run(
        [*MESO, *args], capture_output=True, text=True, timeout=120, check=False, **kwargs
    )


def test_plan_json_places_examples_and_exits_0():
    done = meso("plan", str(ROOT / "examples/wordcount.yaml"), str(ROOT / "examples/web.yaml"),
                "-i", EXAMPLE, "--offline", "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["unplaced"] == []
    assert len(plan["placements"]) == 8
    first = plan["placements"][0]
    assert set(first) >= {"job", "task", "index", "host", "resources", "ports"}
    web = [p for p in plan["placements"] if p["job"] == "web"]
    per_host = [sum(p["host"] == h for p in web) for h in {p["host"] for p in web}]
    assert len(web) == 3 and max(per_host) <= 2  # max_per hostname 2
    assert all(len(p["ports"]) == 1 and 31000 <= p["ports"][0] <= 32000 for p in web)
    mapper = next(p for p in plan["placements"] if p["task"] == "mapper")
    assert mapper["resources"] == {"cpus": 0.5, "mem": 256 * 2**20}


def test_unplaced_tasks_exit_3_with_the_reason(tmp_path):
    job = tmp_path / "big.yaml"
    job.write_text(
        "job: big\nframework: web\ntasks:\n  - name: t\n    count: 2\n    command: [ls]\n"
        "    resources: {cpus: 80, mem: 1GiB}\n"
    )
    done = meso("plan", str(job), "-i", EXAMPLE, "--offline", "-o", "json")
    assert done.returncode == 3
    plan = json.loads(done.stdout)
    assert [p["host"] for p in plan["placements"]] == ["node-b1"]
    assert plan["unplaced"] == [
        {"job": "big", "task": "t", "index": 1, "framework": "web",
         "reason": 'no host fits: dimension "cpus" exhausted on 3 hosts'},
    ]  # fmt: skip
    table = meso("plan", str(job), "-i", EXAMPLE, "--offline")
    assert table.returncode == 3
    assert 'unplaced big/t[1]: no host fits: dimension "cpus" exhausted on 3 hosts' in " ".join(
        table.stdout.split()
    )


def test_bad_input_exits_2_with_one_line(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("job: x\ntasks:\n  - name: a\n    command: [ls]\n    count: many\n")
    for args, message in [
        ((str(job), "-i", EXAMPLE, "--offline"), "bad.yaml:5: tasks[0].count"),
        ((str(ROOT / "examples/web.yaml"), "-i", "/nope", "--offline"), "inventory /nope: no such"),
        ((str(ROOT / "examples/web.yaml"), "--offline"), "no inventory: pass -i"),
        ((str(tmp_path / "missing.yaml"), "-i", EXAMPLE), "no such job file"),
        ((), "Missing argument 'JOBS...'"),
    ]:
        env = {k: v for k, v in __import__("os").environ.items() if k != "MESO_INVENTORY"}
        done = meso("plan", *args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""


def test_offline_needs_declared_capacity(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    a: {meso_resources: {cpus: 4}}\n")
    done = meso("plan", str(ROOT / "examples/web.yaml"), "-i", str(inventory), "--offline")
    assert done.returncode == 2
    assert "host a declares no meso_resources.mem; --offline plans need declared" in done.stderr


def test_schema_is_the_job_files_json_schema():
    done = meso("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["title"] == "Job"
    assert set(schema["required"]) == {"job", "tasks"}
    assert schema["additionalProperties"] is False


def one_host_inventory(tmp_path, frameworks=""):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  vars:\n" + (frameworks or "    meso_frameworks: {}\n")
        + "  hosts:\n    only:\n      meso_resources: {cpus: 1, mem: 4GiB}\n"
    )  # fmt: skip
    return str(inventory)


def job_file(tmp_path, name, framework="default"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"job: {name}\nframework: {framework}\ntasks:\n  - name: t\n"
                    "    command: [ls]\n    resources: {cpus: 1, mem: 64MiB}\n")  # fmt: skip
    return str(path)


def test_jobs_are_placed_in_the_order_given_not_by_name(tmp_path):
    inventory = one_host_inventory(tmp_path)
    zz, aa = job_file(tmp_path, "zz"), job_file(tmp_path, "aa")
    done = meso("plan", zz, aa, "-i", inventory, "--offline", "-o", "json")
    assert done.returncode == 3
    assert [p["job"] for p in json.loads(done.stdout)["placements"]] == ["zz"]
    done = meso("plan", aa, zz, "-i", inventory, "--offline", "-o", "json")
    assert [p["job"] for p in json.loads(done.stdout)["placements"]] == ["aa"]


def test_a_zero_quota_is_a_limit_not_no_quota(tmp_path):
    for quota, needs in (("{cpus: 0, mem: 0}", "cpus"), ("{cpus: 0, mem: 4GiB}", "cpus"),
                         ("{cpus: 4, mem: 0}", "mem")):  # fmt: skip
        inventory = one_host_inventory(
            tmp_path, f"    meso_frameworks:\n      capped: {{quota: {quota}}}\n"
        )
        done = meso("plan", job_file(tmp_path, "j", "capped"), "-i", inventory, "--offline",
                    "-o", "json")  # fmt: skip
        assert done.returncode == 3, (quota, done.stdout)
        plan = json.loads(done.stdout)
        assert plan["placements"] == []
        assert plan["unplaced"][0]["reason"].startswith(
            f"quota of framework capped reached: {needs} 0"
        ), plan


def test_plan_marks_placements_on_borrowed_capacity_revocable(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  vars:\n    meso_frameworks: {a: {guarantee: {cpus: 3}}, b: {}}\n"
        "  hosts:\n    h1: {meso_resources: {cpus: 4, mem: 8GiB}}\n"
    )
    job = tmp_path / "b.yaml"
    job.write_text(
        "job: bj\nframework: b\ntasks:\n  - name: t\n    count: 4\n    command: [ls]\n"
        "    resources: {cpus: 1, mem: 1GiB}\n"
    )
    done = meso("plan", str(job), "-i", str(inventory), "--offline", "-o", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [p["revocable"] for p in plan["placements"]] == [False, True, True, True]
    assert plan["revocations"] == []
    table = meso("plan", str(job), "-i", str(inventory), "--offline")
    assert table.stdout.count("h1 (revocable)") == 3
