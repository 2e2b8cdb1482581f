"""On real hosts, a running controller's samples leave out the units it already holds (the
request carries their digest, the node answers `same_units`): a task that ends is seen through
that path, and a node command restarted or a host rebooted while the controller holds a digest
is never taken for unchanged: the controller sees the host's real units."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.events import EventBus
from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.loop import Controller
from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.transport import NodeConnection
from meso_agentless.inventory import load_inventory
from meso_agentless.spec import Job
from meso_agentless.state.postgres import open_store
from tests.conftest import LAB
from tests.lab.common import signal_node_commands, units

pytestmark = pytest.mark.lab

HOST = f"{LAB}-2"
STRAY = "meso-stray_t_0_1"  # a unit started on HOST behind the controller's back


class LoggedPlane(ExecutionPlane):
    """The real plane, noting of each host's samples whether they brought the units whole."""

    def __init__(self, nodes) -> None:
        super().__init__(nodes)
        self.answers: dict[str, list[str]] = defaultdict(list)

    def _noted(self, host: str, answer: object) -> None:
        if isinstance(answer, dict):
            self.answers[host].append("same" if answer.get("same_units") else "whole")

    def sample_round(self, fields, timeout=None):
        answers = super().sample_round(fields, timeout)
        for host, answer in answers.items():
            self._noted(host, answer)
        return answers

    def sample(self, host, timeout=None, **fields):
        answer = super().sample(host, timeout, **fields)
        self._noted(host, answer)
        return answer


@contextmanager
def controller(meso_lab, tmp_path) -> Iterator[tuple[Controller, LoggedPlane]]:
    """A controller as `meso controller` runs it (the fleet's rounds every second), in this
    process so its plane can be watched; its cycles are the caller's (`cycle_until`)."""
    inventory = load_inventory(str(meso_lab.inventory))
    clock = SystemClock()
    plane = LoggedPlane(inventory.nodes)
    fleet = Fleet(plane, clock)
    store = open_store(str(tmp_path / "state.db"), clock=clock.time)
    ctl = Controller(store, inventory, plane, fleet, clock, EventBus(clock.time))
    fleet.start()
    try:
        yield ctl, plane
    finally:
        for row in ctl.store.tasks():  # nothing left running on the lab
            if row.state.value in ("running", "staging"):
                with suppress(MesoError):  # best effort: the next test's hosts
                    plane.stop(row.host, row.unit, timeout=30)
        ctl.close()
        store.close()


def job(name: str, kind: str, argv: list[str]) -> Job:
    return Job.model_validate({
        "job": name, "type": kind,
        "tasks": [{"name": "t", "count": 1, "command": argv,
                   "resources": {"cpus": 0.1, "mem": "16MiB"},
                   "constraints": [{"attribute": "hostname", "op": "eq", "value": HOST}]}],
    })  # fmt: skip


def cycle_until(ctl: Controller, done, timeout: float = 60.0):
    """Controller cycles, a few a second, until done() says something true."""
    deadline = time.monotonic() + timeout
    while not (value := done()):
        assert time.monotonic() < deadline, "timed out"
        ctl.tick()
        time.sleep(0.3)
    return value


def attempts(ctl: Controller, name: str) -> list[tuple[int, str]]:
    return [(r.attempt, r.state.value) for r in ctl.store.tasks(name)]


def held_by_fleet(ctl: Controller) -> dict[str, str]:
    """HOST's meso services as the controller holds them: unit -> state."""
    return {u: s["state"] for u, s in ctl.fleet.view(HOST).units.items()}


def on_the_host(meso_lab) -> dict[str, str]:
    """HOST's meso services as its systemd says now (`list`, which asks it every time)."""
    node = next(n for n in load_inventory(str(meso_lab.inventory)).nodes if n.name == HOST)
    connection = NodeConnection(node, timeout=15)
    try:
        listed = connection.request("list")["units"]
    finally:
        connection.close()
    return {u["unit"].removesuffix(".service"): u["state"] for u in listed}


def test_a_task_that_ends_is_seen_by_a_controller_that_holds_its_hosts_units(meso_lab, tmp_path):
    with controller(meso_lab, tmp_path) as (ctl, plane):
        ctl.submit(job("ends", "batch", ["sleep", "6"]))
        cycle_until(ctl, lambda: attempts(ctl, "ends") == [(1, "running")])
        since = len(plane.answers[HOST])
        cycle_until(ctl, lambda: attempts(ctl, "ends") == [(1, "finished")])
        seen = plane.answers[HOST][since:]
    # while it ran, the host's samples left its units out (the controller held them), and
    # the one that told of its end brought them whole
    assert "same" in seen[:-1], seen
    assert seen[-1] == "whole", seen
    assert [r.exit_code for r in ctl.store.tasks("ends")] == [0]


def test_a_restarted_node_command_or_a_rebooted_host_is_never_taken_for_unchanged(
    meso_lab, tmp_path
):
    with controller(meso_lab, tmp_path) as (ctl, plane):
        ctl.submit(job("held", "service", ["sleep", "infinity"]))
        cycle_until(ctl, lambda: attempts(ctl, "held") == [(1, "running")])
        first = ctl.store.tasks("held")[0].unit
        since = len(plane.answers[HOST])
        cycle_until(ctl, lambda: plane.answers[HOST][since:].count("same") >= 2)

        # the node command dies while a unit is started behind its back: the controller's next
        # sample (a new connection, a new node command) carries the digest it holds
        signal_node_commands(meso_lab, HOST, "STOP")
        meso_lab.run(HOST, ["systemd-run", f"--unit={STRAY}", "sleep", "600"])
        signal_node_commands(meso_lab, HOST, "KILL")
        cycle_until(ctl, lambda: held_by_fleet(ctl).get(STRAY) == "running")
        assert held_by_fleet(ctl)[first] == "running"
        assert cycle_until(ctl, lambda: STRAY in ctl.unclaimed.get(HOST, []))

        # restarted with nothing changed: what it says is what the host runs
        cycle_until(ctl, lambda: held_by_fleet(ctl) == on_the_host(meso_lab))
        since = len(plane.answers[HOST])
        signal_node_commands(meso_lab, HOST, "KILL")
        cycle_until(ctl, lambda: len(plane.answers[HOST]) > since + 2)
        assert held_by_fleet(ctl) == on_the_host(meso_lab)

        # the host reboots: its units are gone, and the controller sees that in the sample
        # that tells of the new boot
        boot = ctl.fleet.view(HOST).boot
        meso_lab.restart(HOST)
        cycle_until(ctl, lambda: ctl.fleet.view(HOST).boot not in (None, boot), timeout=120)
        assert held_by_fleet(ctl).get(first) != "running"
        assert held_by_fleet(ctl).get(STRAY) != "running"
        cycle_until(ctl, lambda: dict(attempts(ctl, "held")).get(1) != "running")
        # then a new attempt runs, and only one: no slot runs twice
        cycle_until(ctl, lambda: (2, "running") in attempts(ctl, "held"), timeout=120)
        running = [u for u in units(meso_lab) if u.startswith("meso-held_")]
        assert len(running) == 1, running
