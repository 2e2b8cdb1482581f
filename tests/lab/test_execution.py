"""The execution plane on real hosts: launch, states, limits, logs, stop, injection safety,
host keys, cut-offs, reconciliation, restarts and racing controllers."""

import json
import threading
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.plane import EXPIRY_MARGIN, ExecutionPlane, Unreachable
from meso_agentless.hosts.transport import NodeRefused
from meso_agentless.inventory import load_inventory
from tests.conftest import LAB
from tests.lab.common import signal_node_commands

pytestmark = pytest.mark.lab

HOST = f"{LAB}-1"


@pytest.fixture(scope="module")
def plane(meso_lab):
    plane = ExecutionPlane(load_inventory(str(meso_lab.inventory)).nodes, timeout=15)
    yield plane
    plane.close()


_counter = iter(range(1, 10**9))


def fresh_unit(job="t") -> str:
    return unit_name(job, "task", next(_counter), 1)


def wait_state(plane, host, unit, states=("finished", "failed", "killed"), timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = plane.status(host, unit)
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{unit} still {status}")


def test_launch_finish_with_exit_codes_and_logs(plane):
    ok, bad = fresh_unit(), fresh_unit()
    assert plane.launch(HOST, {"unit": ok, "argv": ["sh", "-c", "echo hello; exit 0"]})[
        "state"
    ] in ("running", "finished")
    plane.launch(HOST, {"unit": bad, "argv": ["sh", "-c", "echo oops >&2; exit 3"]})
    assert wait_state(plane, HOST, ok)["state"] == "finished"
    failed = wait_state(plane, HOST, bad)
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    assert "hello" in b"".join(plane.logs(HOST, ok)).decode()
    assert "oops" in b"".join(plane.logs(HOST, bad)).decode()
    # the exit status outlives the task until the controller says it has stored it
    assert plane.forget(HOST, bad)["exit_code"] == 3
    assert plane.status(HOST, bad)["state"] == "unknown"


def test_ended_units_are_forgotten_together_and_a_running_one_is_left(plane):
    ended = [fresh_unit("many") for _ in range(3)]
    running = fresh_unit("many")
    for i, unit in enumerate(ended):
        plane.launch(HOST, {"unit": unit, "argv": ["sh", "-c", f"exit {i}"]})
    plane.launch(HOST, {"unit": running, "argv": ["sleep", "300"]})
    for unit in ended:
        wait_state(plane, HOST, unit)
    answer = plane.forget_many(HOST, [*ended, running])
    assert [answer[u]["exit_code"] for u in ended] == [0, 1, 2]
    assert "error" not in answer[ended[0]] and "stop it" in answer[running]["error"]
    assert [plane.status(HOST, u)["state"] for u in ended] == ["unknown"] * 3
    assert plane.status(HOST, running)["state"] == "running"
    plane.stop(HOST, running)
    assert "error" not in plane.forget_many(HOST, [running])[running]
    assert plane.status(HOST, running)["state"] == "unknown"
    for bad, field in (([], "units: must be a list"), (["ssh"], "units: 'ssh' is not a meso"),
                       ("meso-a_b_1_1", "units: must be a list")):  # fmt: skip
        with pytest.raises(NodeRefused, match=field):
            plane.host(HOST).request("forget", units=bad)


def test_limits_and_sandbox_show_in_systemd(plane, meso_lab):
    unit = fresh_unit()
    plane.launch(HOST, {"unit": unit, "argv": ["sleep", "60"], "cpus": 250, "mem": 64 << 20,
                        "tasks_max": 32, "runtime_sec": 120})  # fmt: skip
    shown = meso_lab.run(HOST, ["systemctl", "show", "-p",
                                "CPUQuotaPerSecUSec,MemoryMax,MemorySwapMax,TasksMax,"
                                "RuntimeMaxUSec,DynamicUser,NoNewPrivileges,PrivateTmp,"
                                "ProtectSystem", unit]).stdout  # fmt: skip
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props == {
        "CPUQuotaPerSecUSec": "250ms", "MemoryMax": str(64 << 20), "MemorySwapMax": "0",
        "TasksMax": "32", "RuntimeMaxUSec": "2min", "DynamicUser": "yes",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "ProtectSystem": "strict",  # DynamicUser=yes makes ProtectSystem=full strict
    }  # fmt: skip
    stopped = plane.stop(HOST, unit)
    assert stopped["state"] == "killed"
    assert plane.status(HOST, unit)["state"] == "unknown"


def test_a_task_past_its_runtime_is_timed_out(plane):
    unit = fresh_unit()
    plane.launch(HOST, {"unit": unit, "argv": ["sleep", "30"], "runtime_sec": 1})
    status = wait_state(plane, HOST, unit)
    assert (status["state"], status["reason"]) == ("failed", "timed out")


def runs_of(meso_lab, host: str, unit: str) -> int:
    """How many times the unit's task said "ran" (its journal; tasks run as a DynamicUser and
    leave nothing else behind)."""
    journal = meso_lab.run(host, ["journalctl", f"_SYSTEMD_UNIT={unit}.service", "--output=cat"])
    return journal.stdout.splitlines().count("ran")


def test_a_second_launch_of_the_same_unit_does_not_run_twice(plane, meso_lab):
    unit = fresh_unit()
    request = {"unit": unit, "argv": ["sh", "-c", "echo ran"]}
    assert plane.launch(HOST, request)["existed"] is False
    wait_state(plane, HOST, unit)
    assert plane.launch(HOST, request)["existed"] is True
    time.sleep(0.5)  # a second run, if there were one, would have said so by now
    assert runs_of(meso_lab, HOST, unit) == 1


NASTY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.one_of(NASTY, st.sampled_from(
    [";", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "'", '"', "\n", "a b", "ünï©ødé", "--", "-x",
     "$HOME", "*", "\\"])), min_size=1, max_size=6))  # fmt: skip
def test_argv_arrives_byte_for_byte_and_nothing_is_injected(plane, meso_lab, values):
    unit = fresh_unit("argv")
    echo = (
        "import json, os, sys; "
        "sys.stdout.write(json.dumps([sys.argv[1:], os.environ['VALUE']]) + '\\n')"
    )
    plane.launch(HOST, {"unit": unit, "argv": ["python3", "-c", echo, *values],
                        "env": {"VALUE": "".join(values)}})  # fmt: skip
    wait_state(plane, HOST, unit)
    lines = b"".join(plane.logs(HOST, unit)).decode().splitlines()
    assert json.loads(next(line for line in lines if line.startswith("[["))) == [
        values, "".join(values),
    ]  # fmt: skip
    plane.forget(HOST, unit)
    assert meso_lab.run(HOST, ["ls", "/tmp/pwned"]).exit_status != 0


def test_requests_the_node_refuses_name_the_field(plane):
    with pytest.raises(NodeRefused, match="argv: must be a non-empty list"):
        plane.host(HOST).request("launch", unit=fresh_unit(), argv="rm -rf /")
    with pytest.raises(NodeRefused, match="is not a meso unit name"):
        plane.host(HOST).request("stop", unit="ssh")


def test_a_changed_host_key_is_refused_and_nothing_launched(meso_lab, tmp_path):
    nodes = {n.name: n for n in load_inventory(str(meso_lab.inventory)).nodes}
    other_key = meso_lab.run(f"{LAB}-2", ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
    known = tmp_path / "known_hosts"
    keytype, blob = other_key.split()[:2]
    known.write_text(f"{nodes[HOST].address} {keytype} {blob}\n")
    impostor = ExecutionPlane([replace(nodes[HOST], known_hosts=str(known))], timeout=5)
    unit = fresh_unit()
    with pytest.raises(Unreachable, match="host key changed"):
        impostor.launch(HOST, {"unit": unit, "argv": ["true"]})
    assert impostor.reports() == {HOST: None}
    assert meso_lab.run(HOST, ["systemctl", "status", unit]).exit_status == 4  # no such unit


def test_a_host_cut_off_mid_launch_is_unreachable_then_reconciled_and_never_runs_twice(
    plane, meso_lab
):
    host = f"{LAB}-2"
    unit = fresh_unit("cut")
    request = {"unit": unit, "argv": ["sh", "-c", "echo ran; sleep 30"]}
    boots = {h: r.boot for h, r in plane.reports().items() if r}
    plane.host(host).request("status", unit=unit)  # warm: the launch is one request away
    cutter = threading.Timer(0.002, meso_lab.cut, args=(host,))
    cutter.start()
    try:
        time.sleep(0.01)  # the host is off the network when the launch goes out
        with pytest.raises(Unreachable):  # it may or may not have reached the host
            plane.launch(host, request, timeout=3)
        assert plane.reconcile({unit: host}, boots).states[unit].state == "unreachable"
    finally:
        cutter.join()
        meso_lab.heal(host)
    state = plane.reconcile({unit: host}, boots).states[unit].state
    assert state in ("running", "missing")
    if state == "missing":  # the launch never reached the host: launching it again is safe
        assert plane.launch(host, request)["existed"] is False
    assert plane.launch(host, request)["existed"] is True
    time.sleep(0.5)
    assert runs_of(meso_lab, host, unit) == 1
    plane.stop(host, unit)


def test_a_launch_delivered_after_its_sender_gave_up_on_it_starts_nothing(plane, meso_lab):
    # what a cut connection does when the network heals: it delivers the request late, after
    # the controller decided it never came (and may have launched the attempt again)
    host = f"{LAB}-2"
    unit = fresh_unit("late")
    plane.sample(host)  # the host's clock is known: changing requests carry their expiry
    signal_node_commands(meso_lab, host, "STOP")  # the node command reads nothing for now
    try:
        with pytest.raises(Unreachable):
            plane.launch(host, {"unit": unit, "argv": ["sh", "-c", "echo ran"]}, timeout=1)
        time.sleep(1 + EXPIRY_MARGIN + 0.5)  # past the launch's expiry on the host
    finally:
        signal_node_commands(meso_lab, host, "CONT")  # now it reads the launch, late
    time.sleep(2)
    assert runs_of(meso_lab, host, unit) == 0
    assert plane.status(host, unit)["state"] == "unknown"
    assert plane.launch(host, {"unit": unit, "argv": ["sh", "-c", "echo ran"]})["existed"] is False
    wait_state(plane, host, unit)
    assert runs_of(meso_lab, host, unit) == 1


def test_reconcile_reports_units_nobody_expects_and_gone_tasks_after_a_restart(plane, meso_lab):
    host = f"{LAB}-3"
    mine, stray = fresh_unit(), fresh_unit("stray")
    plane.launch(host, {"unit": mine, "argv": ["sleep", "300"]})
    meso_lab.run(host, ["systemd-run", "--unit", stray, "sleep", "300"])
    boots = {h: r.boot for h, r in plane.reports().items() if r}
    result = plane.reconcile({mine: host}, boots)
    assert result.states[mine].state == "running"
    assert (host, stray) in result.unknown
    meso_lab.restart(host)
    after = plane.reconcile({mine: host}, boots)
    assert after.states[mine].state == "gone"
    assert after.boots[host] != boots[host]


def test_two_controllers_racing_for_a_host_never_exceed_its_capacity(meso_lab):
    """Two planes, each with its own connection, launch 1-CPU tasks at a 2-CPU host at once."""
    nodes = load_inventory(str(meso_lab.inventory)).nodes
    host = f"{LAB}-3"
    planes = [ExecutionPlane(nodes, timeout=15) for _ in range(2)]
    capacity = {"cpus": 2000, "mem": 4 << 30}
    results: list[dict] = []

    def controller(n: int) -> None:
        for i in range(4):
            unit = unit_name(f"race{n}", "task", i, 1)
            try:
                results.append(planes[n].host(host).request(
                    "launch", unit=unit, argv=["sleep", "60"], cpus=1000, mem=64 << 20,
                    capacity=capacity))  # fmt: skip
            except NodeRefused as exc:
                results.append({"refused": str(exc)})

    threads = [threading.Thread(target=controller, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    launched = [r for r in results if "refused" not in r]
    assert len(launched) == 2, results
    assert all("admission: cpus would exceed" in r["refused"] for r in results if "refused" in r)
    running = [u for u in planes[0].reports()[host].units.values() if u["state"] == "running"]
    assert sum(u["millicpus"] for u in running) <= 2000
    for r in launched:
        planes[0].stop(host, r["unit"].removesuffix(".service"))
    for p in planes:
        p.close()


def test_logs_follow_streams_lines_as_they_come(plane):
    unit = fresh_unit("follow")
    # the long sleep keeps the unit running however slow the machine: lines must come while it runs
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done; sleep 600"
    plane.launch(HOST, {"unit": unit, "argv": ["sh", "-c", script]})
    seen = b""
    stream = plane.logs(HOST, unit, follow=True)
    started = time.monotonic()
    for chunk in stream:
        seen += chunk
        if b"line3" in seen:
            break
        assert time.monotonic() - started < 120, seen
    stream.close()
    assert seen.index(b"line1") < seen.index(b"line2") < seen.index(b"line3")
    assert plane.stop(HOST, unit)["state"] == "killed"


def test_stop_waits_the_grace_period_then_kills(plane):
    unit = fresh_unit("grace")
    stubborn = "trap 'echo got TERM' TERM; while true; do sleep 0.1; done"
    plane.launch(HOST, {"unit": unit, "argv": ["sh", "-c", stubborn], "grace_sec": 1})
    time.sleep(0.5)
    started = time.monotonic()
    assert plane.stop(HOST, unit)["state"] == "killed"
    assert 0.9 < time.monotonic() - started < 10
    assert plane.status(HOST, unit)["state"] == "unknown"
