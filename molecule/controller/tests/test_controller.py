"""testinfra: the controller as a systemd service on a lab host, and the CLI on this machine
reaching it through MESO_ADDR."""

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import testinfra.utils.ansible_runner

# the scenario's own inventory (the lab's hosts, split by create.yml), not molecule's copy
INVENTORY = Path(__file__).resolve().parents[1] / "inventory"
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(str(INVENTORY))
testinfra_hosts = [
    f"ansible://{name}?ansible_inventory={INVENTORY}"
    for name in RUNNER.get_hosts("meso_controller")
]
assert testinfra_hosts, f"no hosts in {INVENTORY}: is the lab up?"  # never skip silently
NODES = sorted(RUNNER.get_hosts("meso_nodes"))
assert len(NODES) == 2, NODES

USER = "meso-controller"
CONFIG_DIR = "/etc/meso-agentless"
TOKEN_FILE = "/var/lib/meso-controller/token"  # noqa: S105 (a path)
VENV = "/opt/meso-agentless"
WHEELHOUSE_CACHE = Path("~/.cache/meso-agentless/wheelhouse").expanduser()


def api_url(host) -> str:
    return f"http://{host.ansible.get_variables()['ansible_host']}:4646"


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url)  # noqa: S310 (http to a lab address)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def meso(host, token: str, *argv: str) -> subprocess.CompletedProcess:
    """`meso ...` on this machine, through the API only: no inventory, no config, no state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    env |= {"MESO_ADDR": api_url(host), "MESO_TOKEN": token, "MESO_CONFIG": "/nonexistent.yaml"}
    return subprocess.run(["meso", *argv], capture_output=True, text=True, env=env, timeout=120,
                          check=False)  # fmt: skip


def meso_hosts(host, token: str) -> subprocess.CompletedProcess:
    return meso(host, token, "hosts", "-o", "json")


def main_pid(host) -> int:
    return int(host.check_output("systemctl show -p MainPID --value meso-controller.service"))


def test_the_service_is_enabled_and_active(host):
    service = host.service("meso-controller.service")
    assert service.is_enabled
    assert service.is_running
    assert main_pid(host) > 0


def test_it_runs_as_an_unprivileged_system_user_without_capabilities(host):
    user = host.user(USER)
    assert 0 < user.uid < 1000 and user.shell == "/usr/sbin/nologin"
    assert user.groups == [USER]  # no sudo, no adm
    pid = main_pid(host)
    assert host.check_output(f"ps -o user= -p {pid}") == USER
    status = host.file(f"/proc/{pid}/status").content_string
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0


def test_it_runs_in_a_sandbox(host):
    shown = host.check_output(
        "systemctl show -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp"
        " -p ReadWritePaths -p Restart -p User meso-controller.service"
    )
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/meso-controller",
        "Restart": "on-failure", "User": USER,
    }  # fmt: skip


def test_the_key_and_token_are_its_own_and_its_config_is_read_only_to_it(host):
    for path in ("/etc/meso-agentless/id_ed25519", TOKEN_FILE):
        secret = host.file(path)
        assert (secret.user, secret.group, secret.mode) == (USER, USER, 0o600), path
    directory = host.file(CONFIG_DIR)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o711)
    for name in ("inventory.yml", "config.yaml", "known_hosts"):
        config = host.file(f"{CONFIG_DIR}/{name}")
        assert (config.user, config.group, config.mode) == ("root", USER, 0o640), name
        assert host.run(f"runuser -u {USER} -- test -r {config.path}").rc == 0, name
        assert host.run(f"runuser -u {USER} -- test -w {config.path}").rc != 0, name
    assert host.run(f"runuser -u {USER} -- test -w {VENV}/bin").rc != 0


def test_it_was_installed_from_the_wheelhouse_built_on_this_machine(host):
    key = host.file(f"{VENV}/.meso-wheelhouse").content_string
    built = WHEELHOUSE_CACHE / key
    local = sorted(p.name for p in built.glob("*.whl"))
    assert any(name.startswith("meso_agentless-") for name in local), local
    remote = host.check_output("ls /var/cache/meso-agentless/wheelhouse").split()
    assert sorted(remote) == local  # the same wheels, nothing left of other builds
    wheel = next(name for name in local if name.startswith("meso_agentless-"))
    here = hashlib.sha256((built / wheel).read_bytes()).hexdigest()
    there = host.check_output(f"sha256sum /var/cache/meso-agentless/wheelhouse/{wheel}").split()[0]
    assert there == here
    assert host.check_output(f"{VENV}/bin/meso --version").startswith("meso, version ")


def test_health_answers_without_a_token_and_everything_else_needs_one(host):
    status, body = get(f"{api_url(host)}/v1/health")
    assert status == 200 and body["ok"] is True
    assert get(f"{api_url(host)}/v1/hosts")[0] == 401
    assert get(f"{api_url(host)}/v1/hosts", token="not-the-token")[0] == 401  # noqa: S106


def test_meso_hosts_here_through_MESO_ADDR_lists_exactly_the_nodes(host):
    token = host.file(TOKEN_FILE).content_string.strip()
    deadline = time.monotonic() + 30  # the nodes got the controller's key after it started
    while True:
        done = meso_hosts(host, token)
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)["hosts"]
        assert sorted(h["host"] for h in listed) == NODES  # its own host is not a node
        if all(h["state"] == "up" for h in listed) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [h["state"] for h in listed] == ["up", "up"], listed
    assert all(h["boot"] for h in listed)  # sampled over SSH by the service, as meso


def test_meso_hosts_with_a_wrong_token_is_refused(host):
    done = meso_hosts(host, "not-the-token")
    assert done.returncode != 0 and done.stdout == ""
    assert "check MESO_TOKEN" in done.stderr, done.stderr  # the API's 401, not some other error


def test_a_job_runs_on_the_nodes_through_the_service(host):
    """The service, as its unprivileged user, launches on the nodes as meso with its own key."""
    token = host.file(TOKEN_FILE).content_string.strip()
    job = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "examples/wordcount.yaml"
    done = meso(host, token, "run", str(job), "-o", "json")
    assert done.returncode == 0, done.stderr
    tasks = json.loads(done.stdout)["tasks"]
    assert len(tasks) == 5 and {t["state"] for t in tasks} == {"finished"}
    assert {t["host"] for t in tasks} <= set(NODES)


def test_sigterm_stops_it_cleanly_and_it_starts_again(host):
    """Last: it restarts the service (tasks on the hosts are not its to stop)."""
    started = time.monotonic()
    host.check_output("systemctl stop meso-controller.service")
    assert time.monotonic() - started < 10
    shown = host.check_output("systemctl show -p Result -p ExecMainStatus meso-controller.service")
    assert sorted(shown.splitlines()) == ["ExecMainStatus=0", "Result=success"]
    host.check_output("systemctl start meso-controller.service")
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"{api_url(host)}/v1/health")[0] == 200:
                break
        except urllib.error.URLError:  # not listening yet
            pass
        assert time.monotonic() < deadline, "no answer 30 s after a start"
        time.sleep(0.5)
