"""Launching over systemd's private D-Bus socket on real hosts: the same units as systemd-run
makes from the same argv, idempotence, systemd's refusals, a connection broken mid-session
(daemon-reexec), a node that is not root, and a host restarted while connected."""

import json
import re

import pytest

from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts import ssh
from meso_agentless.hosts.plane import ExecutionPlane, Unreachable
from meso_agentless.inventory import load_inventory
from meso_agentless.node import node_command_source
from tests.conftest import LAB
from tests.lab.common import wait_for

pytestmark = pytest.mark.lab

HOST = f"{LAB}-2"
# a policy under which every launch option can be asked (the node's own checks stay)
POLICY = {"allow_root": True, "task_users": ["nobody"],
          "sandbox_minimum": {"no_new_privileges": False, "private_tmp": False,
                              "protect_system": "no"},
          "devices": {"gpu": ["/dev/zero", "/dev/full"]}}  # fmt: skip
# what systemctl shows of every property plan_launch and pin_argv set
SHOWN = ("Description", "Type", "CPUQuotaPerSecUSec", "MemoryMax", "MemorySwapMax", "MemoryHigh",
         "TasksMax", "IOWeight", "RuntimeMaxUSec", "TimeoutStopUSec", "RemainAfterExit",
         "Restart", "RestartUSec", "ExitType", "NoNewPrivileges", "PrivateTmp", "ProtectSystem",
         "DynamicUser", "User", "Group", "WorkingDirectory", "Environment", "OOMPolicy",
         "AllowedCPUs", "AllowedMemoryNodes", "DevicePolicy", "DeviceAllow", "ExecStart",
         "Result", "ExecMainStatus", "ActiveState", "SubState")  # fmt: skip
# prints what it was given (argv, its T_ variables, cwd) and exits 3
PRINT = ("import json, os, sys; print(json.dumps([sys.argv[1:], sorted((k, v) for k, v in "
         "os.environ.items() if k.startswith('T_')), os.getcwd()])); sys.exit(3)")  # fmt: skip
ODD = ["a b", "$HOME", "${T_ODD}", "'q\"", "ünï©ødé", "$$", "\\", "%n", "-x", "--"]
ENV = {"T_ODD": "x $y ${z} 'q' \"w\" ü \\ $$ %n", "T_SPACE": "a  b ", "T_EMPTY": ""}
REQUESTS = [
    {},
    {"cpus": 1500, "mem": 64 << 20, "tasks_max": 32, "runtime_sec": 100, "grace_sec": 3,
     "mem_soft": 32 << 20, "io_weight": 200, "env": ENV, "cwd": "/usr"},
    {"user": "nobody", "sandbox": {"dynamic_user": False, "no_new_privileges": False,
                                   "private_tmp": False, "protect_system": "no"}},
    {"sandbox": {"dynamic_user": False, "protect_system": "strict"}, "cwd": "/etc", "env": ENV,
     "cpus": 15},
    {"cpuset": [1], "numa": 0, "devices": {"gpu": ["/dev/zero"]}, "cpus": 1000},
    {"restart": "always", "argv": ["sleep", "60"]},
    {"restart": "on-failure", "argv": ["sleep", "60"], "runtime_sec": 50},
]  # fmt: skip

# The node command's own code, loaded on the host as `ns`, the test's policy in force.
PRELUDE = """
import os, subprocess, sys, time
ns = {"__name__": "nodecmd"}
exec(compile(SOURCE, "nodecmd", "exec"), ns)
policy = ns["parse_policy"](DATA["policy"])
ns["load_policy"] = lambda path=None: (policy, "test")
def ended(unit):
    while True:
        state = ns["status"]({"unit": unit})
        if state["state"] in ("finished", "failed", "killed"):
            return state
        time.sleep(0.1)
"""

COMPARE = """
out, bus, old = [], ns["Session"](systemd_bus=True), ns["Session"]()
for request, (one, two) in zip(DATA["requests"], DATA["units"]):
    pair = []
    for session, unit in ((bus, one), (old, two)):
        reply = ns["answer"]("launch", {**request, "unit": unit}, session)
        if "restart" not in request:
            ended(unit)  # a dedicated core is free again once its holder ended
        pair.append(reply)
    pair.append(ns["answer"]("launch", {**request, "unit": one}, bus))  # again: idempotent
    out.append(pair)
# systemd-run looks the program up itself and refuses a relative path; without that lookup
# (only here) the unit goes to systemd, which refuses it
bad = {"argv": ["bin/true"]}
rejected = [ns["answer"]("launch", {**bad, "unit": DATA["rejected"][1]}, old)]
translate = ns["transient_properties"]
ns["transient_properties"] = lambda argv: translate(argv, lambda name: name)
rejected.insert(0, ns["answer"]("launch", {**bad, "unit": DATA["rejected"][0]}, bus))
print(json.dumps({"replies": out, "rejected": rejected,
                  "dbus": bus.bus is not None and not bus.bus.broken, "old": old.bus}))
"""


def on_host(lab, host: str, script: str, data: dict, argv: tuple[str, ...] = ()) -> dict:
    """Run `script` with the node command loaded on `host` (as root, or under `argv`)."""
    data = json.dumps({"policy": POLICY, **data})
    program = (f"import json\nSOURCE = {node_command_source().decode()!r}\n"
               f"DATA = json.loads({data!r})\n{PRELUDE}{script}")  # fmt: skip
    client = lab.connect(host)
    try:
        done = ssh.run_argv(client, [*argv, "python3", "-"], timeout=120, stdin=program.encode())
    finally:
        client.close()
    assert done.ok, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def show(lab, host: str, units: list[str]) -> list[dict[str, str]]:
    shown = lab.run(host, ["systemctl", "show", "-p", ",".join(SHOWN), *units]).stdout
    blocks = []
    for unit, block in zip(units, shown.strip().split("\n\n"), strict=True):
        # a DynamicUser is named after its unit
        props = {
            k: v.replace(unit, "UNIT") for k, v in (x.split("=", 1) for x in block.splitlines())
        }
        # a command's start and end times and pid differ: its path and argv must not
        command = re.search(
            r"path=.* ; argv\[\]=.* ; ignore_errors=\w+", props.get("ExecStart", "")
        )
        props["ExecStart"] = command and command.group()
        blocks.append(props)
    return blocks


def journal(lab, host: str, unit: str) -> list[str]:
    return lab.run(host, ["journalctl", f"_SYSTEMD_UNIT={unit}.service", "-o", "cat"]).stdout


_counter = iter(range(1, 10**9))


def fresh(job: str = "dbus") -> str:
    return unit_name(job, "task", next(_counter), 1)


def test_dbus_and_systemd_run_make_the_same_units_from_the_same_argv(meso_lab):
    requests = [{"argv": ["python3", "-c", PRINT, *ODD], "description": f"case {i}", **r}
                for i, r in enumerate(REQUESTS)]  # fmt: skip
    units = [(fresh(), fresh("old")) for _ in requests]
    rejected = [fresh("bad"), fresh("bad")]
    got = on_host(meso_lab, HOST, COMPARE,
                  {"requests": requests, "units": units, "rejected": rejected})  # fmt: skip
    assert got["dbus"] and got["old"] is None  # one went over D-Bus, the other by systemd-run
    for request, (one, two), (first, second, again) in zip(
        requests, units, got["replies"], strict=True
    ):
        assert first["ok"] and second["ok"], (first, second)
        assert first["existed"] is second["existed"] is False
        assert again["ok"] and again["existed"] is True  # launched once only
        dbus, old = show(meso_lab, HOST, [one, two])
        assert dbus == old, request
        if "restart" not in request:
            assert (dbus["Result"], dbus["ExecMainStatus"]) == ("exit-code", "3")
            printed = journal(meso_lab, HOST, one)
            assert printed == journal(meso_lab, HOST, two)
            line = json.loads(next(x for x in printed.splitlines() if x.startswith("[[")))
            assert line[0] == ODD
            assert dict(line[1]) == {k: v for k, v in request.get("env", {}).items()}
        else:
            assert dbus["ActiveState"] == "active" and dbus["Restart"] == request["restart"]
        meso_lab.run(HOST, ["systemctl", "stop", f"{one}.service", f"{two}.service"])
    limits = show(meso_lab, HOST, [units[1][0]])[0]
    assert (limits["CPUQuotaPerSecUSec"], limits["MemoryHigh"], limits["IOWeight"]) == (
        "1.500000s", str(32 << 20), "200")  # fmt: skip
    pinned = show(meso_lab, HOST, [units[4][0]])[0]
    assert (pinned["AllowedCPUs"], pinned["DevicePolicy"]) == ("1", "closed")
    assert pinned["DeviceAllow"] == "/dev/zero rw"
    # a relative program path with a slash: refused by systemd (its D-Bus error named) and by
    # systemd-run; nothing runs, and the connection stays
    by_systemd, by_systemd_run = (reply["error"] for reply in got["rejected"])
    assert by_systemd == (
        'systemd failed: "bin/true" is neither a valid executable name nor an absolute path '
        "(org.freedesktop.DBus.Error.InvalidArgs)"
    )
    assert by_systemd_run.startswith("systemd-run failed: Failed to find executable bin/true")
    for unit in rejected:
        assert show(meso_lab, HOST, [unit])[0]["ActiveState"] == "inactive"


RECONNECT = """
session = ns["Session"](systemd_bus=True)
replies = [ns["answer"]("launch", {"unit": DATA["units"][0], "argv": ["true"]}, session)]
first = session.bus
subprocess.run(["systemctl", "daemon-reexec"], check=True)  # closes systemd's connections
for unit in DATA["units"][1:]:
    replies.append(ns["answer"]("launch", {"unit": unit, "argv": ["true"]}, session))
time.sleep(ns["BUS_RETRY"])  # a connect refused while systemd came back is tried again
again = session.systemd_bus()
print(json.dumps({"replies": replies, "first": first is not None,
                  "reconnected": again is not None and again is not first and not again.broken}))
"""


def test_a_connection_broken_by_daemon_reexec_is_opened_again(meso_lab):
    units = [fresh() for _ in range(3)]
    got = on_host(meso_lab, HOST, RECONNECT, {"units": units})
    assert got["first"] and got["reconnected"]
    for reply in got["replies"]:
        assert reply["ok"] and reply["state"] in ("running", "finished"), reply
    for unit in units:
        assert show(meso_lab, HOST, [unit])[0]["Result"] == "success"


def test_a_warm_node_launches_on_after_daemon_reexec(meso_lab):
    plane = ExecutionPlane(load_inventory(str(meso_lab.inventory)).nodes, timeout=15)
    try:
        before, after, later = fresh(), fresh(), fresh()
        assert plane.launch(HOST, {"unit": before, "argv": ["true"]})["existed"] is False
        meso_lab.run(HOST, ["systemctl", "daemon-reexec"])
        assert plane.launch(HOST, {"unit": after, "argv": ["true"]})["existed"] is False
        assert plane.launch(HOST, {"unit": later, "argv": ["true"]})["existed"] is False
        assert plane.launch(HOST, {"unit": later, "argv": ["true"]})["existed"] is True
        for unit in (before, after, later):
            assert show(meso_lab, HOST, [unit])[0]["Result"] == "success"
    finally:
        plane.close()


NOT_ROOT = """
for name in ("STATE_DIR", "LEDGER", "PINNED_FILE"):
    ns[name] = "/tmp/not-root" + ns[name]
session = ns["Session"](systemd_bus=True)
bus = session.systemd_bus()
reply = ns["answer"]("launch", {"unit": DATA["unit"], "argv": ["true"]}, session)
print(json.dumps({"uid": os.geteuid(), "bus": bus is not None, "tries": session.use_bus,
                  "reply": reply}))
"""


def test_a_node_that_is_not_root_runs_systemd_run_as_before(meso_lab):
    unit = fresh()
    meso_lab.run(HOST, ["install", "-d", "-o", "nobody", "/tmp/not-root/run/meso-node"])
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    got = on_host(meso_lab, HOST, NOT_ROOT, {"unit": unit}, argv=nobody)
    assert got["uid"] != 0 and not got["bus"] and not got["tries"]
    # systemd-run, as before: it is what refuses an unprivileged caller (no polkit agent)
    assert not got["reply"]["ok"] and got["reply"]["error"].startswith("systemd-run failed:")
    assert show(meso_lab, HOST, [unit])[0]["ActiveState"] == "inactive"


def test_a_host_restarted_while_connected_takes_launches_after(meso_lab):
    host = f"{LAB}-3"
    plane = ExecutionPlane(load_inventory(str(meso_lab.inventory)).nodes, timeout=15)
    try:
        first = fresh()
        assert plane.launch(host, {"unit": first, "argv": ["sleep", "300"]})["existed"] is False
        meso_lab.restart(host)

        def launched():
            try:
                return plane.launch(host, {"unit": fresh(), "argv": ["true"]})
            except Unreachable:
                return None

        reply = wait_for(launched, timeout=90)
        assert reply["existed"] is False and reply["state"] in ("running", "finished")
        assert plane.status(host, first)["state"] == "unknown"  # gone with the old boot
    finally:
        plane.close()
