"""Unit names, task states from real `systemctl show` output, launch requests, admission,
and reconciliation (all pure)."""

from pathlib import Path

import pytest

from meso_agentless.core.model import Placement
from meso_agentless.core.tasks import HostReport, parse_unit_name, reconcile, unit_name
from meso_agentless.hosts.launching import launch_request
from meso_agentless.node import nodecmd
from meso_agentless.spec import Task

FIXTURES = Path(__file__).parents[1] / "fixtures" / "node"


def state_of(name: str) -> dict:
    return nodecmd.task_state(nodecmd.parse_show((FIXTURES / f"show-{name}.txt").read_text())[0])


@pytest.mark.parametrize(
    ("fixture", "state", "exit_code", "signal", "reason"),
    [
        ("running", "running", None, None, None),
        ("finished", "finished", 0, None, None),
        ("exit3", "failed", 3, None, None),
        ("killed", "killed", None, 9, None),
        ("timeout", "failed", None, 15, "timed out"),
        ("notfound", "unknown", None, None, None),
    ],
)
def test_task_states_from_real_units(fixture, state, exit_code, signal, reason):
    got = state_of(fixture)
    assert (got["state"], got["exit_code"], got["signal"], got["reason"]) == (
        state, exit_code, signal, reason,
    )  # fmt: skip


def test_oom_kill_is_a_reason():
    props = {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
             "Result": "oom-kill", "ExecMainCode": "2", "ExecMainStatus": "9"}  # fmt: skip
    assert nodecmd.task_state(props)["reason"] == "oom-killed"


def test_unit_names_are_unambiguous_and_checked_by_the_node():
    assert unit_name("a-b", "c", 0, 1) != unit_name("a", "b-c", 0, 1)
    assert parse_unit_name(unit_name("word-count", "map", 3, 2) + ".service") == (
        "word-count", "map", 3, 2,
    )  # fmt: skip
    assert parse_unit_name("sshd.service") is None
    nodecmd.check_unit(unit_name("web", "server", 0, 1))
    for bad in ("meso-x", "ssh", "meso-a_b_c_d", "meso-a_b_0_1;rm", "../meso-a_b_0_1", 7):
        with pytest.raises(nodecmd.RequestError, match="not a meso unit name"):
            nodecmd.check_unit(bad)


def test_launch_request_becomes_systemd_run_argv_with_limits_and_sandbox():
    task = Task(name="t", command=["python3", "-c", "print(1)"], env={"A": "x y;$(id)"},
                timeout="10m", resources={"cpus": 1.5, "mem": "256MiB"})  # fmt: skip
    placement = Placement("j", "t", 2, "f", "h1", {"cpus": 1500, "mem": 256 << 20}, (31000,))
    request = launch_request(task, placement, attempt=1, capacity={"cpus": 4000, "mem": 8 << 30})
    argv = nodecmd.run_argv(request)
    assert argv[:2] == ["systemd-run", "--unit=meso-j_t_2_1"]
    assert argv[argv.index("--") + 1 :] == ["python3", "-c", "print(1)"]
    dollars = nodecmd.run_argv({**request, "argv": ["echo", "$HOME", "${X}", "$"]})
    assert dollars[dollars.index("--") + 1 :] == ["echo", "$$HOME", "$${X}", "$$"]
    for expected in ("--property=CPUQuota=150%", f"--property=MemoryMax={256 << 20}",
                     "--property=MemorySwapMax=0", "--property=TasksMax=512",
                     "--property=RuntimeMaxSec=600", "--property=RemainAfterExit=yes",
                     "--property=DynamicUser=yes", "--property=NoNewPrivileges=yes",
                     "--property=PrivateTmp=yes", "--property=ProtectSystem=full",
                     "--setenv=A=x y;$(id)", "--setenv=MESO_PORT0=31000",
                     "--setenv=MESO_INDEX=2", "--setenv=MESO_HOST=h1"):  # fmt: skip
        assert expected in argv
    # relaxing the sandbox, or naming a user, takes a host whose policy allows it
    sandbox = {"protect_system": "no", "private_tmp": False}
    lenient = nodecmd.parse_policy({"task_users": ["nobody"], "sandbox_minimum": sandbox})
    relaxed = nodecmd.run_argv({**request, "user": "nobody", "sandbox": sandbox}, lenient,
                               lookup_user={"nobody": (65534, 65534)}.get)  # fmt: skip
    assert "--uid=nobody" in relaxed and "--property=DynamicUser=yes" not in relaxed
    assert not any("ProtectSystem" in a or "PrivateTmp" in a for a in relaxed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"argv": "rm -rf /"}, "argv: must be a non-empty list"),
        ({"argv": []}, "argv: must be a non-empty list"),
        ({"argv": ["a\0b"]}, "NUL"),
        ({"env": {"BAD-NAME": "x"}}, "env: 'BAD-NAME'"),
        ({"user": "root; id"}, "user:"),
        ({"cwd": "relative"}, "cwd: must be an absolute path"),
        ({"cpus": -5}, "cpus: -5 is not a whole number"),
        ({"properties": {"ExecStartPre": "/bin/sh"}}, "properties: unknown field"),
        ({"sandbox": {"privileged": True}}, "sandbox.privileged: unknown field"),
    ],
)
def test_launch_requests_are_validated_field_by_field(change, message):
    base = {"unit": "meso-j_t_0_1", "argv": ["true"]}
    with pytest.raises(nodecmd.RequestError, match=message.replace("(", r"\(")):
        nodecmd.run_argv({**base, **change})


def test_admission_counts_units_that_hold_resources():
    units = [
        {"state": "running", "millicpus": 1500, "memory_max": 1 << 30},
        {"state": "staging", "millicpus": None, "memory_max": None},  # no limits: counts 0
        {"state": "finished", "millicpus": 2000, "memory_max": 1 << 30},  # ended
        {"state": "failed", "millicpus": 2000, "memory_max": None},  # ended
    ]
    capacity = {"cpus": 2000, "mem": 4 << 30}
    assert nodecmd.admission_error(units, {"cpus": 500, "mem": 1 << 30}, capacity) is None
    too_much = nodecmd.admission_error(units, {"cpus": 501, "mem": 1 << 30}, capacity)
    assert too_much == "admission: cpus would exceed the host's capacity (1500 held + 501 > 2000)"


def test_reconcile_tells_unreachable_gone_missing_and_unknown():
    expected = {"meso-a_t_0_1": "h1", "meso-b_t_0_1": "h2", "meso-c_t_0_1": "h3",
                "meso-d_t_0_1": "h1"}  # fmt: skip
    reports = {
        "h1": HostReport(
            "boot-1", {"meso-a_t_0_1": {"state": "running"}, "meso-z_t_0_1": {"state": "running"}}
        ),
        "h2": None,
        "h3": HostReport("boot-3b", {}),
    }
    result = reconcile(expected, reports, {"h1": "boot-1", "h3": "boot-3a"})
    assert {u: s.state for u, s in result.states.items()} == {
        "meso-a_t_0_1": "running",
        "meso-b_t_0_1": "unreachable",
        "meso-c_t_0_1": "gone",
        "meso-d_t_0_1": "missing",
    }
    assert result.unknown == [("h1", "meso-z_t_0_1")]
    assert result.boots == {"h1": "boot-1", "h3": "boot-3b"}
