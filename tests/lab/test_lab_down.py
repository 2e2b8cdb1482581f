"""`meso lab down` leaves nothing behind, even after a lab whose processes were killed."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from meso_agentless.lab import processes
from meso_agentless.lab.paths import LabPaths

pytestmark = pytest.mark.lab

LAB = "mdown"


def meso(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["meso", "lab", *args, "--lab", LAB], capture_output=True, text=True, timeout=300,
        check=check,
    )  # fmt: skip


def _ip_json(*args: str) -> list[dict]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout or "[]")


def remains() -> dict[str, list[str]]:
    """What of lab LAB exists on this machine: namespaces, links, mounts, processes, files."""
    root = str(LabPaths.of(LAB).root)
    bridge, veth = f"mb-{LAB}", f"mv-{LAB}-"
    live = [p for p in processes.processes_mentioning(root + "/") if processes.is_live(p)]
    live += processes.container_inits("/etc/meso-lab", LAB)
    return {
        "netns": [
            n["name"] for n in _ip_json("netns", "list") if n["name"].startswith(f"meso-{LAB}-")
        ],
        "links": [
            link["ifname"]
            for link in _ip_json("link", "show")
            if link["ifname"] == bridge or link["ifname"].startswith(veth)
        ],
        "mounts": [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if root in m],
        "processes": [str(pid) for pid in live],
        "files": [root] if Path(root).exists() else [],
    }


def kill_host_processes() -> None:
    """SIGKILL the nspawn processes, as the end of a session does; their containers go on."""
    for pid in processes.processes_mentioning(str(LabPaths.of(LAB).root) + "/"):
        os.kill(pid, signal.SIGKILL)


def test_down_removes_every_namespace_link_mount_process_and_file():
    meso("up", "--hosts", "2")
    found = remains()
    assert len(found["netns"]) == 2 and len(found["links"]) == 3
    assert found["mounts"] and found["processes"] and found["files"]
    meso("down")
    assert remains() == {"netns": [], "links": [], "mounts": [], "processes": [], "files": []}


def test_down_cleans_up_after_a_lab_whose_processes_were_killed():
    """Like a session that ended: nspawn is gone, its containers, mounts and namespaces stay."""
    meso("up", "--hosts", "2")
    kill_host_processes()
    assert len(processes.container_inits("/etc/meso-lab", LAB)) == 2  # orphaned, still running
    status = meso("status", "-o", "json")
    assert {h["process"] for h in json.loads(status.stdout)["hosts"]} == {"stopped"}
    meso("down")
    assert remains() == {"netns": [], "links": [], "mounts": [], "processes": [], "files": []}


def test_up_over_remains_starts_a_fresh_lab():
    meso("up", "--hosts", "1")
    kill_host_processes()
    meso("up", "--hosts", "1")
    status = json.loads(meso("status", "-o", "json").stdout)
    assert [(h["process"], h["systemd"]) for h in status["hosts"]] == [("running", "running")]
    meso("down")
    assert remains()["processes"] == []


def test_down_of_a_lab_that_is_not_up_succeeds():
    assert meso("down").returncode == 0
