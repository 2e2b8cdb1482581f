"""Samples from a warm node command, which keeps its unit listing while the meso units stay as
they were: whatever changes behind its back (a unit started, stopped or ending by itself, a
service restarted, the host rebooted) is in the next sample, which always equals what systemd
says (`list`, which asks it every time). And a pipelined round over every host."""

import threading
import time

import pytest

from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.sampling import sample_all
from meso_agentless.hosts.transport import NodeConnection, Unreachable, ask_each
from meso_agentless.inventory import load_inventory
from tests.conftest import LAB
from tests.lab.common import signal_node_commands

pytestmark = pytest.mark.lab

HOST = f"{LAB}-3"
_counter = iter(range(1, 10**9))


@pytest.fixture
def nodes(meso_lab):
    return {n.name: n for n in load_inventory(str(meso_lab.inventory)).nodes}


@pytest.fixture
def conn(nodes):
    connection = NodeConnection(nodes[HOST], timeout=15)
    yield connection
    connection.close()


def fresh_unit() -> str:
    return unit_name("smp", "task", next(_counter), 1)


def states(units: list[dict]) -> dict[str, tuple]:
    return {u["unit"]: (u["state"], u.get("restarts"), u.get("exit_code")) for u in units}


def assert_fresh(conn: NodeConnection) -> dict[str, tuple]:
    """Two samples (the second from what the first kept, if nothing changed) and systemd's own
    answer agree; the units' states."""
    first = states(conn.request("sample")["units"])
    second = states(conn.request("sample")["units"])
    listed = states(conn.request("list")["units"])
    assert first == second == listed
    return second


def systemd_state(meso_lab, unit: str) -> str:
    shown = meso_lab.run(HOST, ["systemctl", "show", "-p", "ActiveState,SubState", unit])
    return shown.stdout.replace("\n", " ").strip()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_units_started_and_stopped_behind_the_nodes_back_are_in_the_next_sample(meso_lab, conn):
    before = assert_fresh(conn)
    unit = fresh_unit()
    meso_lab.run(HOST, ["systemd-run", f"--unit={unit}", "--property=RemainAfterExit=yes",
                        "sleep", "600"])  # fmt: skip
    assert assert_fresh(conn)[f"{unit}.service"][0] == "running"
    meso_lab.run(HOST, ["systemctl", "kill", "--signal=KILL", f"{unit}.service"])
    wait_for(lambda: "ActiveState=failed" in systemd_state(meso_lab, unit), "not failed")
    assert assert_fresh(conn)[f"{unit}.service"][0] == "killed"
    meso_lab.run(HOST, ["systemctl", "reset-failed", f"{unit}.service"])
    assert assert_fresh(conn) == before


def test_a_task_that_ends_by_itself_is_never_reported_running_after(meso_lab, conn):
    unit = fresh_unit()
    conn.request("launch", unit=unit, argv=["sh", "-c", "sleep 1; exit 3"])
    assert assert_fresh(conn)[f"{unit}.service"][0] == "running"
    wait_for(lambda: "SubState=running" not in systemd_state(meso_lab, unit), "still running")
    # once systemd says it ended, so does the very next sample
    assert assert_fresh(conn)[f"{unit}.service"] == ("failed", 0, 3)
    conn.request("forget", unit=unit)
    assert f"{unit}.service" not in assert_fresh(conn)


def test_a_restarted_service_is_seen_restarted(meso_lab, conn):
    unit = fresh_unit()
    conn.request("launch", unit=unit, argv=["sleep", "600"], restart="always")
    assert assert_fresh(conn)[f"{unit}.service"][:2] == ("running", 0)
    meso_lab.run(HOST, ["systemctl", "kill", "--signal=KILL", "--kill-whom=main",
                        f"{unit}.service"])  # fmt: skip
    restarts = ["systemctl", "show", "-p", "NRestarts", unit]
    wait_for(lambda: "NRestarts=1" in meso_lab.run(HOST, restarts).stdout, "not restarted")
    wait_for(lambda: "SubState=running" in systemd_state(meso_lab, unit), "not running again")
    assert assert_fresh(conn)[f"{unit}.service"][:2] == ("running", 1)
    conn.request("stop", unit=unit)


def test_a_rebooted_host_is_sampled_anew(meso_lab, conn):
    unit = fresh_unit()
    conn.request("launch", unit=unit, argv=["sleep", "600"])
    boot = conn.request("sample")["boot"]
    assert f"{unit}.service" in assert_fresh(conn)
    meso_lab.restart(HOST)
    deadline = time.monotonic() + 60
    while True:
        try:
            facts = conn.request("sample")
            break
        except Unreachable:
            assert time.monotonic() < deadline, "the host did not come back"
            time.sleep(0.5)
    assert facts["boot"] != boot
    assert f"{unit}.service" not in assert_fresh(conn)


def test_a_pipelined_round_answers_for_every_host_and_names_the_cut_one(meso_lab, nodes):
    plane = ExecutionPlane(list(nodes.values()), timeout=3)
    try:
        answers = plane.sample_round({name: {} for name in nodes})
        assert {n: a["hostname"] for n, a in answers.items()} == {n: n for n in nodes}
        with meso_lab.cut_off(f"{LAB}-2"):
            answers = plane.sample_round({name: {} for name in nodes})
        assert isinstance(answers.pop(f"{LAB}-2"), Unreachable)
        assert {n: a["hostname"] for n, a in answers.items()} == {n: n for n in answers}
        # and the host is back in the next round, on a new connection
        assert plane.sample_round({f"{LAB}-2": {}})[f"{LAB}-2"]["hostname"] == f"{LAB}-2"
    finally:
        plane.close()
    samples, failed = sample_all(list(nodes.values()))  # new connections, all at once
    assert (sorted(samples), failed) == (sorted(nodes), {})
    with pytest.raises(ValueError, match="one call per connection"):
        connection = NodeConnection(nodes[HOST])
        ask_each([(connection, "sample", {}), (connection, "list", {})])


def test_a_round_does_not_wait_for_a_host_busy_with_a_long_stop(meso_lab, nodes):
    plane = ExecutionPlane(list(nodes.values()), timeout=3)
    unit = fresh_unit()
    try:
        every = {name: {} for name in nodes}
        assert all(isinstance(a, dict) for a in plane.sample_round(every).values())
        plane.launch(HOST, {"unit": unit, "argv": ["sh", "-c", "trap '' TERM; sleep 600"],
                            "grace_sec": 8})  # fmt: skip
        stopping = threading.Thread(target=plane.stop, args=(HOST, unit))  # holds its connection
        stopping.start()
        wait_for(lambda: "ActiveState=deactivating" in systemd_state(meso_lab, unit), "stopping")
        answers = plane.sample_round(every, timeout=1)
        assert stopping.is_alive()  # the round did not wait for the stop (up to 8 s)
        assert "busy with another request" in str(answers.pop(HOST))
        assert {n: a["hostname"] for n, a in answers.items()} == {n: n for n in answers}
        stopping.join()
        assert plane.sample_round({HOST: {}})[HOST]["hostname"] == HOST  # and back after it
    finally:
        plane.close()


def test_a_host_late_for_a_round_keeps_its_connection_and_its_next_answer_is_its_own(
    meso_lab, nodes
):
    plane = ExecutionPlane(list(nodes.values()), timeout=10)
    # the node commands on HOST stopped (SIGSTOP) and continued: a host too slow for a round
    try:
        every = {name: {} for name in nodes}
        assert all(isinstance(a, dict) for a in plane.sample_round(every).values())
        transport = plane.host(HOST)._client.get_transport()  # type: ignore[union-attr]
        signal_node_commands(meso_lab, HOST, "STOP")
        answers = plane.sample_round(every, timeout=1)
        assert "still awaited" in str(answers.pop(HOST))
        assert {n: a["hostname"] for n, a in answers.items()} == {n: n for n in answers}
        signal_node_commands(meso_lab, HOST, "CONT")
        # the round's sample answer comes late and is dropped: a status gets a status
        status = plane.host(HOST).request("status", unit=fresh_unit())
        assert status["state"] == "unknown" and "hostname" not in status
        assert plane.sample(HOST)["hostname"] == HOST
        assert plane.host(HOST)._client.get_transport() is transport  # no new connection
    finally:
        signal_node_commands(meso_lab, HOST, "CONT")


def test_a_round_started_early_is_taken_once_by_the_next_round_with_no_fields(meso_lab, nodes):
    """ExecutionPlane.start (what a cold `meso` command does while it imports): its answers
    are the next round's; a cut host is unreachable within its deadline; later rounds ask."""
    cut = f"{LAB}-2"
    plane = ExecutionPlane(list(nodes.values()), timeout=3)
    try:
        with meso_lab.cut_off(cut):
            plane.start(timeout=2)
            answers = plane.sample_round({name: {} for name in nodes})
        assert isinstance(answers.pop(cut), Unreachable)
        assert {n: a["hostname"] for n, a in answers.items()} == {n: n for n in answers}
        again = plane.sample_round({name: {} for name in nodes})  # asked anew: the host is back
        assert {n: a["hostname"] for n, a in again.items()} == {n: n for n in nodes}
        plane.start(timeout=2)  # a round with fields of its own does not take it
        fields = {name: {"after": {}} for name in nodes}
        assert sorted(plane.sample_round(fields)) == sorted(nodes)
        assert all(isinstance(a, dict) for a in plane.sample_round(fields).values())
    finally:
        plane.close()
