"""testinfra: the operator's policy, host by host (this scenario's inventory/nodes.yml): root
tasks on mol-2 and only there, www-data as a task user, other users refused."""

import json
import time
from pathlib import Path

import testinfra.utils.ansible_runner
from test_node import serve  # the same pinned-key channel

INVENTORY = Path(__file__).resolve().parents[1] / "inventory"
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(str(INVENTORY))
testinfra_hosts = [f"ansible://{name}?ansible_inventory={INVENTORY}"
                   for name in RUNNER.get_hosts("meso_nodes")]  # fmt: skip
assert testinfra_hosts, f"no hosts in {INVENTORY}: is the lab up?"


def run_as(host, user: str | None, unit: str, **extra) -> tuple[dict, str]:
    """Launch a task that prints its uid and user (as `user`), wait for it to end; its last
    answer and what it printed."""
    request = {"verb": "launch", "unit": unit, "argv": ["sh", "-c", "echo $(id -u) $USER"],
               **extra}  # fmt: skip
    if user:
        request["user"] = user
    (launched,) = serve(host, request)
    if not launched["ok"]:
        return launched, ""
    for _ in range(100):
        (status,) = serve(host, {"verb": "status", "unit": unit})
        if status["state"] in ("finished", "failed", "killed"):
            break
        time.sleep(0.2)
    printed = host.check_output(f"journalctl _SYSTEMD_UNIT={unit}.service -o cat --no-pager")
    serve(host, {"verb": "forget", "unit": unit})
    return status, printed.strip()


def test_exactly_one_host_allows_root():
    allowed = [h for h in RUNNER.get_hosts("meso_nodes")
               if RUNNER.get_variables(h).get("meso_node_allow_root")]  # fmt: skip
    assert allowed == ["mol-2"]


def test_root_tasks_run_where_the_operator_allows_them_and_only_there(host):
    allowed = bool(host.ansible.get_variables().get("meso_node_allow_root"))
    policy = json.loads(host.file("/etc/meso-agentless/node-policy.json").content_string)
    assert policy["allow_root"] is allowed
    answer, printed = run_as(host, "root", "meso-root_t_0_1")
    if allowed:
        assert (answer["state"], answer["exit_code"], printed) == ("finished", 0, "0 root")
    else:
        assert answer == {"ok": False,
                          "error": "user: 'root' is root, which this host's policy does not "
                                   "allow"}  # fmt: skip
    answer, printed = run_as(host, None, "meso-root_t_0_2", sandbox={"dynamic_user": False})
    assert (printed.split()[:1] == ["0"]) is allowed  # uid 0: root, where it is allowed
    assert (answer.get("ok") is False) is not allowed


def test_allow_listed_users_run_and_others_are_refused(host):
    answer, printed = run_as(host, "www-data", "meso-users_t_0_1")
    assert (answer["state"], printed) == ("finished", "33 www-data")
    answer, _ = run_as(host, "nobody", "meso-users_t_0_2")
    assert answer["error"] == (
        "user: 'nobody' is not allowed on this host (a DynamicUser, or one of: www-data)"
    )
    answer, printed = run_as(host, None, "meso-users_t_0_3")  # the default: a DynamicUser
    uid, name = printed.split()
    assert answer["state"] == "finished" and name == "meso-users_t_0_3"
    assert 61184 <= int(uid) <= 65519  # systemd's range for dynamic users
