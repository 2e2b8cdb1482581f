"""Three real hosts: sshd with their own host keys, systemd, transient units, a network to cut."""

import json
import os
import socket
import subprocess
import time

import pytest

from meso_agentless.hosts import ssh
from meso_agentless.lab import cluster
from meso_agentless.lab.paths import LabPaths
from tests.conftest import LAB

pytestmark = pytest.mark.lab


def test_three_hosts_answer_with_distinct_names_and_addresses(meso_lab):
    names = {h.name: meso_lab.run(h.name, ["hostname"]).stdout.strip() for h in meso_lab.hosts}
    assert names == {f"{LAB}-1": f"{LAB}-1", f"{LAB}-2": f"{LAB}-2", f"{LAB}-3": f"{LAB}-3"}
    seen = set()
    for host in meso_lab.hosts:
        out = meso_lab.run(host.name, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f" {host.address}/" in out
        seen.add(host.address)
    assert len(seen) == 3


def test_systemd_runs_in_each_host_and_starts_transient_units(meso_lab):
    for host in meso_lab.hosts:
        state = meso_lab.run(host.name, ["systemctl", "is-system-running"]).stdout.strip()
        assert state in ("running", "degraded")
        unit = f"meso-labcheck-{time.monotonic_ns()}"
        done = meso_lab.run(
            host.name,
            ["systemd-run", "--wait", "--unit", unit, "-p", "MemoryMax=64M", "sh", "-c", "exit 7"],
        )
        assert done.exit_status == 7, done.stderr
        assert "status=7" in done.stderr


def test_each_host_has_its_own_host_key_and_unknown_keys_are_refused(meso_lab, tmp_path):
    keys = {h.name: meso_lab.run(h.name, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
            for h in meso_lab.hosts}  # fmt: skip
    assert len({k.split()[1] for k in keys.values()}) == 3
    known = meso_lab.paths.known_hosts.read_text()
    for key in keys.values():
        assert key.split()[1] in known
    # an empty known_hosts file: the real host key is not trusted, nothing runs
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = meso_lab.hosts[0]
    with pytest.raises(ssh.SSHError, match="not in"):
        ssh.connect(host.address, user="root", key_file=meso_lab.paths.key, known_hosts=empty)
    # another host's key under this host's address: a changed key, refused
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(
        f"{host.address} {keys[f'{LAB}-2'].split(' ')[0]} {keys[f'{LAB}-2'].split()[1]}\n"
    )
    with pytest.raises(ssh.SSHError, match="host key changed"):
        ssh.connect(host.address, user="root", key_file=meso_lab.paths.key, known_hosts=wrong)


def test_openssh_and_ansible_connect_with_strict_host_key_checking(meso_lab):
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        ["ansible", "all", "-i", str(meso_lab.inventory), "-m", "ansible.builtin.ping"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 3
    done = subprocess.run(
        ["meso", "lab", "ssh", "--lab", LAB, f"{LAB}-3", "--", "cat", "/etc/hostname"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, f"{LAB}-3"), done.stderr


def _tcp_reachable(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _reachable_from(meso_lab, source: str, address: str) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, 22), timeout=2)"
    return meso_lab.run(source, ["python3", "-c", probe], timeout=10).exit_status == 0


def test_a_cut_host_is_unreachable_from_everywhere_until_healed(meso_lab):
    one, two, three = (h.name for h in meso_lab.hosts)
    target = meso_lab.layout.host(two).address
    assert _tcp_reachable(target) and _reachable_from(meso_lab, one, target)
    with meso_lab.cut_off(two):
        assert not _tcp_reachable(target)
        assert not _reachable_from(meso_lab, one, target)
        assert not _reachable_from(meso_lab, three, target)
        assert _reachable_from(meso_lab, one, meso_lab.layout.host(three).address)
    deadline = time.monotonic() + 10
    while not _tcp_reachable(target) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tcp_reachable(target)
    assert _reachable_from(meso_lab, one, target)
    assert meso_lab.run(two, ["hostname"]).stdout.strip() == two


def test_status_reports_each_host(meso_lab):
    done = subprocess.run(
        ["meso", "lab", "status", "--lab", LAB, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    status = json.loads(done.stdout)
    assert status["mode"] == "nspawn"
    assert [(h["name"], h["process"], h["network"]) for h in status["hosts"]] == [
        (f"{LAB}-{i}", "running", "connected") for i in (1, 2, 3)
    ]
    assert all(h["systemd"] in ("running", "degraded") for h in status["hosts"])


def test_a_host_that_refuses_users_but_root_is_not_reported_up(meso_lab):
    """pam_nologin's /run/nologin (there while a host boots): the least-privileged key cannot
    log in, so the host is not up yet, whatever systemd says."""
    host = f"{LAB}-2"

    def state() -> str:
        done = subprocess.run(["meso", "lab", "status", "--lab", LAB, "-o", "json"],
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return next(h["systemd"] for h in json.loads(done.stdout)["hosts"] if h["name"] == host)

    meso_lab.run(host, ["touch", "/run/nologin"])
    try:
        refused = state()
    finally:
        meso_lab.run(host, ["rm", "-f", "/run/nologin"])
    assert "but users other than root are refused (/run/nologin; failed units: " in refused
    assert refused.split(",")[0] in ("running", "degraded")
    assert state() in ("running", "degraded")


def test_a_booted_host_that_still_refuses_users_is_given_a_hand(meso_lab):
    host = f"{LAB}-3"
    lab = cluster.require_lab(LAB)
    said: list[str] = []
    meso_lab.run(host, ["touch", "/run/nologin"])  # as a boot under load left it
    try:
        cluster._wait_ready(lab, LabPaths.of(LAB), lab.host(host), time.monotonic() + 60,
                            said.append)  # fmt: skip
        left = meso_lab.run(host, ["test", "-e", "/run/nologin"]).exit_status
    finally:
        meso_lab.run(host, ["rm", "-f", "/run/nologin"])
    assert left != 0  # users may log in again
    (told,) = said  # once, naming the state, the file and the unit
    assert told.startswith(f"{host}: boot ended with users refused (")
    assert "refused (/run/nologin; failed units: " in told
    assert told.endswith("; restarted systemd-user-sessions.service")


def test_up_again_is_harmless(meso_lab):
    before = meso_lab.run(f"{LAB}-1", ["cat", "/proc/1/stat"]).stdout.split()[21]
    done = subprocess.run(
        ["meso", "lab", "up", "--lab", LAB, "--hosts", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(meso_lab.inventory)
    assert "already up" in done.stderr
    after = meso_lab.run(f"{LAB}-1", ["cat", "/proc/1/stat"]).stdout.split()[21]
    assert before == after  # the same boot: nothing was restarted
