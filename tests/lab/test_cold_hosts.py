"""`meso hosts` and `meso cluster` without a controller (controller/reading.py) on the lab: every
host sampled over new connections dialed ahead; a host cut off is reported unreachable with its
error while the others answer; bad input is one line and exit 2."""

import json
import os

import pytest

from tests.conftest import LAB
from tests.lab.common import cli

pytestmark = pytest.mark.lab


@pytest.fixture
def env(meso_lab, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    return {**base, "MESO_STATE": str(tmp_path / "state.db"),
            "MESO_INVENTORY": str(meso_lab.inventory)}  # fmt: skip


def hosts_of(done):
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return {h["host"]: h for h in json.loads(done.stdout)["hosts"]}


def test_every_host_answers_a_cold_read(env):
    hosts = hosts_of(cli(env, "hosts", "-o", "json"))
    assert list(hosts) == [f"{LAB}-1", f"{LAB}-2", f"{LAB}-3"]
    for info in hosts.values():
        assert (info["state"], info["reachable"], info["error"]) == ("up", True, None)
        assert info["capacity"]["cpus"] == 2.0 and info["usage"]["mem"] > 0
        assert len(info["load"]) == 3 and info["boot"]


def test_a_cut_host_is_reported_unreachable_and_the_others_answer(meso_lab, env):
    cut = f"{LAB}-2"
    address = next(h.address for h in meso_lab.hosts if h.name == cut)
    with meso_lab.cut_off(cut):
        hosts = hosts_of(cli(env, "hosts", "-o", "json"))
        table = cli({**env, "COLUMNS": "80"}, "hosts")  # a narrow terminal: the state whole
        cluster = cli(env, "cluster", "-o", "json")
    info = hosts[cut]
    assert (info["state"], info["reachable"], info["stale"]) == ("unreachable", False, True)
    assert info["error"] == f"{cut}: {address}: TimeoutError: timed out"
    assert info["last_seen"] is None and info["load"] == [] and info["usage"] == {}
    assert info["capacity"] == {"cpus": 2.0, "mem": 4 << 30}  # declared in the inventory only
    assert all(hosts[h]["state"] == "up" for h in (f"{LAB}-1", f"{LAB}-3"))
    assert table.returncode == 0 and "unreachable" in table.stdout
    assert json.loads(cluster.stdout)["hosts"] == {"unreachable": 1, "up": 2}
    healed = hosts_of(cli(env, "hosts", "-o", "json"))
    assert {h["state"] for h in healed.values()} == {"up"}


def test_bad_input_is_one_line_and_exit_2(env, tmp_path):
    missing = cli({**env, "MESO_INVENTORY": str(tmp_path / "nope.yml")}, "hosts", "-o", "json")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert (
        missing.stderr
        == f"meso: error: inventory {tmp_path / 'nope.yml'}: no such file or directory\n"
    )
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    h1:\n      meso_resources: {cpus: lots}\n")
    done = cli({**env, "MESO_INVENTORY": str(bad)}, "hosts")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "meso_resources" in done.stderr
