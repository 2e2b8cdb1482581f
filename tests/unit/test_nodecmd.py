"""The node command's parsers against real output captured on lab hosts (tests/fixtures/node)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.node import NODE_COMMAND, nodecmd

FIXTURES = Path(__file__).parents[1] / "fixtures" / "node"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_meminfo_in_bytes():
    memory = nodecmd.parse_meminfo(fixture("meminfo-nspawn.txt"))
    assert memory["MemTotal"] == 24684084 * 1024
    assert memory["MemAvailable"] == 24154092 * 1024
    vm = nodecmd.parse_meminfo(fixture("meminfo-vm.txt"))
    assert 900 * 2**20 < vm["MemTotal"] < 1024 * 2**20  # a 1 GiB guest
    assert "HugePages_Total" in vm  # a count without a unit stays a count


@pytest.mark.parametrize(
    ("name", "mode"),
    [("mounts-nspawn-hybrid.txt", "hybrid"), ("mounts-vm-v2.txt", "v2")],
)
def test_cgroup_mode(name, mode):
    assert nodecmd.parse_cgroup_mode(fixture(name)) == mode
    assert nodecmd.parse_cgroup_mode("") == "v1"


def test_systemd_version():
    assert nodecmd.parse_systemd_version(fixture("systemctl-version.txt")) == 252
    assert nodecmd.parse_systemd_version("garbage") == 0


def test_units_and_their_limits():
    units = [nodecmd.unit_limits(p) for p in nodecmd.parse_show(fixture("show-units.txt"))]
    assert units == [
        {"unit": "meso-fixture-web-0-1.service", "active": "active", "sub": "running",
         "millicpus": 500, "memory_max": 256 * 2**20, "tasks_max": 64},
        {"unit": "meso-fixture-batch-0-1.service", "active": "active", "sub": "exited",
         "millicpus": 1500, "memory_max": None, "tasks_max": 28909},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "usec"),
    [("500ms", 500_000), ("1.500000s", 1_500_000), ("1min 30s", 90_000_000),
     ("infinity", None), ("", None), ("250us", 250),
     ("1.001000s", 1_001_000), ("2.009000s", 2_009_000)],  # exact, no float rounding down
)  # fmt: skip
def test_time_spans(text, usec):
    assert nodecmd.parse_usec(text) == usec


def test_sample_here_is_one_json_object():
    """The program runs as it would on a host: python3, stdlib only, one JSON line out."""
    done = subprocess.run([sys.executable, str(NODE_COMMAND), "sample"], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    facts = json.loads(done.stdout)
    assert facts["ok"] is True
    assert facts["cpus"] >= 1 and facts["mem_total"] > facts["mem_available"] > 0
    assert len(facts["boot_id"]) == 36 and len(facts["load"]) == 3
    bad = subprocess.run([sys.executable, str(NODE_COMMAND), "explode"], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 1
    assert json.loads(bad.stdout) == {
        "ok": False,
        "error": "verb: 'explode' is not one of "
        "['forget', 'health', 'launch', 'list', 'sample', 'status', 'stop', 'trigger']",
    }
