"""The long-running controller samples in rounds (Fleet.start): one sampler thread asks every
answering host every interval, a host that fails leaves the round and is asked again on its
own with a backoff until it answers, then rejoins. On simulated hosts (SimPlane, pipelined
rounds) and on the fake plane (each host on its own, a few at once)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import MAX_RETRYING, Fleet
from meso_agentless.core.health import HostState
from meso_agentless.core.rounds import MAX_BACKOFF, Retries, backoff, round_deadline
from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import MAX_PARALLEL, Unreachable
from meso_agentless.testing.fakes import FakeHost, FakePlane
from meso_agentless.testing.simfleet import SimPlane, host_names

FLEET_THREADS = ("sampler", "retries", "health", "silence", "retry")


def until(predicate, timeout: float = 20.0):
    """The first true value of predicate(), asked every few ms; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    return value


def fleet_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(FLEET_THREADS)]


class HangingPlane(SimPlane):
    """Simulated hosts, some of which hang: a request to one is answered only once it is
    released, and fails at its deadline (a cut host on a warm connection). Every round and
    every lone request is logged."""

    def __init__(self, count: int) -> None:
        fresh = SimPlane.of(count)
        super().__init__(fresh.by_name, fresh.clock)
        self.hung: set[str] = set()
        self.released = threading.Event()
        self.rounds: list[list[str]] = []  # the hosts of each round, in order
        self.deadlines: list[float | None] = []  # each round's
        self.alone: list[str] = []  # hosts asked on their own, in order
        self.trying = threading.Event()  # a hung host is being asked on its own
        self.threads: list[set[int]] = []  # the threads alive during each round

    def _wait(self, timeout: float | None) -> None:
        if not self.released.wait(timeout):
            raise Unreachable(f"no answer within {timeout} s")

    def sample_round(self, fields, timeout=None) -> dict[str, dict | MesoError]:
        self.rounds.append(list(fields))
        self.deadlines.append(timeout)
        self.threads.append({t.ident for t in threading.enumerate()})  # type: ignore[misc]
        answers = super().sample_round({h: f for h, f in fields.items() if h not in self.hung})
        if hung := [h for h in fields if h in self.hung]:
            try:
                self._wait(timeout)  # one deadline for the round
                answers.update(super().sample_round({h: fields[h] for h in hung}))
            except Unreachable as exc:
                answers.update({h: exc for h in hung})
        return answers

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        if threading.current_thread().name.startswith("retry"):
            self.alone.append(host)
            if host in self.hung:
                self.trying.set()
                self._wait(timeout)
        return super().sample(host, timeout, **fields)

    def release(self, host: str) -> None:
        self.hung.discard(host)
        self.released.set()


@pytest.fixture
def started():
    """start() a fleet on a plane; stopped afterwards, whatever happens."""
    fleets: list[Fleet] = []

    def start(plane, fleet: Fleet | None = None, **options) -> Fleet:
        if fleet is None:
            fleet = Fleet(plane, SystemClock(), **{"interval": 0.02, "timeout": 1.0, **options})
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield start
    for fleet in fleets:
        fleet.stop()


def test_backoff_grows_with_failures_up_to_its_most():
    assert [backoff(0.5, n) for n in range(6)] == [0.5, 0.5, 1.0, 1.5, 2.0, MAX_BACKOFF]
    assert backoff(1.0, 10, most=4.0) == 4.0


def test_a_round_waits_short_enough_that_a_silent_host_never_makes_the_others_look_silent():
    assert round_deadline(3.0, 1.0, 2.0) == 0.5  # asked again after 1 s, recorded by 1.5 s < 2
    assert round_deadline(3.0, 0.5, 2.0) == 0.75
    assert round_deadline(0.2, 1.0, 5.0) == 0.2  # never more than a host's own deadline
    assert round_deadline(3.0, 1.0, 1.0) == 0.1  # a floor, whatever the settings
    assert round_deadline(3.0, 1.0, 2.0, connecting=True) == 3.0  # nobody looks silent yet


def test_a_failing_host_leaves_the_round_is_retried_after_its_backoff_and_rejoins():
    retries = Retries(interval=1.0, most=2.5)
    hosts = ["a", "b", "c"]
    assert retries.in_round(hosts) == hosts
    assert retries.failed("b", began=100.0) is True  # it just left the round
    assert retries.in_round(hosts) == ["a", "c"]
    assert retries.take_due(100.9) == [] and retries.next_due() == 101.0
    assert retries.take_due(101.0) == ["b"]
    assert retries.take_due(200.0) == [] and retries.next_due() is None  # being tried
    assert retries.failed("b", began=101.0) is False  # out already
    assert (retries.failures("b"), retries.next_due()) == (2, 103.0)
    assert retries.take_due(103.0) == ["b"]
    retries.failed("b", began=103.0)
    assert (retries.failures("b"), retries.next_due()) == (3, 105.5)  # at most 2.5 s
    retries.failed("a", began=104.0)
    assert retries.take_due(106.0) == ["a", "b"]  # the earliest due first
    assert retries.answered("b") is True and retries.answered("b") is False
    assert retries.in_round(hosts) == ["b", "c"] and "a" in retries and len(retries) == 1
    retries.late("c", now=107.0)  # missed its round: asked alone at once, no failure counted
    assert (retries.in_round(hosts), retries.failures("c")) == (["b"], 0)
    assert retries.take_due(107.0) == ["c"]
    assert retries.failed("c", began=107.0) is False and retries.next_due() == 108.0


def test_the_sampler_threads_do_not_grow_with_the_hosts(started):
    counts = {}
    for hosts in (10, 1000):
        plane = HangingPlane(hosts)
        before = {t.ident for t in threading.enumerate()}
        fleet = started(plane)
        for _ in range(3):
            fleet.wait_round(timeout=20)
        assert all(v.state == HostState.UP for v in fleet.views().values())
        counts[hosts] = max(len(alive - before) for alive in plane.threads)
        fleet.stop()
        assert not fleet_threads()
    assert counts[10] == counts[1000] == 4  # sampler, retries, health checks, silence


def test_a_hung_host_costs_one_round_its_deadline_then_is_asked_alone_until_it_answers(started):
    plane = HangingPlane(5)
    hung, other = "h0003", "h0001"
    plane.hung.add(hung)
    fleet = started(plane)
    until(lambda: fleet.view(hung).error)
    until(plane.trying.is_set)  # asked on its own, and hanging there
    done = fleet.view(other).asked
    for _ in range(3):  # the others keep being sampled meanwhile, a round every interval
        fleet.wait_round(timeout=20)
    assert fleet.view(other).asked > done and plane.trying.is_set()
    assert sum(hung in r for r in plane.rounds) == 1  # its deadline once, then out
    assert all(len(r) == 4 for r in plane.rounds[1:])
    # the first round waits a host's whole deadline (connecting), the others too short for a
    # host that does not answer to make the others look silent
    assert plane.deadlines[0] == fleet.timeout
    assert set(plane.deadlines[1:]) == {round_deadline(1.0, 0.02, fleet.suspect_after)}
    assert set(plane.alone) == {hung}  # only the failing host is asked on its own

    plane.release(hung)
    until(lambda: fleet.view(hung).state == HostState.UP)
    until(lambda: hung in plane.rounds[-1])  # back in the round
    alone = len(plane.alone)
    fleet.wait_round(timeout=20)
    fleet.wait_round(timeout=20)
    assert len(plane.alone) == alone and fleet.view(hung).error is None


def test_a_host_that_failed_before_start_holds_up_no_round(started):
    # an embedded command: one round (refresh) before the fleet starts, a host cut off
    plane = HangingPlane(5)
    hung = "h0003"
    plane.hung.add(hung)
    fleet = Fleet(plane, SystemClock(), interval=0.02, timeout=1.0)
    fleet.refresh()
    assert fleet.view(hung).error and len(plane.rounds) == 1
    fleet = started(plane, fleet=fleet)
    until(plane.trying.is_set)  # asked on its own at once
    until(lambda: len(plane.rounds) >= 3)
    assert all(hung not in r for r in plane.rounds[1:])  # in no round of the started fleet
    assert plane.deadlines[1] < fleet.timeout  # nor does the first wait its whole deadline


def test_a_cut_host_on_a_plane_without_rounds_is_asked_alone_and_rejoins(started):
    plane = FakePlane({n: FakeHost(n) for n in host_names(40)})
    plane.cut("h0007")
    before = threading.active_count()
    peak = []
    sample = plane.sample

    def counted(host, timeout=None, **fields):
        peak.append(threading.active_count())
        return sample(host, timeout, **fields)

    plane.sample = counted  # type: ignore[method-assign]
    fleet = started(plane)
    until(lambda: fleet.view("h0007").error)
    fleet.wait_round(timeout=20)
    assert fleet.view("h0007").state != HostState.UP
    assert fleet.view("h0008").state == HostState.UP
    plane.heal("h0007")
    until(lambda: fleet.view("h0007").state == HostState.UP)
    assert max(peak) - before <= 4 + MAX_PARALLEL + MAX_RETRYING  # a few, not one a host


def test_stop_ends_every_thread_even_with_a_host_hung(started):
    plane = HangingPlane(3)
    plane.hung.add("h0002")
    fleet = started(plane, timeout=0.5)
    until(plane.trying.is_set)
    assert {"sampler", "retries", "health", "silence"} <= set(fleet_threads())
    fleet.stop()
    assert not fleet_threads()
    asked = (len(plane.rounds), len(plane.alone))
    fleet.wait_round(timeout=0.1)  # nobody samples any more
    assert (len(plane.rounds), len(plane.alone)) == asked


def test_a_refused_host_is_retried_with_a_growing_backoff(started):
    plane = FakePlane({n: FakeHost(n) for n in host_names(2)})
    refused = []
    sample = plane.sample

    def refusing(host, timeout=None, **fields):
        if host == "h0002":
            refused.append(time.monotonic())
            raise Unreachable("h0002: connection refused")
        return sample(host, timeout, **fields)

    plane.sample = refusing  # type: ignore[method-assign]
    fleet = started(plane, interval=0.05)
    until(lambda: len(refused) >= 5)
    fleet.stop()
    alone = refused[1:]  # after the round, asked on its own: at once, then after its backoff
    gaps = [b - a for a, b in itertools.pairwise(alone)][:3]
    # each try waits its backoff after the one before began: 1, 2, then 3 intervals
    assert all(gap >= 0.9 * backoff(0.05, n) for n, gap in enumerate(gaps, start=1))


class FailingOncePlane(SimPlane):
    """Simulated hosts whose second round raises what a bug or a transport error would."""

    def __init__(self, count: int) -> None:
        fresh = SimPlane.of(count)
        super().__init__(fresh.by_name, fresh.clock)
        self.rounds = 0

    def sample_round(self, fields, timeout=None) -> dict[str, dict | MesoError]:
        self.rounds += 1
        if self.rounds == 2:
            raise EOFError()
        return super().sample_round(fields, timeout)


def test_a_round_that_raises_is_logged_and_the_sampler_goes_on(caplog):
    plane = FailingOncePlane(3)
    fleet = Fleet(plane, SystemClock(), interval=0.05)
    fleet.start()
    try:
        until(lambda: plane.rounds >= 5)
        assert "sampler" in fleet_threads()
    finally:
        fleet.stop()
    assert "a sample round failed" in caplog.text
