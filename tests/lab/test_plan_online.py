"""`meso plan` samples the lab's hosts over SSH with the node command (no --offline)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LAB

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
MESO = [sys.executable, "-m", "meso_agentless"]


def plan(lab, *jobs: str, inventory: Path | None = None):
    done = subprocess.run(
        [*MESO, "plan", *jobs, "-i", str(inventory or lab.inventory), "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def test_plan_samples_every_host_and_places_the_examples(meso_lab):
    result = plan(meso_lab, str(ROOT / "examples/wordcount.yaml"), str(ROOT / "examples/web.yaml"))
    assert result["unreachable"] == {}
    assert result["unplaced"] == []
    hosts = {p["host"] for p in result["placements"]}
    assert hosts <= {f"{LAB}-1", f"{LAB}-2", f"{LAB}-3"}
    web = [p["host"] for p in result["placements"] if p["job"] == "web"]
    assert len(web) == 3 and max(web.count(h) for h in web) <= 2


def test_running_meso_units_count_as_used(meso_lab, tmp_path):
    """A unit holding both CPUs of mtest-1 leaves it nothing to offer."""
    unit = "meso-hog_t_0_1"  # of meso's form, launched by nobody meso knows
    started = meso_lab.run(f"{LAB}-1", ["systemd-run", "--unit", unit, "-p", "CPUQuota=200%",
                                       "-p", "MemoryMax=1G", "sleep", "600"])  # fmt: skip
    assert started.ok, started.stderr
    try:
        job = tmp_path / "spread.yaml"
        job.write_text("job: spread\ntasks:\n  - name: t\n    count: 3\n    command: [ls]\n"
                       "    resources: {cpus: 0.5, mem: 64MiB}\n"
                       "    constraints: [{op: unique_host}]\n")  # fmt: skip
        result = plan(meso_lab, str(job))
        assert {p["host"] for p in result["placements"]} == {f"{LAB}-2", f"{LAB}-3"}
        assert result["unplaced"][0]["reason"] == (
            'no host fits: constraint "unique host" filtered on 2 hosts; '
            'dimension "cpus" exhausted on 1 host'
        )
    finally:
        meso_lab.run(f"{LAB}-1", ["systemctl", "stop", unit])


def test_unreachable_and_untrusted_hosts_offer_nothing(meso_lab, tmp_path):
    with meso_lab.cut_off(f"{LAB}-2"):
        result = plan(meso_lab, str(ROOT / "examples/web.yaml"))
    assert list(result["unreachable"]) == [f"{LAB}-2"]
    assert f"{LAB}-2" not in {p["host"] for p in result["placements"]}
    assert len(result["placements"]) == 3 and result["unplaced"] == []
    # a known_hosts file that lacks mtest-3's key: refused, never trusted on first use
    known = tmp_path / "known_hosts"
    lines = meso_lab.paths.known_hosts.read_text().splitlines(keepends=True)
    known.write_text("".join(line for line in lines if not line.startswith(f"{LAB}-3,")))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(meso_lab.inventory.read_text().replace(str(meso_lab.paths.known_hosts),
                                                                str(known)))  # fmt: skip
    result = plan(meso_lab, str(ROOT / "examples/web.yaml"), inventory=inventory)
    assert list(result["unreachable"]) == [f"{LAB}-3"]
    assert "host key not in" in result["unreachable"][f"{LAB}-3"]
