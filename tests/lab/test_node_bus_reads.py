"""A warm node command reads its units over systemd's private socket (bus_listing): the same
listing as `systemctl list-units` + `systemctl show` give, unit for unit, for tasks in every
state; a unit read before is read again once it changed (a signal, or states that differ);
no process is started for it; and after `systemctl daemon-reexec` (its connection closed) or
`daemon-reload`, the states are read right again. Run on a host with the node's own code."""

import pytest

from tests.conftest import LAB
from tests.lab.common import wait_for
from tests.lab.test_dbus_launch import fresh, on_host

pytestmark = pytest.mark.lab

HOST = f"{LAB}-1"

# `session` samples over the bus; `by_systemctl()` is what systemctl says; both record what
# they asked: the processes the node started, the units it read over the bus
SETUP = """
started, read, recording = [], [], [False]
run, show = ns["_run"], ns["bus_show"]
def _run(argv):
    if recording[0]:
        started.append(argv[:2])
    return run(argv)
def bus_show(bus, path, wanted):
    read.append(path)
    return show(bus, path, wanted)
ns["_run"], ns["bus_show"] = _run, bus_show
session = ns["Session"](systemd_bus=True)
def sampled():
    recording[0] = True
    try:
        answer = ns["answer"]("sample", {}, session)
    finally:
        recording[0] = False
    assert answer["ok"], answer
    return answer
def mine(units):  # this test's units (other tests leave theirs on the host)
    return [u for u in units if u["unit"].startswith(DATA["prefix"])]
def by_systemctl():
    return mine(ns["units_report"](ns["_listing"](), {})["units"])
def same(what):
    started.clear(); read.clear()
    for _ in range(20):  # a unit may change between the two reads: read both again
        answer = sampled()
        if mine(answer["units"]) == by_systemctl():
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"{what}: {mine(answer['units'])} != {by_systemctl()}")
    read_here = sorted({p for p in read if p.startswith(ns["unit_path"](DATA["prefix"]))})
    return {"started": list(started), "read": read_here, "bus": session.bus is not None,
            "units": {u["unit"]: u["state"] for u in mine(answer["units"])}}
def launch(unit, **request):
    reply = ns["answer"]("launch", {"unit": unit, **request}, session)
    assert reply["ok"], reply
"""

EVERY_STATE = """
units = DATA["units"]
out = {"empty": same("no units")}  # systemd's version too, over the bus
out["systemd"] = [sampled()["systemd"], ns["_systemctl_version"]()]
launch(units[0], argv=["true"])
launch(units[1], argv=["sh", "-c", "exit 3"])
launch(units[2], argv=["sleep", "600"], cpus=1001, mem=64 << 20, tasks_max=17,
       description="a task é")
launch(units[3], argv=["sleep", "600"], runtime_sec=1)
launch(units[4], argv=["sleep", "600"])
launch(units[5], argv=["sh", "-c", "sleep 0.3; exit 1"], restart="always")
time.sleep(0.5)
subprocess.run(["systemctl", "kill", "--signal=KILL", units[4] + ".service"], check=True)
time.sleep(1.5)
out["all"] = same("every state")
ns["answer"]("stop", {"unit": units[5]}, session)
out["again"] = same("nothing changed but the restarting unit, stopped")
out["kept"] = same("nothing changed")
subprocess.run(["systemctl", "kill", "--signal=KILL", units[2] + ".service"], check=True)
time.sleep(0.5)
out["killed"] = same("one killed")
names = units + [DATA["never"]]  # and one never launched
out["statuses"] = ns["unit_statuses"](names, session.systemd_bus()) == ns["unit_statuses"](names)
started.clear(); recording[0] = True
forgot = ns["answer"]("forget", {"units": units}, session)
recording[0] = False
out["forgot"], out["forget_started"] = forgot["ok"], list(started)
out["none"] = same("all forgotten")
print(json.dumps(out))
"""


def test_a_warm_sample_reads_every_state_over_the_bus_as_systemctl_shows_it(meso_lab):
    units = [fresh("busr") for _ in range(6)]
    got = on_host(
        meso_lab,
        HOST,
        SETUP + EVERY_STATE,
        {"units": units, "never": fresh(), "prefix": "meso-busr_"},
    )
    states = {u.removesuffix(".service"): s for u, s in got["all"]["units"].items()}
    assert [states.get(u) for u in units] == [
        "finished", "failed", "running", "failed", "killed", states.get(units[5])
    ]  # fmt: skip
    assert states[units[5]] in ("running", "staging", "failed")  # restarting, as it goes
    assert got["systemd"][0] == got["systemd"][1] >= 252  # as `systemctl --version` says
    for step in ("empty", "all", "again", "killed", "none"):
        assert got[step]["bus"] and got[step]["started"] == [], step  # no process started
    # each unit read once it changed (one that ended while a later launch's admission read it
    # may have been read then), the others kept: the killed one alone
    assert got["all"]["read"] and set(got["all"]["read"]) <= {path(u) for u in units}
    assert got["kept"]["read"] == []
    assert got["killed"]["read"] == [path(units[2])]
    # forgotten over the bus too: the same statuses as systemctl's, no process started
    assert got["statuses"] and got["forgot"] and got["forget_started"] == []
    assert got["none"]["units"] == {}


REEXEC = """
units = DATA["units"]
launch(units[0], argv=["sleep", "600"])
launch(units[1], argv=["sleep", "600"])
out = {"before": same("before")}
first = session.bus
subprocess.run(["systemctl", "daemon-reexec"], check=True)  # closes systemd's connections
subprocess.run(["systemctl", "kill", "--signal=KILL", units[0] + ".service"], check=True)
time.sleep(0.5)
out["after"] = same("after daemon-reexec")  # systemctl this time, or a new connection
time.sleep(ns["BUS_RETRY"])
subprocess.run(["systemctl", "kill", "--signal=KILL", units[1] + ".service"], check=True)
time.sleep(0.5)
out["later"] = same("later")
out["new"] = session.bus is not None and session.bus is not first and not session.bus.broken
subprocess.run(["systemctl", "daemon-reload"], check=True)
launch(units[2], argv=["true"])
time.sleep(0.5)
out["reloaded"] = same("after daemon-reload")
subprocess.run(["systemctl", "daemon-reexec"], check=True)  # and a forget on the closed one
out["forgot"] = ns["answer"]("forget", {"units": units}, session)
out["left"] = same("forgotten after daemon-reexec")
print(json.dumps(out))
"""


def test_a_warm_node_reads_right_after_daemon_reexec_and_daemon_reload(meso_lab):
    units = [fresh("busx") for _ in range(3)]
    got = on_host(meso_lab, HOST, SETUP + REEXEC, {"units": units, "prefix": "meso-busx_"})
    names = [f"{u}.service" for u in units]
    assert got["before"]["units"] == {names[0]: "running", names[1]: "running"}
    assert got["after"]["units"] == {names[0]: "killed", names[1]: "running"}
    assert got["later"]["units"] == {names[0]: "killed", names[1]: "killed"}
    assert got["new"] and got["later"]["started"] == []  # a new connection, and over it
    # after a reload every unit is read anew
    assert got["reloaded"]["units"][names[2]] == "finished"
    assert got["reloaded"]["read"] == sorted(map(path, units))
    assert got["forgot"]["ok"] and got["left"]["units"] == {}
    assert [got["forgot"]["units"][u]["state"] for u in units] == ["killed", "killed", "finished"]


def path(unit: str) -> str:
    """A service's object path, as systemd escapes its name."""
    name = f"{unit}.service"
    escaped = "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in name)
    return f"/org/freedesktop/systemd1/unit/{escaped}"


NOT_ROOT = """
session = ns["Session"](systemd_bus=True)
answer = ns["answer"]("sample", {}, session)
print(json.dumps({"ok": answer["ok"], "bus": session.bus is not None, "units": answer["units"],
                  "listed": ns["units_report"](ns["_listing"](), {})["units"]}))
"""


def test_a_node_that_is_not_root_samples_by_systemctl_as_before(meso_lab):
    unit = fresh("busn")
    meso_lab.run(HOST, ["systemd-run", f"--unit={unit}", "--property=RemainAfterExit=yes",
                        "sleep", "600"])  # fmt: skip
    try:
        nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        got = on_host(meso_lab, HOST, NOT_ROOT, {}, argv=nobody)
        assert got["ok"] and not got["bus"]
        assert got["units"] == got["listed"]
        assert {u["unit"]: u["state"] for u in got["units"]}[f"{unit}.service"] == "running"
    finally:
        meso_lab.run(HOST, ["systemctl", "stop", f"{unit}.service"])
    wait_for(lambda: "inactive" in meso_lab.run(HOST, ["systemctl", "is-active", unit]).stdout)
