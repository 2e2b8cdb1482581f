"""The node's own policy: what a launch request may ask, decided on the host (pure parts), the
policy file's checks, and what the controller sends to hosts without the role."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meso_agentless.core import resources
from meso_agentless.hosts.launching import NODE_POLICY
from meso_agentless.node import NODE_COMMAND, nodecmd

USERS = {"root": (0, 0), "toor": (0, 0), "wheel": (1000, 0), "nobody": (65534, 65534),
         "www-data": (33, 33), "app": (1001, 1001)}.get  # fmt: skip
BASE = {"unit": "meso-j_t_0_1", "argv": ["true"]}


def plan(request: dict, policy: dict | None = None) -> tuple[list[str], dict]:
    return nodecmd.plan_launch({**BASE, **request}, policy or nodecmd.parse_policy({}), USERS)


def refused(request: dict, policy: dict | None = None) -> str:
    with pytest.raises(nodecmd.RequestError) as caught:
        plan(request, policy)
    return str(caught.value)


def test_the_state_sets_are_the_ones_the_controller_uses():
    holds, ended = nodecmd.HOLDS_RESOURCES, nodecmd.ENDED
    assert holds == frozenset({"staging", "running"})
    assert ended == frozenset({"finished", "failed", "killed"})


def test_defaults_without_a_policy_file():
    policy = nodecmd.parse_policy({})
    assert policy == {
        "allow_root": False, "task_users": [],
        "sandbox_minimum": {"dynamic_user": False, "no_new_privileges": True,
                            "private_tmp": True, "protect_system": "full"},
        "default_limits": {"cpus": 100, "mem": 128 << 20, "tasks_max": 512},
        "max_tasks": 4096,
        "capacity": {"cpus": None, "mem": None}, "reserve": {"cpus": 0, "mem": 0},
    }  # fmt: skip


def test_a_request_without_limits_gets_the_policys_defaults_never_unlimited():
    argv, limits = plan({})
    assert limits == {"cpus": 100, "mem": 128 << 20, "tasks_max": 512}
    for prop in ("CPUQuota=10%", f"MemoryMax={128 << 20}", "MemorySwapMax=0", "TasksMax=512",
                 "DynamicUser=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectSystem=full", "ExitType=cgroup", "OOMPolicy=stop"):  # fmt: skip
        assert f"--property={prop}" in argv, prop
    operator = nodecmd.parse_policy({"default_limits": {"cpus": 2, "mem": "1GiB", "tasks_max": 64}})
    assert plan({}, operator)[1] == {"cpus": 2000, "mem": 1 << 30, "tasks_max": 64}
    assert plan({"cpus": 250, "mem": 64 << 20, "tasks_max": 8}, operator)[1] == {
        "cpus": 250, "mem": 64 << 20, "tasks_max": 8,
    }  # fmt: skip


def test_exit_type_cgroup_only_where_systemd_has_it():
    old = nodecmd.plan_launch(BASE, nodecmd.parse_policy({}), USERS, systemd=247)[0]
    assert "--property=ExitType=cgroup" not in old
    assert "--property=RemainAfterExit=yes" in old


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"user": "root"}, "user: 'root' is root, which this host's policy does not allow"),
        ({"user": "toor"}, "user: 'toor' is root"),  # uid 0 by another name
        ({"user": "wheel"}, "user: 'wheel' is root"),  # gid 0
        ({"sandbox": {"dynamic_user": False}}, "sandbox.dynamic_user: false without a user runs"),
        ({"user": "nobody"}, "user: 'nobody' is not allowed on this host"),
        ({"user": "ghost"}, "user: 'ghost' does not exist on this host"),
        ({"user": "root\n"}, "user: 'root\\n' is not a user name"),
        ({"user": 0}, "user: 0 is not a user name"),
        ({"sandbox": {"protect_system": "no"}}, "sandbox.protect_system: 'no' is looser"),
        ({"sandbox": {"protect_system": False}}, "sandbox.protect_system: False is looser"),
        ({"sandbox": {"private_tmp": False}}, "sandbox.private_tmp: False is looser"),
        ({"sandbox": {"no_new_privileges": False}}, "sandbox.no_new_privileges: False is looser"),
        ({"sandbox": {"no_new_privileges": "yes"}}, "sandbox.no_new_privileges: must be true"),
        ({"sandbox": {"privileged": True}}, "sandbox.privileged: unknown field"),
        ({"sandbox": []}, "sandbox: must be an object"),
        ({"tasks_max": 5000}, "tasks_max: 5000 is more than this host allows (4096)"),
        ({"cpus": 0}, "cpus: 0 is not a whole number"),
        ({"cpus": 1.5}, "cpus: 1.5 is not a whole number"),
        ({"mem": True}, "mem: True is not a whole number"),
        ({"mem": "1GiB"}, "mem: '1GiB' is not a whole number"),
        ({"unit": "meso-a_b_0_0\n"}, "unit: 'meso-a_b_0_0\\n' is not a meso unit name"),
        ({"unit": "meso-" + "a" * 300 + "_b_0_0"}, "is not a meso unit name"),
        ({"env": {"A\n": "x"}}, "env: 'A\\n' is not an environment variable name"),
        ({"env": {"A=B": "x"}}, "env: 'A=B' is not an environment variable name"),
        ({"env": {"A": "x\0y"}}, "env.A: must not contain NUL"),
        ({"env": {"A": 1}}, "env.A: must be a string, not 1"),
        ({"env": {"A": "x" * (128 << 10)}}, "env.A: is 131072 bytes, more than the 131060 a host"),
        ({"env": ["A=x"]}, "env: must be an object"),
        ({"argv": ["x" * (128 << 10)]}, "argv: [0] is 131072 bytes, more than the 131071"),
        ({"argv": ["$" * 70000]}, "argv: [0] is 140000 bytes"),  # "$$" on the command line
        ({"argv": ["a"] + ["y" * 100000] * 6}, "argv: with env the command line is"),
        ({"argv": ["", "x"]}, "argv: must not start with an empty program name"),
        ({"argv": "rm -rf /"}, "argv: must be a non-empty list of strings"),
        ({"cwd": "relative"}, "cwd: must be an absolute path"),
        ({"cwd": "/srv/../etc"}, "cwd: must not contain .."),
        ({"cwd": "/srv\n"}, "cwd: must not contain control characters"),
        ({"description": "two\nlines"}, "description: must be one line"),
        ({"restart": "sometimes"}, "restart: no, always or on-failure"),
        ({"capacity": {"cpus": -1}}, "capacity.cpus: -1 is not a whole number"),
        ({"capacity": {"disk": 1}}, "disk: unknown field"),
        ({"properties": {"ExecStartPre": "/bin/sh"}}, "properties: unknown field"),
    ],
)
def test_what_a_request_may_not_ask(request_, message):
    assert message in refused(request_)


def test_root_only_where_the_operator_allows_it():
    allowed = nodecmd.parse_policy({"allow_root": True})
    assert "--uid=root" in plan({"user": "root"}, allowed)[0]
    as_root = plan({"sandbox": {"dynamic_user": False}}, allowed)[0]
    assert not any(a.startswith(("--uid", "--property=DynamicUser")) for a in as_root)
    assert "--property=ProtectSystem=full" in as_root  # the sandbox minimum still holds


def test_allow_listed_users_and_a_sandbox_that_only_tightens():
    policy = nodecmd.parse_policy({"task_users": ["www-data", "app"]})
    assert "--uid=www-data" in plan({"user": "www-data"}, policy)[0]
    strict = plan({"sandbox": {"protect_system": "strict"}}, policy)[0]
    assert "--property=ProtectSystem=strict" in strict
    tight = nodecmd.parse_policy({"sandbox_minimum": {"protect_system": "strict"}})
    assert "--property=ProtectSystem=strict" in plan({}, tight)[0]  # omitted: the minimum
    assert "looser" in refused({"sandbox": {"protect_system": "full"}}, tight)
    dynamic_only = nodecmd.parse_policy({"task_users": ["app"],
                                         "sandbox_minimum": {"dynamic_user": True}})  # fmt: skip
    assert "only as a DynamicUser" in refused({"user": "app"}, dynamic_only)
    lenient = nodecmd.parse_policy({"sandbox_minimum": {"private_tmp": False,
                                                        "protect_system": "no"}})  # fmt: skip
    relaxed = plan({"sandbox": {"private_tmp": False, "protect_system": "no"}}, lenient)[0]
    assert not any("PrivateTmp" in a or "ProtectSystem" in a for a in relaxed)
    assert "--property=PrivateTmp=yes" in plan({}, lenient)[0]  # the default, unless asked


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "policy: must be a JSON object"),
        ({"allow_root": "yes"}, "allow_root: must be true or false"),
        ({"task_users": "app"}, "task_users: must be a list"),
        ({"task_users": ["app\n"]}, "task_users: 'app\\n' is not a user name"),
        ({"sandbox_minimum": {"protect_system": "very"}}, "sandbox_minimum.protect_system: no,"),
        ({"sandbox_minimum": {"seccomp": True}}, "seccomp: unknown field"),
        ({"default_limits": {"cpus": 0}}, "default_limits.cpus: must be more than 0"),
        ({"default_limits": {"cpus": "1e999999"}}, "default_limits.cpus: '1e999999' is absurdly"),
        ({"default_limits": {"mem": "lots"}}, "default_limits.mem: 'lots' is not a size"),
        ({"default_limits": {"mem": 1000}}, "default_limits.mem: must be at least 1MiB"),
        ({"default_limits": {"tasks_max": None}}, "tasks_max: None is not a whole number"),
        ({"capacity": {"cpus": -2}}, "capacity.cpus: -2 must be a finite number, not negative"),
        ({"reserve": {"mem": None}}, "reserve.mem: None is not a number"),
        ({"max_tasks": 0}, "max_tasks: 0 is not a whole number"),
        ({"version": 2}, "version: 2 is not a policy version"),
        ({"users": []}, "users: unknown field"),
    ],
)
def test_a_bad_policy_names_the_field(data, message):
    with pytest.raises(nodecmd.PolicyError, match=None) as caught:
        nodecmd.parse_policy(data)
    assert message in str(caught.value)


def test_a_connection_can_tighten_the_policy_and_never_loosen_it():
    operator = nodecmd.parse_policy({
        "allow_root": True, "task_users": ["app", "www-data"],
        "sandbox_minimum": {"protect_system": "yes", "private_tmp": False},
        "default_limits": {"cpus": 1, "mem": "1GiB", "tasks_max": 100},
        "capacity": {"cpus": 8, "mem": "16GiB"}, "reserve": {"mem": "1GiB"},
    })  # fmt: skip
    loosen = nodecmd.parse_policy({
        "allow_root": True, "task_users": ["app", "root", "nobody"],
        "sandbox_minimum": {"protect_system": "no", "no_new_privileges": False,
                            "dynamic_user": False, "private_tmp": False},
        "default_limits": {"cpus": 64, "mem": "1TiB", "tasks_max": 10**6}, "max_tasks": 10**6,
        "capacity": {"cpus": 1000, "mem": "1000TiB"}, "reserve": {"cpus": 0, "mem": 0},
    }, partial=True)  # fmt: skip
    assert nodecmd.tighten(operator, loosen) == {
        **operator,
        "task_users": ["app"],
        "cap": {"cpus": 1_000_000, "mem": 1000 << 40},
    }  # a cap above the host's own changes nothing
    assert nodecmd.node_capacity(nodecmd.tighten(operator, loosen), {}) == {
        "cpus": 8000, "mem": 15 << 30,
    }  # fmt: skip
    tightened = nodecmd.tighten(operator, nodecmd.parse_policy(NODE_POLICY, partial=True))
    assert tightened["allow_root"] is False
    assert tightened["task_users"] == ["app", "www-data"]  # the controller names no users
    assert tightened["sandbox_minimum"] == nodecmd.parse_policy({})["sandbox_minimum"]
    assert tightened["default_limits"] == {"cpus": 100, "mem": 128 << 20, "tasks_max": 100}
    capped = nodecmd.tighten(operator, nodecmd.parse_policy({"capacity": {"cpus": 2}}, True))
    assert nodecmd.node_capacity(capped, {})["cpus"] == 2000


def test_admission_capacity_is_the_hosts_own():
    measured = {"cpus": 4000, "mem": 8 << 30}
    assert nodecmd.node_capacity(nodecmd.parse_policy({}), measured) == measured
    reserved = nodecmd.parse_policy({"reserve": {"cpus": 0.5, "mem": "1GiB"}})
    assert nodecmd.node_capacity(reserved, measured) == {"cpus": 3500, "mem": 7 << 30}
    declared = nodecmd.parse_policy({"capacity": {"cpus": 16}, "reserve": {"cpus": 1}})
    assert nodecmd.node_capacity(declared, measured) == {"cpus": 15000, "mem": 8 << 30}


SIZES = st.one_of(
    st.integers(min_value=-10, max_value=1 << 62),
    st.floats(allow_nan=True, allow_infinity=True),
    st.from_regex(r"\s?[0-9]{1,4}(\.[0-9]{1,3})?\s?(|b|k|K|kb|m|M|Mi|MiB|g|Gi|GiB|t|Ti|TiB|x|mm)",
                  fullmatch=True),
    st.text(max_size=12),
    st.booleans(),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(value=SIZES)
def test_the_node_reads_sizes_and_cpus_as_the_package_does(value):
    for node_parse, core_parse in ((nodecmd.parse_size, resources.parse_size),
                                   (nodecmd.parse_cpus, resources.parse_cpus)):  # fmt: skip
        try:
            expected = core_parse(value, "x")
        except (ValueError, ArithmeticError):
            expected = None
        try:
            got = node_parse(value, "x")
        except nodecmd.RequestError:
            got = None
        assert got == expected, (node_parse.__name__, value)


def write_policy(tmp_path, data, mode=0o644):
    path = tmp_path / "node-policy.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    path.chmod(mode)
    tmp_path.chmod(0o755)
    return str(path)


def test_the_policy_file_is_read_and_must_be_roots_alone(tmp_path):
    assert nodecmd.load_policy(str(tmp_path / "none.json"))[1] == "built-in defaults"
    path = write_policy(tmp_path, {"allow_root": True, "task_users": ["app"]})
    policy, source = nodecmd.load_policy(path)
    assert (policy["allow_root"], policy["task_users"], source) == (True, ["app"], path)
    os.chmod(path, 0o664)  # group-writable
    with pytest.raises(nodecmd.PolicyError, match="must be owned by root and writable by root"):
        nodecmd.load_policy(path)
    os.chmod(path, 0o644)
    tmp_path.chmod(0o777)
    with pytest.raises(nodecmd.PolicyError, match="the directory must be owned by root"):
        nodecmd.load_policy(path)
    tmp_path.chmod(0o755)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(nodecmd.PolicyError, match=r"link\.json"):
        nodecmd.load_policy(str(link))
    for text, message in (("{", "not JSON"), ('{"allow_root": 1}', "allow_root: must be"),
                          ("[" * 5000, "nested too deep"), ("\xff", "not JSON"),
                          ('{"a": 1, "a": 2}', "a: given twice"),
                          ("{}" + " " * (64 << 10), "more than 65536 bytes")):  # fmt: skip
        write_policy(tmp_path, text)
        with pytest.raises(nodecmd.PolicyError, match=message):
            nodecmd.load_policy(path)


def test_check_policy_validates_a_file_as_the_role_installs_it(tmp_path):
    good = write_policy(tmp_path, {"default_limits": {"mem": "256MiB"}})
    done = subprocess.run([sys.executable, str(NODE_COMMAND), "check-policy", good],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["policy"]["default_limits"]["mem"] == 256 << 20
    bad = write_policy(tmp_path, {"default_limits": {"mem": "256 apples"}})
    done = subprocess.run([sys.executable, str(NODE_COMMAND), "check-policy", bad],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "default_limits.mem: '256 apples' is not a size" in json.loads(done.stdout)["error"]


def test_a_unit_whose_main_process_exited_runs_while_its_cgroup_is_populated(monkeypatch):
    exited = {"Id": "meso-j_t_0_1.service", "LoadState": "loaded", "ActiveState": "active",
              "SubState": "exited", "Result": "success", "ExecMainCode": "1",
              "ExecMainStatus": "0", "ControlGroup": "/system.slice/x.service"}  # fmt: skip
    monkeypatch.setattr(nodecmd, "cgroup_populated", lambda cgroup: True)
    assert nodecmd._state(exited)["state"] == "running"
    monkeypatch.setattr(nodecmd, "cgroup_populated", lambda cgroup: False)
    assert nodecmd._state(exited)["state"] == "finished"
    assert nodecmd.parse_populated("populated 1\nfrozen 0\n") is True
    assert nodecmd.parse_populated("populated 0\nfrozen 0\n") is False
    assert nodecmd.parse_populated("") is None
